"""Where the book's corpus (The Time Machine) is on a developer's or CI machine.

The same order as the service and the training CLI: `RNNLM_DATA_DIR`, then the cache of
earlier downloads (`RNNLM_CACHE_DIR`, default ~/.cache/rnnlm), then a download checked
against the book's sha1. The tests and benchmarks only look (they never need the network);
`make book` (run by `make test`) is the step that may download, and it never fails: offline,
it says what is missing and the tests that need the book skip, naming it.

    python -m scripts.book             # print the book's path, downloading it if needed
    python -m scripts.book --require   # the same, but exit 1 when it cannot be had
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from models.corpus import BUILTIN, CorpusError, resolve_corpus

NAME = "timemachine"
SUPPLY = (
    f"to supply it, set RNNLM_DATA_DIR=DIR, a directory holding {BUILTIN[NAME].filename} "
    f"(sha1 {BUILTIN[NAME].sha1}), or run `make book` with internet access to download it "
    "into the cache"
)


def data_dir() -> Path | None:
    value = os.environ.get("RNNLM_DATA_DIR")
    return Path(value) if value else None


def cache_dir() -> Path:
    return Path(os.environ.get("RNNLM_CACHE_DIR") or Path.home() / ".cache" / "rnnlm")


def find_book(download: bool = False, timeout: float = 20.0) -> Path:
    """The verified local copy of the book.

    Raises:
        CorpusError: not in the data dir nor the cache (and not downloaded), or a bad sha1.
    """
    return resolve_corpus(NAME, data_dir(), cache_dir(), allow_download=download, timeout=timeout)


def missing_reason() -> str | None:
    """None when the book is here; otherwise what is missing and how to supply it."""
    try:
        find_book()
    except CorpusError as exc:
        return f"needs the book's corpus: {exc}; {SUPPLY}"
    return None


def main(argv: list[str] | None = None) -> int:
    required = "--require" in (sys.argv[1:] if argv is None else argv)
    try:
        print(f"book: {find_book(download=True)}")
    except CorpusError as exc:
        if required:
            print(f"book: not available: {exc}; {SUPPLY}.", file=sys.stderr)
            return 1
        print(f"book: not available: {exc}.\nThe tests that need it will skip; {SUPPLY}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
