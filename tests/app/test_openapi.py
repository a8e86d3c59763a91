"""The OpenAPI document: every request field documented, and Swagger's examples accepted."""

import pytest
from fastapi.testclient import TestClient


def request_schemas(client: TestClient) -> dict[str, dict]:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    out = {}
    for path, operations in spec["paths"].items():
        body = operations.get("post", {}).get("requestBody")
        if body is not None:
            schema = body["content"]["application/json"]["schema"]
            ref = schema.get("$ref")  # routes that also take uploads inline their schema
            out[path] = components[ref.rsplit("/", 1)[1]] if ref else schema
    return out


def test_new_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/completions", "/v1/tokenize", "/v1/detokenize", "/metrics"} <= set(paths)
    assert "text/event-stream" in paths["/v1/completions"]["post"]["responses"]["200"]["content"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/generate",
        "/v1/completions",
        "/v1/tokenize",
        "/v1/detokenize",
        "/v1/perplexity",
        "/v1/ngrams",
    ],
)
def test_every_field_has_a_description_and_the_examples_work(client: TestClient, path) -> None:
    schema = request_schemas(client)[path]
    example = {}
    for name, field in schema["properties"].items():
        assert field.get("description"), f"{path} {name} has no description"
        if "examples" in field:
            example[name] = field["examples"][0]
    response = client.post(path, json=example)  # what Swagger UI's "Try it out" sends
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/v1/perplexity", "/v1/ngrams", "/v1/ngrams/plot"])
def test_routes_taking_uploads_document_both_bodies(client: TestClient, path) -> None:
    content = client.get("/openapi.json").json()["paths"][path]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    form = content["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["format"] == "binary" and form["required"] == ["file"]
