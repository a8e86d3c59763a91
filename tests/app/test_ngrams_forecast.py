import itertools
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from models.forecast import SineConfig, run_experiment
from tests.app.conftest import assert_error, make_settings, png_size, wait_ready
from tests.models.test_ngrams import BOOK_BIGRAMS, BOOK_TRIGRAMS, BOOK_UNIGRAMS


def test_the_books_tables_through_the_api(client: TestClient, book_path) -> None:
    body = client.post("/v1/ngrams", json={"corpus": "timemachine", "n": [1, 2, 3], "top_k": 10})
    assert body.status_code == 200, body.text
    tables = {t["n"]: t for t in body.json()["tables"]}
    assert [(e["tokens"][0], e["count"]) for e in tables[1]["entries"]] == BOOK_UNIGRAMS
    assert [(tuple(e["tokens"]), e["count"]) for e in tables[2]["entries"]] == BOOK_BIGRAMS
    assert [(tuple(e["tokens"]), e["count"]) for e in tables[3]["entries"]] == BOOK_TRIGRAMS
    assert tables[1]["total"] == 32775 and tables[1]["unique"] == 4579
    assert tables[1]["entries"][0]["frequency"] == pytest.approx(2261 / 32775)
    zipf = body.json()["zipf"]
    assert 0.8 < zipf["exponent"] < 1.3


def test_posted_text_char_level(client: TestClient) -> None:
    text = "Abracadabra! abra, cadabra."
    body = client.post(
        "/v1/ngrams", json={"text": text, "level": "char", "n": [2], "top_k": 3}
    ).json()
    cleaned = "abracadabra abra cadabra "
    ref = Counter(itertools.pairwise(cleaned)).most_common(3)
    assert [(tuple(e["tokens"]), e["count"]) for e in body["tables"][0]["entries"]] == ref
    assert body["source"] == "text"


def test_min_count_filters(client: TestClient) -> None:
    body = client.post("/v1/ngrams", json={"text": "a a a b b c", "n": [1], "min_count": 2}).json()
    assert [e["tokens"] for e in body["tables"][0]["entries"]] == [["a"], ["b"]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"corpus": "timemachine", "text": "x"}, "body"),
        ({}, "body"),
        ({"text": "x", "n": [7]}, "n.0"),
        ({"text": "x", "n": [1, 1]}, "n"),
        ({"text": "x", "top_k": 1001}, "top_k"),
        ({"text": "x", "level": "sentence"}, "level"),
        ({"corpus": "../../etc/passwd"}, "corpus"),
    ],
)
def test_ngram_validation(client: TestClient, body, param) -> None:
    assert_error(client.post("/v1/ngrams", json=body), 422, param)


def test_unknown_or_missing_corpus_is_404(client: TestClient, checkpoint_dir, tmp_path) -> None:
    assert_error(
        client.post("/v1/ngrams", json={"corpus": "wikitext"}), 404, "corpus", "timemachine"
    )
    settings = make_settings(checkpoint_dir).model_copy(update={"data_dir": tmp_path})
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        error = assert_error(c.post("/v1/ngrams", json={"corpus": "timemachine"}), 404, "corpus")
        assert "timemachine" in error["message"] and str(tmp_path) not in error["message"]


