from dataclasses import replace

import pytest
import torch

from models.generate import (
    DecodeBatch,
    SamplingParams,
    StopTracker,
    generate,
    sample_next,
    uniform,
)
from models.score import score_ids
from models.text import Tokenizer, Vocab
from tests.conftest import tiny_lm


def rows(B: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0):
    return (
        torch.full((B,), temperature, dtype=torch.float64),
        torch.full((B,), top_k, dtype=torch.long),
        torch.full((B,), top_p, dtype=torch.float64),
        torch.arange(B, dtype=torch.long) + seed,
        torch.zeros(B, dtype=torch.long),
    )


def test_greedy_is_argmax() -> None:
    logits = torch.randn(8, 30)
    assert torch.equal(sample_next(logits, *rows(8, temperature=0.0)), logits.argmax(1))


def test_top_k_never_leaves_the_top_k() -> None:
    logits = torch.randn(1, 30).expand(4000, -1).contiguous()
    temperature, top_k, top_p, _, counters = rows(4000, top_k=3)
    seeds = torch.arange(4000)
    picked = sample_next(logits, temperature, top_k, top_p, seeds, counters)
    allowed = set(logits[0].topk(3).indices.tolist())
    assert set(picked.tolist()) == allowed


def test_top_p_keeps_the_smallest_sufficient_head() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).expand(3000, -1)
    temperature, top_k, top_p, _, counters = rows(3000, top_p=0.7)
    picked = sample_next(probs.log(), temperature, top_k, top_p, torch.arange(3000), counters)
    assert set(picked.tolist()) == {0, 1}
    freq0 = (picked == 0).double().mean().item()
    assert freq0 == pytest.approx(0.5 / 0.8, abs=0.04)  # renormalised over the head


def test_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([[0.6, 0.3, 0.1]]).expand(20000, -1)
    temperature, top_k, top_p, _, counters = rows(20000)
    picked = sample_next(probs.log(), temperature, top_k, top_p, torch.arange(20000), counters)
    freq = torch.bincount(picked, minlength=3).double() / 20000
    torch.testing.assert_close(
        freq, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), atol=0.015, rtol=0
    )


def test_uniform_is_a_pure_function_of_seed_and_counter() -> None:
    seeds = torch.tensor([0, 1, 2**62, -5])
    counters = torch.tensor([0, 0, 7, 3])
    u = uniform(seeds, counters)
    assert torch.equal(u, uniform(seeds, counters))
    assert ((u >= 0) & (u < 1)).all()
    many = uniform(torch.zeros(100000, dtype=torch.long), torch.arange(100000))
    assert many.mean().item() == pytest.approx(0.5, abs=0.01)


def test_same_seed_same_text_alone_or_batched(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32)
    prefix = char_tokenizer.encode("time traveller ").ids
    params = SamplingParams(temperature=1.0, seed=1234, max_new_tokens=60)
    alone = generate(model, prefix, [params], char_tokenizer.detokenizer)[0].text
    others = [
        SamplingParams(temperature=0.8, top_k=5, seed=s, max_new_tokens=40 + s) for s in range(63)
    ]
    batched = generate(
        model, prefix, [*others[:30], params, *others[30:]], char_tokenizer.detokenizer
    )
    assert batched[30].text == alone
    assert len({t.text[:40] for t in batched}) > 50  # different seeds, different texts


