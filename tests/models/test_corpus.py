import hashlib
from pathlib import Path

import pytest

from models import corpus
from models.corpus import CorpusError, CorpusSource, resolve_corpus


def test_named_corpus_resolves_in_the_data_dir(book_path: Path) -> None:
    assert resolve_corpus("timemachine", data_dir=book_path.parent) == book_path


def test_a_path_resolves_to_itself(tiny_corpus: Path) -> None:
    assert resolve_corpus(str(tiny_corpus)) == tiny_corpus


def test_unknown_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="neither a file nor a built-in name"):
        resolve_corpus("no-such-corpus", data_dir=tmp_path)
    with pytest.raises(CorpusError, match="downloading is switched off"):
        resolve_corpus("timemachine", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_wrong_checksum_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "timemachine.txt").write_text("not the book")
    with pytest.raises(CorpusError, match="sha1"):
        resolve_corpus("timemachine", data_dir=tmp_path)


def _fake_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: bytes, sha1: str) -> None:
    served = tmp_path / "served.txt"
    served.write_bytes(body)
    source = CorpusSource("fake.txt", served.as_uri(), sha1)
    monkeypatch.setitem(corpus.BUILTIN, "fake", source)


def test_download_is_verified_and_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    body = b"some text\n"
    _fake_source(monkeypatch, tmp_path, body, hashlib.sha1(body).hexdigest())
    cache = tmp_path / "cache"
    path = resolve_corpus("fake", cache_dir=cache, allow_download=True)
    assert path == cache / "fake.txt" and path.read_bytes() == body
    assert resolve_corpus("fake", cache_dir=cache) == path  # from the cache, no download


def test_download_with_bad_checksum_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_source(monkeypatch, tmp_path, b"tampered", "0" * 40)
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match="sha1"):
        resolve_corpus("fake", cache_dir=cache, allow_download=True)
    assert list(cache.iterdir()) == []
