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


@pytest.mark.parametrize("text", ["mysql://u:secret@127.0.0.1/x", "oracle://u:x@h/x",
                                  "mssql+pyodbc://u:x@h/x"])
def test_databases_other_than_sqlite_and_postgresql_are_refused_at_parse(text):
    with pytest.raises(StorageError, match="is not supported") as raised:
        StorageURL.parse(text)
    assert "secret" not in str(raised.value)


def test_a_proxy_url_with_port_0_is_refused_not_taken_for_the_default():
    with pytest.raises(StorageError, match="malformed proxy URL 'grpc://127.0.0.1:0'"):
        StorageURL.parse("grpc://127.0.0.1:0")


@pytest.mark.parametrize("text", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_cannot_hold_a_study(text):
    from vae_search.storage.connection import make_storage

    with pytest.raises(StorageError, match="in-memory SQLite .* cannot hold a study"):
        make_storage(text)


def test_a_directory_is_not_a_sqlite_file(tmp_path):
    from vae_search.storage.connection import load_study, make_storage

    with pytest.raises(StorageError, match="it is a directory"):
        make_storage(f"sqlite:///{tmp_path}")
    with pytest.raises(StorageError, match="is a directory"):
        load_study(f"sqlite:///{tmp_path}", None)