@pytest.mark.parametrize(("width", "height"), [(640, 480), (300, 200)])
def test_zipf_plot_png_has_the_requested_size(client: TestClient, book_path, width, height) -> None:
    r = client.get(f"/v1/ngrams/plot?corpus=timemachine&n=1&n=2&n=3&width={width}&height={height}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert png_size(r.content) == (width, height)


def test_zipf_plot_svg_and_post_form(client: TestClient) -> None:
    r = client.post(
        "/v1/ngrams/plot",
        json={"text": "a b a c a b", "format": "svg", "width": 500, "height": 300},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    assert (
        b'width="500px"' in r.content and b'height="300px"' in r.content and b"</svg>" in r.content
    )
    assert_error(client.get("/v1/ngrams/plot?width=5000"), 422, "width")
    assert_error(client.get("/v1/ngrams/plot?bogus=1"), 422, "bogus")
    for bad, param in (("n=0", "n.0"), ("n=1&n=7", "n.1"), ("n=1&n=1", "n")):
        assert_error(client.get(f"/v1/ngrams/plot?{bad}"), 422, param)
    for text in ("0", "!?"):  # no letters: nothing to count, found by fuzzing as a 500
        r = client.post("/v1/ngrams/plot", json={"text": text, "n": [1, 2]})
        assert_error(r, 422, "text", "no word n-grams")
    r = client.post("/v1/ngrams/plot", json={"text": "a", "n": [1, 2]})  # some curve: drawn
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_wrong_method_lists_every_allowed_one(client: TestClient) -> None:
    r = client.delete("/v1/ngrams/plot")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert r.json()["error"]["code"] == "405"


def test_default_forecast_uses_the_committed_bundle(client: TestClient) -> None:
    body = client.post("/v1/forecast", json={}).json()
    assert body["model"] == "sine-mlp"
    _, ref = run_experiment(SineConfig())  # same seed: the fit reproduces the bundle
    assert body["one_step"]["mse"] == pytest.approx(ref.one_step.mse, rel=1e-4)
    assert set(body["k_step"]) == {"1", "4", "16", "64"}
    assert len(body["series"]["x"]) == 1000 and len(body["k_step"]["64"]["values"]) == 933


def test_other_parameters_fit_a_fresh_model(client: TestClient) -> None:
    body = client.post(
        "/v1/forecast",
        json={"T": 300, "tau": 8, "num_train": 200, "noise": 0.05, "epochs": 3, "k_steps": [2, 8]},
    ).json()
    assert body["model"] == "fitted" and set(body["k_step"]) == {"2", "8"}
    assert len(body["series"]["x"]) == 300 and body["config"]["tau"] == 8


@pytest.mark.parametrize("figure", ["data", "one_step", "multi_step", "k_step", "all"])
def test_forecast_figures(client: TestClient, figure) -> None:
    r = client.post("/v1/forecast/plot", json={"figure": figure, "width": 400, "height": 300})
    assert r.status_code == 200 and png_size(r.content) == (400, 300)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"T": 100000}, "T"),
        ({"T": 100, "num_train": 99}, "body"),
        ({"epochs": 21}, "epochs"),
        ({"k_steps": [0]}, "k_steps"),
        ({"figure": "pie"}, "figure"),
    ],
)
def test_forecast_validation(client: TestClient, body, param) -> None:
    assert_error(client.post("/v1/forecast/plot", json=body), 422, param)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_are_rejected(client: TestClient, number: bytes) -> None:
    raw = b'{"noise": ' + number + b"}"
    response = client.post(
        "/v1/forecast", content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "noise", "finite")


def test_a_single_order_may_be_a_plain_integer(client: TestClient) -> None:
    text = "a b a c a b"
    as_int = client.post("/v1/ngrams", json={"text": text, "n": 2, "top_k": 3})
    as_list = client.post("/v1/ngrams", json={"text": text, "n": [2], "top_k": 3})
    assert as_int.status_code == 200, as_int.text
    assert as_int.json() == as_list.json()
    assert [t["n"] for t in as_int.json()["tables"]] == [2]
    plot = client.post("/v1/ngrams/plot", json={"text": text, "n": 1, "width": 300, "height": 200})
    assert plot.status_code == 200, plot.text
    assert png_size(plot.content) == (300, 200)
    assert_error(client.post("/v1/ngrams", json={"text": text, "n": 7}), 422, "n", "6")
    assert_error(client.post("/v1/ngrams", json={"text": text, "n": 0}), 422, "n")
    assert_error(client.post("/v1/ngrams", json={"text": text, "n": "2"}), 422, "n")
