"""Built-in corpora and how a corpus name or path resolves to a verified local file.

The service and the training CLI resolve named corpora the same way: the data directory
first, then a cache of earlier downloads, then (only when allowed) a download from the
book's address, checked against its sha1 before it is used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class CorpusError(Exception):
    """A corpus could not be found, fetched or verified; the message says which and why."""


@dataclass(frozen=True)
class CorpusSource:
    filename: str
    url: str
    sha1: str


BUILTIN: dict[str, CorpusSource] = {
    "timemachine": CorpusSource(
        filename="timemachine.txt",
        url="http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
        sha1="090b5e7e70c295757f55df93cb0a180b9691891a",
    ),
}

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, source: CorpusSource, name: str) -> Path:
    actual = sha1_of(path)
    if actual != source.sha1:
        raise CorpusError(
            f"corpus {name!r} at {path} has sha1 {actual}, expected {source.sha1}; "
            "refusing to use a file that is not the published corpus"
        )
    return path


def _download(source: CorpusSource, dest: Path, name: str, timeout: float) -> Path:
    """Fetch into a temporary sibling, verify, then rename: no half file is ever visible."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.url, timeout=timeout) as r:
            size = 0
            for block in iter(lambda: r.read(1 << 16), b""):
                size += len(block)
                if size > MAX_DOWNLOAD_BYTES:
                    raise CorpusError(f"download of {name!r} exceeds {MAX_DOWNLOAD_BYTES} bytes")
                out.write(block)
        _verified(tmp, source, name)
        os.replace(tmp, dest)
        return dest
    except OSError as exc:
        raise CorpusError(f"could not download corpus {name!r} from {source.url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def resolve_corpus(
    name_or_path: str,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    allow_download: bool = False,
    timeout: float = 30.0,
) -> Path:
    """Return the local file for a built-in corpus name or an existing path.

    Raises:
        CorpusError: unknown name, missing file, download not allowed or failed, bad sha1.
    """
    source = BUILTIN.get(name_or_path)
    if source is None:
        path = Path(name_or_path)
        if path.is_file():
            return path
        raise CorpusError(
            f"corpus {name_or_path!r} is neither a file nor a built-in name "
            f"(built-in: {', '.join(sorted(BUILTIN))})"
        )
    searched = []
    for folder in (data_dir, cache_dir):
        if folder is None:
            continue
        candidate = folder / source.filename
        searched.append(str(folder))
        if candidate.is_file():
            return _verified(candidate, source, name_or_path)
    if allow_download and cache_dir is not None:
        return _download(source, cache_dir / source.filename, name_or_path, timeout)
    where = ", ".join(searched) if searched else "no directory given"
    raise CorpusError(
        f"corpus {name_or_path!r} ({source.filename}) not found in {where}, "
        "and downloading is switched off"
    )


def read_corpus(path: Path) -> str:
    """Read a corpus file as UTF-8, replacing undecodable bytes (they are non-letters anyway)."""
    return path.read_text(encoding="utf-8", errors="replace")
