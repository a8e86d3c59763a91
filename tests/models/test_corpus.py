import hashlib
import itertools
from pathlib import Path

import pytest

from models import corpus
from models.corpus import CorpusError, CorpusSource, read_chunks, resolve_corpus
from models.text import TextError


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


@pytest.mark.parametrize("chunk_bytes", [7, 64, 1 << 20])
def test_read_chunks_join_to_the_file_and_end_at_line_ends(tmp_path, chunk_bytes) -> None:
    text = "première ligne\n東京 second line\n\nno newline at the end: café"
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(read_chunks(path, "strict", chunk_bytes))
    assert "".join(chunks) == text
    if chunk_bytes > 64:  # longer than any line: every chunk ends at a line end
        assert all(c.endswith("\n") for c in chunks[:-1])


def test_read_chunks_cut_a_long_line_mid_word_or_at_a_character(tmp_path) -> None:
    path = tmp_path / "long.txt"
    text = "word " * 50 + "é" * 40
    path.write_text(text, encoding="utf-8")
    chunks = list(read_chunks(path, "strict", 16))
    assert "".join(chunks) == text and len(chunks) > 5
    for a, b in itertools.pairwise(chunks):  # a seam never splits a space off a word
        assert (a[-1].isalnum() and b[0].isalnum()) or not a[-1].isascii()


def test_read_chunks_name_the_file_offset_of_bad_utf8(tmp_path) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(b"line one\n" * 3 + b"ok \xff")
    with pytest.raises(TextError, match="byte offset 30") as err:
        list(read_chunks(path, "strict", 8))
    assert err.value.offset == 30
    kept = "".join(read_chunks(path, "surrogateescape", 8))
    assert kept.encode("utf-8", "surrogateescape") == path.read_bytes()
    assert "".join(read_chunks(path, "replace", 8)).endswith("ok \ufffd")
