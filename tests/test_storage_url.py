"""The storage URL, parsed once: what each kind of URL tells the rest of the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from vae_search.storage.url import DEFAULT_PROXY_PORT, StorageError, StorageURL


def test_a_sqlite_file():
    url = StorageURL.parse("sqlite:///runs/vae_search.db")
    assert (url.backend, url.sqlite_path, url.proxy) == ("sqlite", Path("runs/vae_search.db"), None)
    assert not url.in_memory and url.sqlalchemy_url == url.text == url.masked


@pytest.mark.parametrize("text", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite(text):
    url = StorageURL.parse(text)
    assert url.in_memory and url.sqlite_path is None


def test_a_database_server():
    url = StorageURL.parse("postgresql+psycopg://alice:pw@db:5432/opt")
    assert (url.backend, url.sqlite_path, url.proxy, url.in_memory) == (
        "postgresql", None, None, False)
    assert url.sqlalchemy_url == url.text
    assert url.masked == "postgresql+psycopg://alice:***@db:5432/opt"


def test_the_proxy():
    url = StorageURL.parse("grpc://proxy")
    assert (url.backend, url.sqlite_path) == ("grpc", None)
    assert url.proxy == ("proxy", DEFAULT_PROXY_PORT)
    with pytest.raises(StorageError, match="not a database URL"):
        assert url.sqlalchemy_url


@pytest.mark.parametrize("text", ["not a url", "", "://"])
def test_a_malformed_url_is_one_storage_error(text):
    with pytest.raises(StorageError, match="malformed storage URL"):
        StorageURL.parse(text)


def test_of_parses_text_and_keeps_a_parsed_url():
    url = StorageURL.parse("sqlite:///a.db")
    assert StorageURL.of(url) is url and StorageURL.of("sqlite:///a.db") == url
