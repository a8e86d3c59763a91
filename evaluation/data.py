"""Local evaluation data for lm-evaluation-harness: held-out text and a cloze task.

`python -m evaluation.data` writes two JSON-lines files beside the task files in
`evaluation/tasks/`, so `lm_eval --include_path evaluation/tasks` runs offline:

- `heldout.jsonl`: the corpus' held-out tail (the part training never saw: the last
  `val_frac` of the text after the rule's normalization, the split `python -m training lm`
  makes at the character level), cut at whitespace into documents of at most
  `max_chars` characters, one `{"text": ...}` a line.
  Short documents fit lm-eval's default window (`max_length` 2048), so each is scored
  with its whole context, as `/v1/perplexity` scores it.
- `cloze.jsonl`: multiple choice over the same text: `context` (some words), `choices`
  (the word that really follows and distractors of similar length from the same text, in
  a seeded random order) and `answer` (the index of the real word).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from models.corpus import CorpusError, read_corpus, resolve_corpus
from models.text import NORMALIZES, Normalize, TextRule

OUT = Path("evaluation") / "data"  # relative, as the task files name it: run from the root


def heldout_text(raw: str, val_frac: float = 0.1, normalize: Normalize = "book") -> str:
    """The normalized text's last `val_frac` of characters (training's validation split),
    less the word the split cuts through."""
    text = TextRule(normalize).apply_corpus(raw)
    tail = text[len(text) - round(len(text) * val_frac) :]
    cut = re.search(r"\s", tail)
    return tail[cut.end() :] if cut else ""


def documents(text: str, max_chars: int = 1500) -> list[str]:
    """`text` cut at whitespace into pieces of at most `max_chars` characters (a longer word
    is a piece of its own), each stripped; the text between pieces is kept as it is."""
    docs, current = [], ""
    for part in re.split(r"(?<=\s)(?=\S)", text):
        if current.strip() and len(current) + len(part.rstrip()) > max_chars:
            docs.append(current.strip())
            current = ""
        current += part
    if current.strip():
        docs.append(current.strip())
    return docs


def cloze_items(
    docs: Sequence[str], count: int, context_words: int = 12, n_choices: int = 4, seed: int = 0
) -> list[dict[str, object]]:
    """Up to `count` items: a context of words, the next word and distractors to pick from."""
    rng = random.Random(seed)
    words = [w for d in docs for w in d.split()]
    by_length: dict[int, list[str]] = {}
    for w in sorted(set(words)):
        by_length.setdefault(len(w), []).append(w)
    items: list[dict[str, object]] = []
    stride = max(1, (len(words) - context_words) // max(1, count))
    for i in range(context_words, len(words), stride):
        answer = words[i]
        pool = [
            w
            for n in (len(answer) - 1, len(answer), len(answer) + 1)
            for w in by_length.get(n, [])
            if w != answer
        ]
        if len(pool) < n_choices - 1:
            continue
        choices = [answer, *rng.sample(pool, n_choices - 1)]
        rng.shuffle(choices)
        context = " ".join(words[i - context_words : i])
        items.append({"context": context, "choices": choices, "answer": choices.index(answer)})
        if len(items) == count:
            break
    return items


def write_jsonl(path: Path, rows: Iterable[dict[str, object]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def write_tasks_data(
    raw: str, out: Path, val_frac: float = 0.1, cloze: int = 100, normalize: Normalize = "book"
) -> None:
    docs = documents(heldout_text(raw, val_frac, normalize))
    n_docs = write_jsonl(out / "heldout.jsonl", ({"text": d} for d in docs))
    n_items = write_jsonl(out / "cloze.jsonl", cloze_items(docs, cloze))
    print(f"{out / 'heldout.jsonl'}: {n_docs} documents, {sum(map(len, docs))} characters")
    print(f"{out / 'cloze.jsonl'}: {n_items} items")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.data",
        description="Write the local lm-eval task data (evaluation/data/*.jsonl).",
    )
    parser.add_argument("--corpus", default="timemachine", help="built-in name or a text file")
    parser.add_argument("--val-frac", type=float, default=0.1, help="held-out tail fraction")
    parser.add_argument("--cloze", type=int, default=100, help="multiple-choice items")
    parser.add_argument("--out", type=Path, default=OUT, help="where the .jsonl files go")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("RNNLM_DATA_DIR"),
        help="directory holding named corpora (env RNNLM_DATA_DIR)",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZES,
        default="book",
        help="the evaluated model's rule: book (cleaned text) or none (the text as it is)",
    )
    parser.add_argument("--no-download", action="store_true", help="never download a corpus")
    args = parser.parse_args(argv)
    cache = Path(os.environ.get("RNNLM_CACHE_DIR", Path.home() / ".cache" / "rnnlm"))
    try:
        path = resolve_corpus(args.corpus, args.data_dir, cache, not args.no_download)
        write_tasks_data(read_corpus(path), args.out, args.val_frac, args.cloze, args.normalize)
    except (CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
