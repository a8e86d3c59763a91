"""Named corpora from the data dir: listing, n-grams and plots by name, name safety;
n-grams of an uploaded file."""

import hashlib
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import assert_error, make_settings, png_size, wait_ready

NOTES = "The cat sat on the mat.\nThe cat ate the rat.\n"


@pytest.fixture(scope="module")
def corpora_client(checkpoint_dir: Path, tmp_path_factory) -> TestClient:
    data = tmp_path_factory.mktemp("data")
    (data / "notes.txt").write_text(NOTES)
    (data / "Diary_2024.txt").write_text("dear diary, today the cat sat.\n")
    (data / "skipped.md").write_text("not a corpus")
    outside = data.parent / "secret.txt"
    outside.write_text("secret words outside the data dir")
    os.symlink(outside, data / "escape.txt")  # points out of the directory: never served
    os.symlink(data / "notes.txt", data / "alias.txt")  # stays inside: served
    settings = make_settings(checkpoint_dir, data_dir=data, max_body_bytes=4 << 20)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def test_corpora_lists_the_data_dirs_text_files_with_size_and_sha256(corpora_client) -> None:
    listing = {c["name"]: c for c in corpora_client.get("/v1/corpora").json()["data"]}
    assert set(listing) == {"alias", "Diary_2024", "notes", "timemachine"}
    notes = listing["notes"]
    assert notes["source"] == "data_dir" and notes["size"] == len(NOTES.encode())
    assert notes["sha256"] == hashlib.sha256(NOTES.encode()).hexdigest()
    assert listing["timemachine"]["source"] == "builtin"


def test_a_named_corpus_counts_and_plots(corpora_client) -> None:
    body = corpora_client.post("/v1/ngrams", json={"corpus": "notes", "n": [1, 2], "top_k": 2})
    assert body.status_code == 200, body.text
    tables = body.json()["tables"]
    assert tables[0]["entries"][0] == {"tokens": ["the"], "count": 4, "frequency": 4 / 11}
    assert tables[1]["entries"][0]["tokens"] == ["the", "cat"]
    plot = corpora_client.get("/v1/ngrams/plot", params={"corpus": "Diary_2024", "n": [1]})
    assert plot.status_code == 200 and png_size(plot.content) == (640, 480)


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "notes/../notes", "..", ".hidden"])
def test_names_with_path_characters_are_refused(corpora_client, name) -> None:
    assert_error(corpora_client.post("/v1/ngrams", json={"corpus": name}), 422, "corpus")
    assert_error(corpora_client.get("/v1/ngrams/plot", params={"corpus": name}), 422, "corpus")


def test_unknown_and_escaping_names_are_404_listing_the_known(corpora_client) -> None:
    for name in ("nope", "escape", "skipped"):
        error = assert_error(
            corpora_client.post("/v1/ngrams", json={"corpus": name}), 404, "corpus"
        )
        assert "notes" in error["message"] and "timemachine" in error["message"]
        assert "secret" not in error["message"]


def test_ngrams_of_an_uploaded_file_equal_the_same_text_posted(corpora_client) -> None:
    files = {"file": ("notes.txt", NOTES.encode(), "text/plain")}
    upload = corpora_client.post("/v1/ngrams", files=files, data={"n": "1,2", "top_k": "3"})
    assert upload.status_code == 200, upload.text
    posted = corpora_client.post("/v1/ngrams", json={"text": NOTES, "n": [1, 2], "top_k": 3})
    assert upload.json() == {**posted.json(), "source": "file"}
    repeated = corpora_client.post("/v1/ngrams", files=files, data={"n": ["2", "1"], "top_k": "3"})
    assert repeated.json() == upload.json()
    plot = corpora_client.post("/v1/ngrams/plot", files=files, data={"format": "svg"})
    assert plot.status_code == 200 and plot.content.lstrip().startswith(b"<?xml")


def test_ngram_upload_errors(corpora_client) -> None:
    def upload(data: bytes, **form):
        return corpora_client.post("/v1/ngrams", files={"file": ("f.txt", data)}, data=form)

    assert_error(upload(b"ok \xff"), 422, "file", "byte offset 3")
    assert_error(upload(b""), 422, "file", "empty")
    assert_error(upload(b"\n \n"), 422, "file", "whitespace")
    assert_error(upload(NOTES.encode(), n="9"), 422, "n.0")
    assert_error(upload(NOTES.encode(), level="bytes"), 422, "level")
