"""The token file: one streaming pass gives the very ids an in-memory run trains on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.text import TextRule
from tests.conftest import ROOT, TINY_TEXT
from training.cli import main
from training.config import DataConfig
from training.data import load_tokens, token_file_dir
from training.tokens import build_token_file, open_token_file

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


RSS_SCRIPT = """
import resource, sys
from pathlib import Path
from training.cli import main
code = main(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def run_child(corpus: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`python -m training lm` on `corpus` in a child whose in-memory limit is lowered, so
    both splits are read from the token file (as a corpus of gigabytes would be)."""
    flags = [
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
    script = RSS_SCRIPT.replace(
        "from training.cli import main",
        "import training.loop as loop\nloop.IN_MEMORY_TOKENS = 1000\n"
        "loop.VAL_PIECE_TOKENS = 1 << 12\nfrom training.cli import main",
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return run, int(run.stdout.split("PEAK_RSS_KB")[1].split()[0])


def test_training_memory_does_not_grow_with_the_corpus_and_resume_works(tmp_path: Path) -> None:
    """The same run on a 1 MB and on a 9 MB corpus: the peak RSS barely moves (in memory,
    the larger would need > 64 MB more for its int64 ids alone, plus the text and a list
    of 8M one-character strings)."""
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    write_big_corpus(small, 1)
    write_big_corpus(large, 9)
    _, small_kb = run_child(small, tmp_path / "small-lm", "--epochs", "1")
    _, large_kb = run_child(large, tmp_path / "large-lm", "--epochs", "1")
    assert large_kb - small_kb < 40_000, (small_kb, large_kb)
    tokens = open_token_file(token_file_dir(tmp_path / "large-lm"))
    assert tokens.n_tokens > 9_000_000 and tokens.train_end == 20_000
    run, _ = run_child(small, tmp_path / "small-lm", "--epochs", "2", "--resume")
    assert "resuming" in run.stderr
    metrics = json.loads((tmp_path / "small-lm" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["epochs"][1]["val_ppl"] > 1
