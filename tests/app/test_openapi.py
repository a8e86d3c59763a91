"""The OpenAPI document: every route answers its own documented example, as Swagger UI's
"Try it out" sends it to the service `make serve` starts (the committed bundles), and
every request field carries a description.

The routes come from the document itself, so a new route is covered without touching
this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import make_settings, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SPEC = create_app(Settings()).openapi()  # the document alone: no bundles are loaded
OPERATIONS = [(method, path) for path, ops in SPEC["paths"].items() for method in ops]
BOOK = "timemachine"  # an example naming the book's corpus needs it on this machine


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service on the committed bundles, as a user trying the examples meets it."""
    settings = make_settings(ROOT / "checkpoints", cache_dir=tmp_path_factory.mktemp("cache"))
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def body_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    ref = schema.get("$ref")  # routes that also take uploads inline their schema
    return SPEC["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema  # type: ignore[no-any-return]


def example_request(path: str, operation: dict[str, Any]) -> tuple[str, dict, dict | None]:
    """(url, query, JSON body) filled in from the document's examples, then defaults."""
    query: dict[str, Any] = {}
    for param in operation.get("parameters", []):
        schema = param["schema"]
        if "examples" in schema:
            value = schema["examples"][0]
        elif "default" in schema:
            value = schema["default"]
        else:
            assert not param.get("required"), f"{path}: {param['name']} has no example"
            continue
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", str(value))
        else:
            query[param["name"]] = value
    schema = body_schema(operation)
    body = None
    if schema is not None:
        body = {
            name: field["examples"][0]
            for name, field in schema["properties"].items()
            if "examples" in field
        }
    return path, query, body


def test_every_route_is_covered() -> None:
    paths = {path for _, path in OPERATIONS}
    assert {"/health", "/v1/generate", "/v1/completions", "/v1/detokenize", "/metrics"} <= paths
    assert len(OPERATIONS) >= 15
    completions = SPEC["paths"]["/v1/completions"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in completions


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_route_answers_its_documented_example(
    served: TestClient, request: pytest.FixtureRequest, method: str, path: str
) -> None:
    operation = SPEC["paths"][path][method]
    url, query, body = example_request(path, operation)
    if BOOK in (query.get("corpus"), (body or {}).get("corpus")):
        request.getfixturevalue("book_path")  # skips (or fails in CI) without the book
    response = served.request(method.upper(), url, params=query, json=body)
    assert response.status_code == 200, response.text
    documented = operation["responses"]["200"]["content"]
    assert response.headers["content-type"].split(";")[0] in documented


@pytest.mark.parametrize(
    "path", [p for m, p in OPERATIONS if body_schema(SPEC["paths"][p][m]) is not None]
)
def test_every_request_field_has_a_description(path: str) -> None:
    schema = body_schema(SPEC["paths"][path]["post"])
    assert schema is not None
    for name, field in schema["properties"].items():
        assert field.get("description"), f"{path} {name} has no description"


@pytest.mark.parametrize("path", ["/v1/perplexity", "/v1/ngrams", "/v1/ngrams/plot"])
def test_routes_taking_uploads_document_both_bodies(path: str) -> None:
    content = SPEC["paths"][path]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    form = content["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["format"] == "binary" and form["required"] == ["file"]