def test_sequences_joining_later_do_not_disturb_others(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("lstm", num_hiddens=24)
    a_prefix, b_prefix = char_tokenizer.encode("the ").ids, char_tokenizer.encode("machine ").ids
    p = SamplingParams(temperature=1.0, seed=7, max_new_tokens=30)
    alone = generate(model, a_prefix, [p], char_tokenizer.detokenizer)[0].text
    batch = DecodeBatch(model)
    batch.add(a_prefix, [p])
    out = []
    for step in range(30):
        if step == 10:  # another request joins mid-way ...
            batch.add(b_prefix, [SamplingParams(seed=99)])
        tokens = batch.next_tokens()
        out.append(char_tokenizer.piece(int(tokens[0])))
        if step == 20:  # ... and leaves again
            batch.keep(torch.tensor([0]))
            tokens = tokens[:1]
        batch.feed(tokens)
    assert "".join(out) == alone


@pytest.mark.parametrize("arch", ["lstm", "rnn_scratch"])
def test_prefixes_joining_together_decode_as_alone(char_tokenizer: Tokenizer, arch: str) -> None:
    """add_all encodes equal-length prefixes in one pass; rows keep their request order."""
    model = tiny_lm(arch, num_hiddens=24)
    words = ["the ", "who ", "machine ", "now ", "time "]  # lengths 4, 4, 8, 4, 5
    prefixes = [char_tokenizer.encode(w).ids for w in words]
    params = [
        [SamplingParams(temperature=1.0, seed=i, max_new_tokens=20)] * (1 + i % 2)
        for i in range(len(words))
    ]
    batch = DecodeBatch(model)
    batch.add_all(prefixes, params)
    steps = []
    for _ in range(20):
        tokens = batch.next_tokens()
        steps.append(tokens.tolist())
        batch.feed(tokens)
    rows = ["".join(char_tokenizer.piece(step[r]) for step in steps) for r in range(len(steps[0]))]
    alone = [
        t.text
        for prefix, p in zip(prefixes, params, strict=True)
        for t in generate(model, prefix, p, char_tokenizer.detokenizer)
    ]
    assert rows == alone


def test_greedy_and_sampled_rows_in_one_batch(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32)
    prefix = char_tokenizer.encode("the ").ids
    greedy = SamplingParams(temperature=0, max_new_tokens=50)
    alone = generate(model, prefix, [greedy], char_tokenizer.detokenizer)[0].text
    sampled = [SamplingParams(temperature=1.5, seed=s, max_new_tokens=50) for s in range(4)]
    mixed = generate(model, prefix, [greedy, *sampled], char_tokenizer.detokenizer)
    assert mixed[0].text == alone
    assert all(t.text != alone for t in mixed[1:])


def test_unk_is_never_generated(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru")
    with torch.no_grad():
        model.output.bias[0] = 100.0  # <unk> would win every argmax
    out = generate(
        model,
        [1, 2],
        [SamplingParams(temperature=0, max_new_tokens=20)],
        char_tokenizer.detokenizer,
    )
    assert len(out[0].text) == 20 and "<unk>" not in out[0].text


def push_text(tracker: StopTracker, tokenizer: Tokenizer, text: str) -> list[str]:
    return [tracker.push(i) for i in tokenizer.encode(text).ids]


def test_stop_strings_cut_the_text(char_tokenizer: Tokenizer) -> None:
    tracker = StopTracker(["ab", "xyz"], 100, char_tokenizer.detokenizer())
    emitted = "".join(push_text(tracker, char_tokenizer, "hello xyab and more"))
    assert tracker.finish_reason == "stop" and tracker.text == "hello xy" and emitted == "hello xy"


def test_streamed_pieces_join_to_the_final_text(char_tokenizer: Tokenizer) -> None:
    tracker = StopTracker(["the end"], 40, char_tokenizer.detokenizer())
    pieces = push_text(tracker, char_tokenizer, "then the en")
    assert "".join(pieces) == "then "  # "the en" is held back: it may become the stop
    pieces += push_text(tracker, char_tokenizer, "d")
    assert tracker.finished and "".join(pieces) == tracker.text == "then "


def test_bytes_stream_whole_characters_only() -> None:
    """A byte model's pieces never end inside a UTF-8 character; a character cut off by the
    length limit reads U+FFFD, and the pieces still join to the final text."""
    tokenizer = Tokenizer(Vocab.of_bytes(), level="byte", normalize="none")
    data = "né € ok".encode()
    tracker = StopTracker([], len(data) - 1, tokenizer.detokenizer())
    pieces = [tracker.push(b) for b in data]
    assert pieces[:4] == ["n", "", "é", " "] and pieces[4:6] == ["", ""]
    assert "".join(pieces) == tracker.text == "né € o" and tracker.finish_reason == "length"
    cut = StopTracker(["ok"], 3, tokenizer.detokenizer())
    assert "".join(cut.push(b) for b in "a€".encode()) == cut.text == "a\ufffd"


def test_length_limit(char_tokenizer: Tokenizer) -> None:
    tracker = StopTracker([], 3, char_tokenizer.detokenizer())
    assert push_text(tracker, char_tokenizer, "abcd") == ["a", "b", "c", ""]
    assert tracker.finish_reason == "length"


def test_params_are_validated() -> None:
    for bad in (
        {"temperature": -1},
        {"top_p": 0.0},
        {"top_k": -1},
        {"stop": ("",)},
        {"logprobs": -1},
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)  # type: ignore[arg-type]


def test_logprobs_only_for_the_rows_that_ask(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32)
    batch = DecodeBatch(model)
    batch.add(char_tokenizer.encode("the ").ids, [SamplingParams(seed=1), SamplingParams(seed=2)])
    batch.add(char_tokenizer.encode("time ").ids, [SamplingParams(seed=3, logprobs=0)])
    batch.add(char_tokenizer.encode("a ").ids, [SamplingParams(temperature=0, logprobs=5)])
    logits = batch.logits.clone()  # (4, V)
    step = batch.sample()
    assert sorted(step.logprobs) == [2, 3]
    expected = torch.log_softmax(logits, dim=1)  # the model's own distribution
    for row, k in ((2, 0), (3, 5)):
        lp = step.logprobs[row]
        assert lp.token == int(step.tokens[row])
        assert lp.logprob == pytest.approx(float(expected[row, lp.token]), abs=1e-6)
        top_values, top_ids = expected[row].topk(k)
        assert [i for i, _ in lp.top] == top_ids.tolist()
        assert [v for _, v in lp.top] == pytest.approx(top_values.tolist(), abs=1e-6)
    greedy = step.logprobs[3]
    assert greedy.top[0] == (greedy.token, greedy.logprob)  # argmax is the likeliest


def test_asking_for_logprobs_does_not_change_the_text(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("lstm", num_hiddens=24)
    prefix = char_tokenizer.encode("time traveller ").ids
    plain = [SamplingParams(seed=s, top_k=4, max_new_tokens=30) for s in range(6)]
    asking = [replace(p, logprobs=s % 3 if s % 2 else None) for s, p in enumerate(plain)]
    a = generate(model, prefix, plain, char_tokenizer.detokenizer)
    b = generate(model, prefix, asking, char_tokenizer.detokenizer)
    assert [t.text for t in a] == [t.text for t in b]


def test_generated_logprobs_equal_scoring_the_text(char_tokenizer: Tokenizer) -> None:
    model = tiny_lm("gru", num_hiddens=32)
    prefix = char_tokenizer.encode("the time ").ids
    batch = DecodeBatch(model)
    batch.add(prefix, [SamplingParams(seed=9, logprobs=2), SamplingParams(seed=4)])
    ids, logprobs = list(prefix), []
    for step_no in range(25):
        step = batch.sample()
        ids.append(int(step.tokens[0]))
        logprobs.append(step.logprobs[0].logprob)
        tokens = step.tokens
        if step_no == 5:  # the other row leaves; the asking row keeps asking
            batch.keep(torch.tensor([0]))
            tokens = tokens[:1]
        batch.feed(tokens)
    scored = score_ids(model, ids, len(prefix), return_logprobs=True)
    assert logprobs == pytest.approx(scored.token_logprobs, abs=1e-5)
