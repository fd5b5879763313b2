"""The storage URL, parsed once: :class:`StorageURL`.

A study lives behind one URL: a SQLAlchemy URL (``sqlite:///vae_search.db``,
``postgresql+psycopg://user@host/db``) or ``grpc://host:port``, Optuna's gRPC storage proxy
(``vae-search serve``). The command line parses ``--storage`` into a :class:`StorageURL`
(:func:`vae_search.cli.add_storage_args`) and everything downstream reads its fields: the form
safe to print, the proxy's address, the SQLite file. A malformed URL is one
:class:`StorageError`, raised where it is parsed.

Passwords are never printed: :attr:`StorageURL.masked` is also what ``str()`` and ``repr()``
show; :func:`mask_url` hides them in any text (an error message may quote a URL).
Importing this module imports neither SQLAlchemy nor Optuna.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_PROXY_PORT", "DEFAULT_STORAGE", "PROXY_SCHEME", "StorageError", "StorageURL",
           "mask_url"]

DEFAULT_STORAGE = "sqlite:///vae_search.db"  # a file in the working directory
PROXY_SCHEME = "grpc"  # grpc://host:port: Optuna's gRPC storage proxy (vae-search serve)
DEFAULT_PROXY_PORT = 13000  # Optuna's own default for run_grpc_proxy_server
SUPPORTED_BACKENDS = ("sqlite", "postgresql")  # the databases the tests run on


class StorageError(RuntimeError):
    """The storage URL is invalid or the database cannot be used."""


def mask_url(text: str) -> str:
    """``text`` with any password replaced by ``***`` (safe to print or log).

    ``text`` may be a URL or any text quoting one (an error message).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Unparseable: still hide anything between "://user:" and "@".
        head, sep, rest = text.partition("://")
        if sep and "@" in rest:
            creds, _, host = rest.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{head}://{user}:***@{host}"
        # Not even a scheme: hide any "user:secret@" in it.
        return re.sub(r"([^\s:/@]+):[^\s@]*@", r"\1:***@", text)


@dataclass(frozen=True)
class StorageURL:
    """A storage URL and what the code needs to know about it, parsed once (:meth:`parse`).

    ``str()`` and ``repr()`` show :attr:`masked`; :attr:`text` (which may hold a password) is
    for the storage itself and for child processes, never for printing.
    """

    text: str = field(repr=False)  # as given: may hold a password
    backend: str  # "sqlite", "postgresql", ... or PROXY_SCHEME
    masked: str  # the URL with any password replaced by "***"
    proxy: tuple[str, int] | None = None  # the proxy's (host, port); None for a database
    sqlite_path: Path | None = None  # the SQLite file; None for other backends and in-memory

    @classmethod
    def parse(cls, text: str) -> StorageURL:
        """Parse a storage URL.

        Args:
            text: A SQLAlchemy URL, or ``grpc://host[:port]`` (port default
                :data:`DEFAULT_PROXY_PORT`) for the storage proxy.

        Raises:
            StorageError: not a URL, a database other than SQLite or PostgreSQL, or a proxy
                URL with no host, a bad port, or a path, a query or credentials in it.
        """
        if text.lower().startswith(f"{PROXY_SCHEME}://"):
            return cls(text, PROXY_SCHEME, mask_url(text), proxy=_proxy_address(text))
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(text)
        except (ArgumentError, ValueError):
            raise StorageError(
                f"malformed storage URL {mask_url(text)!r} (expected e.g. "
                f"{DEFAULT_STORAGE}, postgresql+psycopg://user@host/db or "
                f"{PROXY_SCHEME}://host:{DEFAULT_PROXY_PORT})"
            ) from None
        backend = parsed.get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            raise StorageError(
                f"storage {mask_url(text)!r}: {backend!r} is not supported; vae_search stores "
                f"studies in SQLite ({DEFAULT_STORAGE}), PostgreSQL "
                f"(postgresql+psycopg://user@host/db) or behind the storage proxy "
                f"({PROXY_SCHEME}://host:{DEFAULT_PROXY_PORT})")
        path = None
        if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)
        return cls(text, backend, parsed.render_as_string(hide_password=True), sqlite_path=path)

    @classmethod
    def of(cls, url: str | StorageURL) -> StorageURL:
        """``url`` itself, or parsed when it is text (for callers holding a plain string)."""
        return url if isinstance(url, StorageURL) else cls.parse(url)

    @property
    def in_memory(self) -> bool:
        """Whether this is an in-memory SQLite database (no other process can share it)."""
        return self.backend == "sqlite" and self.sqlite_path is None

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy (and Optuna's ``RDBStorage``): a database's, never a proxy's.

        Raises:
            StorageError: this is the proxy's URL.
        """
        if self.proxy is not None:
            raise StorageError(f"{self.masked} is the storage proxy, not a database URL")
        return self.text

    def __str__(self) -> str:
        return self.masked


def _proxy_address(text: str) -> tuple[str, int]:
    """``(host, port)`` of a ``grpc://host[:port]`` URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    try:
        port = DEFAULT_PROXY_PORT if parts.port is None else parts.port  # 0 is no port
    except ValueError:
        port = 0
    if not parts.hostname or not 0 < port < 65536 or parts.path.strip("/") or parts.query \
            or parts.username:
        raise StorageError(f"malformed proxy URL {mask_url(text)!r} (expected "
                           f"{PROXY_SCHEME}://host:port, e.g. "
                           f"{PROXY_SCHEME}://127.0.0.1:{DEFAULT_PROXY_PORT})")
    return parts.hostname, port
