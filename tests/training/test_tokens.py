"""The token file: one streaming pass gives the very ids an in-memory run trains on."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.text import TextRule
from tests.conftest import ROOT, TINY_TEXT
from training import loop
from training.cli import main
from training.config import DataConfig
from training.data import load_tokens, token_file_dir
from training.tokens import TokenSpan, build_token_file, open_token_file

RAW = TINY_TEXT + "Naïve café, «quoted» 東京!\nThe end.\n" + "travel\nler and more lines\n" * 30


@pytest.mark.parametrize("normalize", ["book", "none"])
@pytest.mark.parametrize("level", ["char", "word", "byte"])
@pytest.mark.parametrize("line_join", ["space", "book"])
def test_token_file_equals_the_in_memory_tokens(tmp_path: Path, normalize, level, line_join):
    corpus = tmp_path / "c.txt"
    corpus.write_text(RAW, encoding="utf-8")
    data = DataConfig(
        corpus=str(corpus),
        normalize=normalize,
        level=level,
        line_join=line_join,
        min_freq=2,
        val_frac=0.2,
    )
    expected = load_tokens(data)
    rule = TextRule(normalize, level, line_join)
    tokens = build_token_file(
        corpus, rule, tmp_path / "tok", min_freq=2, val_frac=0.2, chunk_bytes=64
    )  # tiny chunks: every seam is exercised
    assert tokens.tokenizer == expected.tokenizer
    assert tokens.corpus_sha1 == expected.corpus_sha1
    assert tokens.n_train == len(expected.train_ids) and tokens.n_val == len(expected.val_ids)
    assert torch.equal(tokens.read(0, tokens.n_train), expected.train_ids)
    assert torch.equal(tokens.read(tokens.n_train, tokens.n_tokens), expected.val_ids)
    assert np.array_equal(
        np.asarray(tokens.array()), torch.cat([expected.train_ids, expected.val_ids]).numpy()
    )
    again = open_token_file(tmp_path / "tok")
    starts = [0, 5, tokens.n_tokens - 7]
    windows = again.windows(starts, 7)
    whole = torch.cat([expected.train_ids, expected.val_ids])
    assert torch.equal(windows, torch.stack([whole[s : s + 7] for s in starts]))
    assert not list((tmp_path / "tok").glob(".*"))  # no scratch file left


def tricky_corpus(distinct: int) -> str:
    """ASCII first (the one-byte scratch), then `distinct` other characters (past 256
    provisional ids the scratch is widened mid-file), decomposed accents (NFC), runs of
    non-letters and blank lines (the book's rule collapses them across chunk seams)."""
    others = "".join(chr(0x4E00 + i) for i in range(distinct))
    lines = [TINY_TEXT, "!!! ... ---   \n\n\n", "   ** 123 **\n"]
    lines += [f"line {i}: Cafe\u0301 na\u0308ive {others[i::7]} ÆØÅ «q» 💡\n" for i in range(7)]
    lines += ["end -- of -- text !!!\n", others[::-1] + "\n", "ascii tail again\n" * 4]
    return "".join(lines)


@pytest.mark.parametrize("normalize", ["book", "none"])
@pytest.mark.parametrize(("distinct", "min_freq"), [(20, 0), (300, 0), (300, 2)])
@pytest.mark.parametrize("chunk_bytes", [7, 64, 1 << 22])
def test_fast_char_path_equals_the_reference_rule(
    tmp_path: Path, normalize: str, distinct: int, min_freq: int, chunk_bytes: int
) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(tricky_corpus(distinct), encoding="utf-8")
    data = DataConfig(corpus=str(corpus), normalize=normalize, level="char", min_freq=min_freq)
    expected = load_tokens(data)
    rule = TextRule(normalize, "char")  # type: ignore[arg-type]
    tokens = build_token_file(
        corpus, rule, tmp_path / "tok", min_freq=min_freq, chunk_bytes=chunk_bytes
    )
    assert tokens.tokenizer == expected.tokenizer
    whole = torch.cat([expected.train_ids, expected.val_ids])
    assert torch.equal(tokens.read(0, tokens.n_tokens), whole)
    assert tokens.n_train == len(expected.train_ids)
    big = normalize == "none" and distinct == 300 and min_freq == 0
    assert tokens.dtype == (np.uint16 if big else np.uint8)  # both remap paths are used
    assert not list((tmp_path / "tok").glob(".*"))  # no scratch file left


def test_byte_level_keeps_invalid_utf8(tmp_path: Path) -> None:
    corpus = tmp_path / "b.bin"
    data = b"ok \xff\xfe caf\xc3\xa9\n" * 10
    corpus.write_bytes(data)
    tokens = build_token_file(corpus, TextRule("none", "byte"), tmp_path / "t", val_frac=0.1)
    assert bytes(tokens.read(0, tokens.n_tokens).tolist()) == data
    assert tokens.dtype == np.uint8


def test_a_corpus_smaller_than_one_batch_exits_2_with_the_sizes(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("the time machine\n" * 5)
    out = tmp_path / "small-lm"
    code = main(
        [
            "lm",
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--batch-size",
            "8",
            "--num-steps",
            "16",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "too short for one minibatch" in err and "needs 145 tokens" in err
    assert not out.exists()


def write_big_corpus(path: Path, megabytes: int) -> None:
    """Seeded shuffles of lines, with non-ASCII and punctuation, `megabytes` long."""
    rng = np.random.default_rng(0)
    lines = (TINY_TEXT + "Ça va? Ünïcödé «text», 1898!\n").splitlines() * 40
    with path.open("w", encoding="utf-8") as f:
        written = 0
        while written < megabytes << 20:
            block = "\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n"
            written += f.write(block)


# Both splits are read from the token file, as a corpus of gigabytes would be: the limits
# under which a split is held in memory, lowered (in the child and in this process alike).
LOW_LIMITS = {"IN_MEMORY_TOKENS": 1000, "VAL_PIECE_TOKENS": 1 << 12}

RSS_SCRIPT = """
import json, resource, sys
import training.loop as loop
for name, value in json.loads(sys.argv[1]).items():
    setattr(loop, name, value)
from training.cli import main
code = main(sys.argv[2:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def lm_flags(corpus: Path, out: Path, *extra: str) -> list[str]:
    """`python -m training lm` on `corpus`: a small GRU, 20,000 training tokens."""
    return [
        "lm",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--normalize",
        "none",
        "--level",
        "char",
        "--arch",
        "gru",
        "--num-hiddens",
        "16",
        "--batch-size",
        "8",
        "--num-steps",
        "16",
        "--val-frac",
        "0.002",
        "--max-tokens",
        "20000",
        "--device",
        "cpu",
        *extra,
    ]


def peak_rss(flags: list[str]) -> int:
    """The peak RSS (KB) of a fresh process running `training.cli.main(flags)` under
    `LOW_LIMITS`."""
    child = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, json.dumps(LOW_LIMITS), *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr
    return int(child.stdout.split("PEAK_RSS_KB")[1].split()[0])


@pytest.mark.system  # peak RSS of children: make test-system
def test_training_memory_does_not_grow_with_the_corpus_and_resume_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same run on a 1 MB and on a 9 MB corpus, each in a fresh process: the peak RSS
    barely moves (in memory, the larger would need > 64 MB more for its int64 ids alone,
    plus the text and a list of 8M one-character strings). Then the small run resumed for
    a second epoch, in this process, under the same limits."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_big_corpus(small, 1)
    write_big_corpus(large, 9)
    small_kb = peak_rss(lm_flags(small, tmp_path / "small-lm", "--epochs", "1"))
    large_kb = peak_rss(lm_flags(large, tmp_path / "large-lm", "--epochs", "1"))
    assert large_kb - small_kb < 40_000, (small_kb, large_kb)
    tokens = open_token_file(token_file_dir(tmp_path / "large-lm"))
    assert tokens.n_tokens > 9_000_000 and tokens.train_end == 20_000
    for name, value in LOW_LIMITS.items():
        monkeypatch.setattr(loop, name, value)
    splits = []
    real_split = loop._split

    def recorded(*args: Any) -> object:
        splits.append(real_split(*args))
        return splits[-1]

    monkeypatch.setattr(loop, "_split", recorded)
    with caplog.at_level(logging.INFO, logger="training"):
        assert main(lm_flags(small, tmp_path / "small-lm", "--epochs", "2", "--resume")) == 0
    assert any("resuming" in r.getMessage() for r in caplog.records)
    assert [type(s) for s in splits] == [TokenSpan, TokenSpan]  # both read from the file
    metrics = json.loads((tmp_path / "small-lm" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["epochs"][1]["val_ppl"] > 1
