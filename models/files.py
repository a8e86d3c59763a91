"""Files on disk: content digests and directories that appear whole or not at all.

Bundles and the training resume state are directories of several files that must never be
seen half written; corpora and bundle files are verified by their digests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

# A name that may become one path component: bundle directories and named corpora.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def is_valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.fullmatch(name))


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (hashlib reads it in blocks: corpora can be large)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_dir_atomically(path: Path, files: dict[str, bytes]) -> None:
    """Write a directory of files so that `path` shows either its old or its new contents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide a bundle from a service run as another user
    try:
        for fname, data in files.items():
            _write(tmp / fname, data)
        _swap_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Make `tmp` appear at `path` in one step; afterwards `tmp` holds the old directory, if any."""
    if not path.exists():
        os.rename(tmp, path)
    elif not _exchange(tmp, path):
        # No atomic exchange on this system: a crash between these renames leaves the
        # previous directory at `.<name>.old` for the user to restore by hand.
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE): swap two directories atomically."""
    libc_name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return bool(ok)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
