"""Beam search against an exhaustive search and against a naive reference written here."""

import itertools
import math

import pytest
import torch

from models.bundle import Bundle, load_bundle
from models.generate import Decoder, Join, SamplingParams, generate
from models.score import score_ids
from models.text import Tokenizer, Vocab
from tests.conftest import ROOT, tiny_lm


@pytest.fixture(scope="module")
def book_rnn() -> Bundle:
    """The committed book-trained RNN: peaked enough that beams end at different lengths."""
    return load_bundle(ROOT / "checkpoints" / "char-rnn-scratch", "cpu")


def logprobs_after(model: torch.nn.Module, ids: list[int]) -> list[float]:
    """The model's own next-token log-probabilities, read through `forward` on the text."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return torch.log_softmax(logits[0, -1].double(), 0).tolist()


def reference_beams(
    model: torch.nn.Module,
    prefix: list[int],
    p: SamplingParams,
    n: int,
    piece: object,
) -> list[tuple[str, float]]:
    """The documented rules, one hypothesis at a time: (text, total) of the best n."""
    K, V = p.num_beams, model.config.vocab_size

    def text_of(ids: list[int]) -> tuple[str, bool]:
        text = "".join(piece(i) for i in ids)  # type: ignore[operator]
        hits = [text.find(s) for s in p.stop if s in text]
        return (text[: min(hits)], True) if hits else (text, False)

    def norm(total: float, length: int) -> float:
        return total / length**p.length_penalty

    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[float, float, str]] = []
    for length in range(1, p.max_new_tokens + 1):
        candidates = []
        for b, (ids, total) in enumerate(beams):
            lp = logprobs_after(model, prefix + ids)
            candidates += [(total + lp[t], b, t) for t in range(1, V)]  # <unk> never
        candidates.sort(key=lambda c: -c[0])
        following: list[tuple[list[int], float]] = []
        for rank, (total, b, t) in enumerate(candidates[: 2 * K]):
            ids = [*beams[b][0], t]
            text, stopped = text_of(ids)
            if stopped or length == p.max_new_tokens:
                if rank < K:
                    finished = sorted([*finished, (norm(total, length), total, text)])[::-1][:K]
            else:
                following.append((ids, total))
                if len(following) == K:
                    break
        if not following:
            break
        if len(finished) >= K:
            if p.early_stopping:
                break
            reach = p.max_new_tokens if p.length_penalty > 0 else length
            if finished[-1][0] >= norm(following[0][1], reach):
                break
        beams = following
    return [(text, total) for _, total, text in finished[:n]]


def test_enough_beams_find_the_most_likely_sequences() -> None:
    """With num_beams >= (V-1)^(L-1) nothing is pruned: the best n of all sequences."""
    model = tiny_lm("gru", vocab_size=5, num_hiddens=12, seed=2)
    letters = Tokenizer(Vocab(["<unk>", "a", "b", "c", "d"]))
    prefix = [1, 3]
    p = SamplingParams(temperature=0, num_beams=16, max_new_tokens=3)
    beams = generate(model, prefix, [p] * 5, letters.detokenizer)
    every = []
    for seq in itertools.product(range(1, 5), repeat=3):
        scored = score_ids(model, prefix + list(seq), len(prefix))
        every.append((-scored.nll, letters.decode(seq)))
    every.sort(reverse=True)
    assert [b.text for b in beams] == [text for _, text in every[:5]]
    assert [b.logprob for b in beams] == pytest.approx([lp for lp, _ in every[:5]], abs=1e-5)
    assert all(b.finish_reason == "length" and b.tokens == 3 for b in beams)


# Each case ends beams at different lengths (texts, lengths, reasons in the comments).
CASES = {
    # "traveller ha", "traveller i ", "traveller an": all at the length limit
    "plain": {"num_beams": 4, "max_new_tokens": 12},
    # "traveller and " (stop), "machin" (stop, 8 tokens), "traveller i " (stop)
    "stop": {"num_beams": 4, "max_new_tokens": 25, "stop": ("e ", "th")},
    # favours short hypotheses: "an", "traveller ha"
    "short_bias": {
        "num_beams": 3,
        "max_new_tokens": 25,
        "stop": ("s ", "d "),
        "length_penalty": -1.0,
    },
    # favours long ones: "trav", "travilling into th" (stop), two at the length limit
    "long_bias": {"num_beams": 5, "max_new_tokens": 20, "stop": ("e",), "length_penalty": 2.0},
    # stops once 3 hypotheses are finished: "tr", "m"
    "early_stopping": {
        "num_beams": 3,
        "max_new_tokens": 25,
        "stop": ("a", "s "),
        "early_stopping": True,
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_beams_match_the_reference(book_rnn: Bundle, name: str) -> None:
    model, tokenizer = book_rnn.model, book_rnn.tokenizer
    assert tokenizer is not None
    prefix = tokenizer.encode("the time ").ids
    p = SamplingParams(temperature=0, **CASES[name])  # type: ignore[arg-type]
    n = p.num_beams - 1
    beams = generate(model, prefix, [p] * n, tokenizer.detokenizer)  # type: ignore[arg-type]
    expected = reference_beams(model, prefix, p, n, tokenizer.piece)
    assert [b.text for b in beams] == [text for text, _ in expected]
    assert [b.logprob for b in beams] == pytest.approx([t for _, t in expected], abs=1e-4)
    assert len({b.tokens for b in beams}) > 1 or name == "plain"


def test_beam_logprobs_score_their_text(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32, seed=1)
    prefix = char_tokenizer.encode("time ").ids
    p = SamplingParams(temperature=0, num_beams=4, max_new_tokens=15, logprobs=2)
    for beam in generate(model, prefix, [p] * 3, char_tokenizer.detokenizer):
        ids = prefix + [t.token for t in beam.logprobs]
        assert "".join(char_tokenizer.piece(t.token) for t in beam.logprobs) == beam.text
        scored = score_ids(model, ids, len(prefix), return_logprobs=True, top_logprobs=2)
        assert [t.logprob for t in beam.logprobs] == pytest.approx(scored.token_logprobs, abs=1e-5)
        assert beam.logprob == pytest.approx(sum(scored.token_logprobs or []), abs=1e-4)
        assert [[i for i, _ in t.top] for t in beam.logprobs] == [
            [i for i, _ in top] for top in scored.top_logprobs or []
        ]


def test_beams_with_no_repeat_ngram_never_repeat(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32, seed=1)
    p = SamplingParams(temperature=0, num_beams=3, max_new_tokens=60, no_repeat_ngram_size=3)
    for beam in generate(
        model, char_tokenizer.encode("the ").ids, [p] * 3, char_tokenizer.detokenizer
    ):
        grams = [beam.text[i : i + 3] for i in range(len(beam.text) - 2)]
        assert len(grams) == len(set(grams)) == 58


def test_beams_alone_or_batched_with_other_traffic(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("lstm", num_hiddens=24, seed=5)
    prefix = char_tokenizer.encode("the time ").ids
    p = SamplingParams(temperature=0, num_beams=4, max_new_tokens=20, stop=("e ",), logprobs=1)
    alone = generate(model, prefix, [p] * 2, char_tokenizer.detokenizer)
    decoder: Decoder[str] = Decoder(model, char_tokenizer.detokenizer)
    decoder.add_all(
        [
            Join("a", [4, 5], [SamplingParams(seed=1, max_new_tokens=7, repetition_penalty=2)]),
            Join("b", [7], [SamplingParams(temperature=0, num_beams=2, max_new_tokens=30)] * 2),
        ]
    )
    results = {}
    for step in range(100):
        if step == 3:
            decoder.add_all([Join("beams", prefix, [p] * 2), Join("c", [2], [SamplingParams()])])
        for owner, delta in decoder.step():
            results[owner, delta.index] = delta
        if not decoder:
            break
    batched = [results["beams", i] for i in range(2)]
    assert [b.text for b in batched] == [b.text for b in alone]
    # Batched matrix products may round the last bits differently; texts never differ.
    assert [b.logprob for b in batched] == pytest.approx([b.logprob for b in alone], abs=1e-6)
    assert [[t.token for t in b.logprobs] for b in batched] == [
        [t.token for t in b.logprobs] for b in alone
    ]
    assert math.isfinite(results["b", 1].logprob or math.nan)


def test_beam_params_are_validated() -> None:
    with pytest.raises(ValueError, match="temperature 0"):
        SamplingParams(num_beams=2)
    with pytest.raises(ValueError, match="at most num_beams"):
        generate(tiny_lm("gru"), [1], [SamplingParams(temperature=0, num_beams=2)] * 3, str)


def test_beams_of_a_byte_model_copy_their_pending_bytes() -> None:
    """A beam extended two ways holds half a UTF-8 character in each copy, independently."""
    tokenizer = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    model = tiny_lm("gru", vocab_size=256, num_hiddens=16, seed=4)
    with torch.no_grad():  # favour multi-byte characters: lead bytes and continuations
        model.output.bias[0xC3] += 3.0
        model.output.bias[0x80:0xC0] += 2.0
    p = SamplingParams(temperature=0, num_beams=4, max_new_tokens=24, logprobs=0)
    beams = generate(model, list(b"caf"), [p] * 4, tokenizer.detokenizer, tokenizer.banned_ids)
    for beam in beams:
        data = bytes(t.token for t in beam.logprobs)
        assert beam.text == data.decode("utf-8", "replace")
    assert any(ord(c) > 127 and c != "\ufffd" for b in beams for c in b.text)
