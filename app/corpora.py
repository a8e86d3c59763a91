"""Named corpora: every `NAME.txt` in the data dir, and the built-in book.

A name is only ever looked up among the listed files (models/corpus.py), never joined to
a path as given. A corpus' n-gram counts (up to the largest n, per level) are computed on
first use and kept while the file is unchanged (the few most recent); posted texts and
uploaded files are counted per request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.errors import NotFound
from app.settings import Settings
from models.corpus import BUILTIN, CorpusError, corpus_files, resolve_corpus
from models.ngrams import MAX_N, NgramCounter, NgramLevel, count_file
from models.text import clean

KEPT_COUNTERS = 8


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    source: Literal["data_dir", "builtin"]
    size: int | None  # bytes; None for a built-in corpus not fetched yet
    sha256: str | None


log = logging.getLogger(__name__)


class CorpusCounts:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._counts: OrderedDict[tuple[Path, int, int, NgramLevel], NgramCounter] = OrderedDict()
        self._hashes: dict[tuple[Path, int, int], str] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(set(BUILTIN) | set(corpus_files(self.settings.data_dir)))

    def path(self, name: str) -> Path:
        """The file of a named corpus; 404 listing the known names otherwise."""
        files = corpus_files(self.settings.data_dir)
        if name in files:
            return files[name].path
        if name not in BUILTIN:
            raise NotFound(
                f"corpus {name!r} is unknown; named corpora: {', '.join(self.names())}",
                param="corpus",
                code="corpus_not_found",
            )
        try:
            return resolve_corpus(
                name,
                self.settings.data_dir,
                self.settings.cache_dir,
                allow_download=self.settings.allow_download,
            )
        except CorpusError as exc:
            log.warning("corpus %r not found: %s", name, exc)  # where it looked: for the operator
            raise NotFound(
                f"corpus {name!r} is not available on this server: its operator can set "
                "RNNLM_DATA_DIR to a directory holding it, or allow its download "
                "(RNNLM_ALLOW_DOWNLOAD)",
                param="corpus",
                code="corpus_not_found",
            ) from exc

    def _local_builtin(self, name: str) -> Path | None:
        for folder in (self.settings.data_dir, self.settings.cache_dir):
            if folder is not None and (folder / BUILTIN[name].filename).is_file():
                return folder / BUILTIN[name].filename
        return None

    def sha256(self, path: Path) -> str:
        """Blocking. Hashed once per file version (path, size, mtime)."""
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._hashes.get(key)
        if cached is None:
            with path.open("rb") as f:
                cached = hashlib.file_digest(f, "sha256").hexdigest()
            with self._lock:
                self._hashes[key] = cached
        return cached

    def listing(self) -> list[CorpusInfo]:
        """Blocking (hashes new files): every named corpus with its size and sha256."""
        out = [
            CorpusInfo(f.name, "data_dir", f.size, self.sha256(f.path))
            for f in corpus_files(self.settings.data_dir).values()
        ]
        listed = {c.name for c in out}
        for name in sorted(set(BUILTIN) - listed):
            local = self._local_builtin(name)
            size, digest = (local.stat().st_size, self.sha256(local)) if local else (None, None)
            out.append(CorpusInfo(name, "builtin", size, digest))
        return sorted(out, key=lambda c: c.name)

    def counts(self, name: str, level: NgramLevel) -> NgramCounter:
        """Blocking: call from a worker thread. Counted once per file version and level."""
        path = self.path(name)
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns, level)
        with self._lock:
            if key in self._counts:
                self._counts.move_to_end(key)
                return self._counts[key]
        counter = count_file(path, level, MAX_N)
        with self._lock:
            self._counts[key] = counter
            while len(self._counts) > KEPT_COUNTERS:
                self._counts.popitem(last=False)
        return counter


def count_text(text: str, level: NgramLevel, max_n: int) -> NgramCounter:
    counter = NgramCounter(level, max_n)
    counter.update(clean(text).strip())
    return counter
