"""ARPA export read back by an independent reader (the `arpa` package), token by token."""

import math
from pathlib import Path

import arpa
import pytest
import torch

from models.arpa import ArpaError, escape, write_arpa
from models.ngram_lm import NgramConfig, NgramLM, count_ngrams
from models.text import Tokenizer
from tests.conftest import TINY_TEXT

HELD_OUT = "the time traveller smiled round at us then still smiling faintly a quiet zebra"


@pytest.mark.parametrize(("smoothing", "order"), [("kn", 4), ("modified-kn", 5), ("laplace", 3)])
def test_reader_gives_our_log10_probabilities(
    tmp_path: Path, char_tokenizer: Tokenizer, smoothing: str, order: int
) -> None:
    train = char_tokenizer.encode(TINY_TEXT).ids
    model = NgramLM(NgramConfig(28, order, smoothing), count_ngrams(train, order, 28))  # type: ignore[arg-type]
    path = tmp_path / "model.arpa"
    write_arpa(model, char_tokenizer.vocab, path)
    text = path.read_text()
    assert "\t<sp>" in text and "\t \t" not in text  # the space token is escaped
    reader = arpa.loadf(str(path))[0]
    ids = char_tokenizer.encode(HELD_OUT).ids
    words = [escape(t) for t in char_tokenizer.vocab.decode(ids)]
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    ours = logits[0].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1) / math.log(10)
    theirs = [reader.log_p(tuple(words[max(0, t - order + 1) : t + 1])) for t in range(1, len(ids))]
    torch.testing.assert_close(
        torch.tensor(theirs, dtype=torch.float64), ours.double(), rtol=0, atol=1e-5
    )
    assert ours.min() < -1.5  # the held-out text does reach unseen n-grams ("zebra")


def test_mle_has_no_arpa_form(tmp_path: Path, char_tokenizer: Tokenizer) -> None:
    train = char_tokenizer.encode(TINY_TEXT).ids
    model = NgramLM(NgramConfig(28, 3, "mle"), count_ngrams(train, 3, 28))
    with pytest.raises(ArpaError, match="probability 0"):
        write_arpa(model, char_tokenizer.vocab, tmp_path / "mle.arpa")
    assert not (tmp_path / "mle.arpa").exists()


def test_escapes() -> None:
    assert escape(" ") == "<sp>" and escape("\n") == "<U+000A>" and escape("ab") == "ab"
