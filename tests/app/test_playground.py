"""The playground page at / and its assets, served by the real app beside the API.

What the page does (streaming, seeds, errors, plots) is tested in a real browser:
tests/browser, run by scripts/browser-test.sh.
"""

import re

from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import make_settings, wait_ready


def test_root_serves_the_playground_page(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<title>rnnlm playground</title>" in r.text
    assert '<body data-auth="none">' in r.text
    for element in (
        'id="model"',
        'id="generate"',
        'id="ppl-text"',
        'id="ng-plot"',
        'id="fc-plot"',
        'id="tr-curves"',
    ):
        assert element in r.text


def test_every_asset_the_page_links_is_served_locally(client: TestClient) -> None:
    page = client.get("/").text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert {"/static/playground/playground.js", "/static/playground/playground.css"} <= set(assets)
    assert "http://" not in page and "https://" not in page  # no CDN: the machines are offline
    for path in assets:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.content, path
    assert "javascript" in client.get("/static/playground/playground.js").headers["content-type"]
    assert (
        client.get("/static/playground/playground.css")
        .headers["content-type"]
        .startswith("text/css")
    )


def test_the_page_stays_out_of_the_schema_and_beside_the_other_pages(client: TestClient) -> None:
    assert "/" not in client.get("/openapi.json").json()["paths"]
    for path in ("/docs", "/redoc", "/health", "/ready", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/static/playground/missing.js").status_code == 404


def test_a_keyed_service_serves_the_page_openly_and_asks_for_the_key(checkpoint_dir) -> None:
    with TestClient(create_app(make_settings(checkpoint_dir, api_key="s3cret"))) as c:
        wait_ready(c)
        r = c.get("/")
        assert r.status_code == 200
        assert '<body data-auth="bearer">' in r.text
        assert c.get("/static/playground/playground.js").status_code == 200
        assert c.get("/v1/models").status_code == 401


def test_the_page_offers_the_named_corpora_and_every_lm_kind(client: TestClient) -> None:
    assert '<select id="ng-corpus">' in client.get("/").text
    script = client.get("/static/playground/playground.js").text
    assert '"/v1/corpora"' in script and '"byte-lm"' in script
