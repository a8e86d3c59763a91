"""GET /v1/models/{id}/training and /v1/models/{id}/curves: how a served model was trained."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from models.bundle import load_bundle, save_bundle
from tests.app.conftest import assert_error, make_settings, png_size, wait_ready
from tests.conftest import TINY_TEXT
from training.config import DataConfig
from training.ngram import NgramRun, train_ngram

FIGURES = ("grad_norm_mean", "grad_norm_max", "clipped_fraction", "steps", "tokens_per_s", "lr")


def test_a_language_models_history_and_settings(client: TestClient) -> None:
    response = client.get("/v1/models/char-gru/training")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["object"], body["kind"]) == ("char-gru", "model.training", "char-lm")
    assert [e["epoch"] for e in body["epochs"]] == [1, 2]
    for epoch in body["epochs"]:
        assert epoch["train_ppl"] > 1 and epoch["val_ppl"] > 1
        assert all(isinstance(epoch[key], int | float) for key in FIGURES), epoch
        assert epoch["grad_norm_mean"] <= epoch["grad_norm_max"]
        assert 0 <= epoch["clipped_fraction"] <= 1
    assert body["best_epoch"] in (1, 2)
    assert body["settings"]["arch"] == "gru" and body["settings"]["optimizer"] == "adam"
    assert set(body["samples"]) == {"time traveller", "traveller"}


def test_the_forecasters_history(client: TestClient) -> None:
    body = client.get("/v1/models/sine-mlp/training").json()
    assert body["kind"] == "forecaster" and body["best_epoch"] is None
    assert all(e["train_mse"] > 0 and e["train_ppl"] is None for e in body["epochs"])
    assert body["settings"]["sine"]["tau"] == 4


def test_the_curves_as_png_and_svg(client: TestClient) -> None:
    png = client.get("/v1/models/char-gru/curves")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png_size(png.content) == (640, 800)  # perplexity, then the gradient norm
    small = client.get("/v1/models/sine-mlp/curves", params={"width": 320})
    assert png_size(small.content) == (320, 400)  # one panel: the MSE
    svg = client.get(
        "/v1/models/char-lstm/curves", params={"format": "svg", "width": 500, "height": 600}
    )
    assert svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content and b'width="500px"' in svg.content


@pytest.mark.parametrize("route", ["training", "curves"])
def test_an_unknown_model_is_a_404_naming_it(client: TestClient, route: str) -> None:
    assert_error(client.get(f"/v1/models/no-such-model/{route}"), 404, None, "'no-such-model'")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"format": "gif"}, "format"),
        ({"width": 10}, "width"),
        ({"height": 99999}, "height"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_curve_options_are_422_naming_the_field(
    client: TestClient, params: dict, param: str
) -> None:
    assert_error(client.get("/v1/models/char-gru/curves", params=params), 422, param)


@pytest.fixture(scope="module")
def old_bundles(
    checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """Bundles as older rnnlm versions wrote them: no history at all, or one without the
    gradient norms; and one whose metrics.json was edited by hand."""
    root = tmp_path_factory.mktemp("old-bundles")
    gru = load_bundle(checkpoint_dir / "char-gru")
    training = gru.config["training"]
    save_bundle(root / "no-history", gru.model, gru.tokenizer, training, metrics={})
    old = [
        {k: e[k] for k in ("epoch", "train_ppl", "val_ppl", "lr", "tokens_per_s", "seconds")}
        for e in gru.metrics["epochs"]
    ]
    save_bundle(root / "old-history", gru.model, gru.tokenizer, training, {"epochs": old})
    # Values of the wrong type (an epoch that is not an object fails the load instead).
    odd = {"epochs": [{"epoch": 1, "train_ppl": "high", "lr": True, "steps": 3.0}]}
    save_bundle(root / "odd-history", gru.model, gru.tokenizer, training, odd)
    corpus = root.parent / "ngram-corpus.txt"
    corpus.write_text(TINY_TEXT)
    train_ngram(NgramRun(out=root / "char-kn3", data=DataConfig(corpus=str(corpus))))
    with TestClient(create_app(make_settings(root))) as c:
        wait_ready(c)
        yield c


@pytest.mark.parametrize("route", ["training", "curves"])
def test_a_model_without_history_is_a_404_with_the_reason(
    old_bundles: TestClient, route: str
) -> None:
    error = assert_error(
        old_bundles.get(f"/v1/models/no-history/{route}"),
        404,
        "model_id",
        "'no-history'",
        "no recorded training history",
    )
    assert error["code"] == "no_training_history"


def test_an_ngram_model_is_a_404_saying_it_is_counted(old_bundles: TestClient) -> None:
    assert_error(
        old_bundles.get("/v1/models/char-kn3/training"), 404, "model_id", "'char-kn3'", "counted"
    )


def test_an_older_history_has_null_gradient_figures(old_bundles: TestClient) -> None:
    body = old_bundles.get("/v1/models/old-history/training").json()
    assert all(e["grad_norm_mean"] is None and e["train_ppl"] > 1 for e in body["epochs"])
    assert body["samples"] is None
    curves = old_bundles.get("/v1/models/old-history/curves")
    assert png_size(curves.content) == (640, 400)  # perplexity only


def test_a_hand_edited_history_never_500s(old_bundles: TestClient) -> None:
    body = old_bundles.get("/v1/models/odd-history/training").json()
    assert body["epochs"] == [{**dict.fromkeys(body["epochs"][0], None), "epoch": 1, "steps": 3}]
    assert old_bundles.get("/v1/models/odd-history/curves").status_code == 200


def test_both_routes_are_in_swagger_with_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    training = paths["/v1/models/{model_id}/training"]["get"]
    example = training["responses"]["200"]["content"]["application/json"]["example"]
    assert example["object"] == "model.training" and example["epochs"][0]["grad_norm_mean"]
    model_id = next(p for p in training["parameters"] if p["name"] == "model_id")
    assert model_id["schema"]["examples"] == ["char-lstm"]
    curves = paths["/v1/models/{model_id}/curves"]["get"]
    assert set(curves["responses"]["200"]["content"]) == {"image/png", "image/svg+xml"}
    assert {"404", "422"} <= set(curves["responses"])
    json.dumps(paths)  # the document is plain JSON
