"""Built-in corpora and how a corpus name or path resolves to a verified local file.

The service and the training CLI resolve named corpora the same way: the data directory
first, then a cache of earlier downloads, then (only when allowed) a download from the
book's address, checked against its sha1 before it is used.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from models.files import file_digest
from models.text import TextError, TextRule


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


def _verified(path: Path, source: CorpusSource, name: str) -> Path:
    actual = file_digest(path, "sha1")
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


CORPUS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class CorpusFile:
    name: str
    path: Path
    size: int


def corpus_files(data_dir: Path | None) -> dict[str, CorpusFile]:
    """Every `NAME.txt` directly in `data_dir` that is a named corpus: a usable name, a
    regular file, and (through any symlink) inside the directory."""
    if data_dir is None or not data_dir.is_dir():
        return {}
    root = data_dir.resolve()
    found = {}
    for path in sorted(data_dir.glob("*.txt")):
        name = path.name[: -len(".txt")]
        if not CORPUS_NAME.fullmatch(name):
            continue
        real = path.resolve()
        if real.parent != root or not real.is_file():
            continue  # a symlink out of the directory (or to a non-file) is not served
        found[name] = CorpusFile(name, real, real.stat().st_size)
    return found


def corpus_file(data_dir: Path | None, name: str) -> CorpusFile:
    """The named corpus `name` in `data_dir`; the name never reaches the filesystem
    unchecked (it is looked up among the listed files, never joined to a path).

    Raises:
        CorpusError: a name with path characters, or no such corpus (listing the known).
    """
    if not CORPUS_NAME.fullmatch(name):
        raise CorpusError(
            f"corpus name {name!r} must match {CORPUS_NAME.pattern} (no paths, no '..')"
        )
    files = corpus_files(data_dir)
    if name not in files:
        known = ", ".join(sorted(files)) or "none"
        raise CorpusError(f"no corpus named {name!r} in the data dir (known: {known})")
    return files[name]


Decoding = Literal["strict", "replace", "surrogateescape"]
CHUNK_BYTES = 1 << 22
_MID_WORD = re.compile(rb"[A-Za-z0-9](?=[A-Za-z0-9])")


def _cut(block: bytes) -> int:
    """Where to end a chunk of a block: after its last newline; in a long line, between two
    ASCII letters or digits near its end (mid-word: no rule changes text across that
    seam); failing both, at a UTF-8 character boundary."""
    newline = block.rfind(b"\n")
    if newline >= 0:
        return newline + 1
    tail_start = max(0, len(block) - 65536)
    mid_word = [m.end() for m in _MID_WORD.finditer(block, tail_start)]
    if mid_word:
        return mid_word[-1]
    for i in range(len(block) - 1, max(0, len(block) - 4), -1):
        if block[i] & 0xC0 != 0x80:  # a lead byte: a character starts here
            return i
    return len(block)  # no character starts near the end: these bytes are not UTF-8 anyway


def read_chunks(
    path: Path,
    decoding: Decoding = "strict",
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[bytes], object] | None = None,
) -> Iterator[str]:
    """Stream a text file as decoded chunks of about `chunk_bytes`, each ending at a line
    end where the file has one, in bounded memory whatever the file's size.

    `strict` refuses bytes that are not UTF-8 (TextError naming the file's byte offset),
    `replace` reads them as U+FFFD, `surrogateescape` keeps them (the byte level).
    `on_bytes` sees every block as read (a digest of the file in the same single pass).
    """
    offset = 0  # file offset of `carry`'s first byte
    carry = b""
    with path.open("rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if on_bytes is not None and block:
                on_bytes(block)
            data = carry + block
            if not data:
                return
            cut = len(data) if not block else _cut(data)
            try:
                yield data[:cut].decode("utf-8", decoding)
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                raise TextError(
                    f"{path.name} is not UTF-8 at byte offset {at} (byte 0x{data[exc.start]:02X})",
                    offset=at,
                ) from exc
            offset += cut
            carry = data[cut:]


def read_corpus(path: Path, rule: TextRule | None = None) -> str:
    """Read a whole corpus file as its rule reads it (see `decoding_for`)."""
    return "".join(read_chunks(path, decoding_for(rule or TextRule())))


def decoding_for(rule: TextRule) -> Decoding:
    """How a rule reads a corpus file: the byte level keeps every byte; the book's rule
    reads undecodable bytes as U+FFFD (they are non-letters to it anyway); `none` at the
    char or word level needs UTF-8 (TextError naming the offset otherwise)."""
    if rule.level == "byte":
        return "surrogateescape"
    return "replace" if rule.normalize == "book" else "strict"
