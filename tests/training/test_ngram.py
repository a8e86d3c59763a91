"""`python -m training ngram` and `mixture`: bundles, held-out figures, bad settings."""

import json
from pathlib import Path

import pytest

from models.bundle import load_bundle, load_in_order
from models.score import score_ids
from tests.conftest import tiny_train_config
from training.cli import main
from training.data import load_tokens
from training.loop import train


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["-q", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_ngram_bundle_with_held_out_perplexity_and_arpa(
    tmp_path: Path, tiny_corpus: Path, capsys
) -> None:
    out = tmp_path / "kn3"
    summary = run(
        capsys, "ngram", "--corpus", str(tiny_corpus), "--order", "3", "--out", str(out),
        "--arpa", str(tmp_path / "kn3.arpa"),
    )  # fmt: skip
    bundle = load_bundle(out)
    assert bundle.kind == "ngram" and bundle.config["training"]["smoothing"] == "kn"
    tokens = load_tokens(tiny_train_config(out, tiny_corpus).data)
    expected = score_ids(bundle.model, tokens.val_ids).perplexity  # type: ignore[arg-type]
    assert summary["val_ppl"] == pytest.approx(expected) and bundle.metrics["val_ppl"] > 1
    assert (tmp_path / "kn3.arpa").read_text().startswith("\\data\\\nngram 1=")


def test_mle_held_out_zero_probability_is_counted(tmp_path: Path, tiny_corpus: Path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(tiny_corpus.read_text() + " zebra quiz jumps")
    out = tmp_path / "mle"
    summary = run(capsys, "ngram", "--corpus", str(corpus), "--smoothing", "mle", "--order", "2",
                  "--out", str(out))  # fmt: skip
    assert summary["val_ppl"] is None and summary["val_zero_probability_tokens"] > 0


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--smoothing", "witten-bell"], ["invalid choice", "modified-kn"]),
        (["--order", "0"], ["--order", ">= 1"]),
        (["--order", "17"], ["--order", "<= 16"]),
    ],
)
def test_bad_flags_exit_2(tmp_path: Path, capsys, argv: list[str], words: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ngram", "--out", str(tmp_path / "x"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_arpa_of_mle_fails_before_writing(tmp_path: Path, tiny_corpus: Path, capsys) -> None:
    argv = ["ngram", "--corpus", str(tiny_corpus), "--smoothing", "mle", "--out"]
    assert main([*argv, str(tmp_path / "m"), "--arpa", str(tmp_path / "m.arpa")]) == 1
    assert "probability 0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.arpa").exists()


def test_mixture_of_an_rnn_and_an_ngram_model(
    tmp_path: Path, tiny_corpus: Path, capsys, curves_not_drawn: None
) -> None:
    train(tiny_train_config(tmp_path / "gru", tiny_corpus))
    run(
        capsys, "ngram", "--corpus", str(tiny_corpus), "--order", "4", "--out", str(tmp_path / "kn")
    )
    argv = ["mixture", "--corpus", str(tiny_corpus), "--components", "gru", "kn"]
    summary = run(capsys, *argv, "--out", str(tmp_path / "mix"))
    parts = summary["component_val_ppl"]
    assert summary["val_ppl"] <= min(parts.values()) * 1.001
    assert summary["val_ppl_cross_fit"] >= summary["val_ppl"] * 0.99
    loaded = dict(load_in_order(sorted(tmp_path.iterdir())))
    mix = loaded[tmp_path / "mix"]
    assert not isinstance(mix, Exception) and mix.kind == "mixture"
    # Refit with the same inputs: the same bundle, byte for byte (no random draw).
    weights = (tmp_path / "mix" / "weights.safetensors").read_bytes()
    run(capsys, *argv, "--out", str(tmp_path / "mix"))
    assert (tmp_path / "mix" / "weights.safetensors").read_bytes() == weights


def test_mixture_of_one_component_or_other_split_is_refused(
    tmp_path: Path, tiny_corpus: Path, capsys
) -> None:
    with pytest.raises(SystemExit):
        main(["mixture", "--components", "kn", "--out", str(tmp_path / "mix")])
    assert "two or more" in capsys.readouterr().err
    run(capsys, "ngram", "--corpus", str(tiny_corpus), "--order", "2", "--out", str(tmp_path / "a"))
    run(capsys, "ngram", "--corpus", str(tiny_corpus), "--order", "3", "--out", str(tmp_path / "b"),
        "--val-frac", "0.2")  # fmt: skip
    argv = ["mixture", "--corpus", str(tiny_corpus), "--components", "a", "b"]
    assert main([*argv, "--out", str(tmp_path / "mix")]) == 1
    assert "validation split" in capsys.readouterr().err
