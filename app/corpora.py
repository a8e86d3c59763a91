"""Named corpora for the n-gram routes: resolved as training resolves them, counted once.

A corpus' counts (up to the largest n, per level) are computed on first use and kept; the
book's tables are then a lookup. Posted texts are counted per request.
"""

from __future__ import annotations

import threading
from pathlib import Path

from app.errors import NotFound
from app.settings import Settings
from models.corpus import BUILTIN, CorpusError, resolve_corpus
from models.ngrams import MAX_N, NgramCounter, NgramLevel, count_file
from models.text import clean


class CorpusCounts:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._counts: dict[tuple[str, NgramLevel], NgramCounter] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        if name not in BUILTIN:
            raise NotFound(
                f"corpus {name!r} is unknown; named corpora: {', '.join(sorted(BUILTIN))}",
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
            raise NotFound(
                f"{exc} (data dir: {self.settings.data_dir})",
                param="corpus",
                code="corpus_not_found",
            ) from exc

    def counts(self, name: str, level: NgramLevel) -> NgramCounter:
        """Blocking: call from a worker thread. Counted once per (corpus, level)."""
        with self._lock:
            key = (name, level)
            if key not in self._counts:
                self._counts[key] = count_file(self.path(name), level, MAX_N)
            return self._counts[key]


def count_text(text: str, level: NgramLevel, max_n: int) -> NgramCounter:
    counter = NgramCounter(level, max_n)
    counter.update(clean(text).strip())
    return counter
