"""Storage URL -> Optuna storage (SQLite by default, PostgreSQL, or the gRPC storage proxy).

* SQLite: WAL journal and a long busy timeout, so several local workers share one file.
* PostgreSQL (or any server): ``pool_pre_ping`` and a small pool per process.
* ``grpc://host:port``: Optuna's gRPC storage proxy (``vae-search serve``) in front of the
  database, for many workers (:class:`optuna.storages.GrpcStorageProxy`).
* Heartbeats on every RDB storage: a trial whose worker died is failed after the grace period
  and re-queued (bounded) by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`. Behind
  the proxy, workers relay their heartbeats through it (:mod:`vae_search.storage.heartbeat`).

:func:`make_storage` opens a storage to run trials in (creating it if needed);
:func:`open_storage` and :func:`load_study` open an existing one to read (report, dashboard).
They take the URL parsed once (:class:`~vae_search.storage.url.StorageURL`) or its text.
Passwords in URLs are never printed: show a URL's ``masked`` form, and :func:`error_reason`.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sqlite3
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from vae_search.config.schema import RunConfig
from vae_search.storage.url import (
    DEFAULT_STORAGE,
    PROXY_SCHEME,
    StorageError,
    StorageURL,
    mask_url,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SQLITE_BUSY_TIMEOUT",
    "StorageError",
    "error_reason",
    "in_chain",
    "is_storage_fault",
    "load_study",
    "make_storage",
    "open_storage",
    "quiet_read_retries",
    "storage_faults",
    "worker_seed",
]

SQLITE_BUSY_TIMEOUT = 60.0  # seconds a writer waits for the file lock before "database is locked"
CONNECT_ATTEMPTS = 4  # first try + retries with exponential backoff for a transient outage
CONNECT_BACKOFF = 1.0  # seconds before the first retry (doubles each time)
CREATE_ATTEMPTS = 8  # table creation racing other workers on a fresh database: retries
CREATE_BACKOFF = 0.2  # seconds (times a random factor in [1, 2)) between those retries
PROXY_CONNECT_TIMEOUT = 15.0  # seconds to wait for the proxy at start (it may be restarting)


def error_reason(exc: BaseException) -> str:
    """One line for a user: the innermost cause's first line (Optuna and SQLAlchemy wrap driver
    errors in vaguer ones), with any password masked. A gRPC error is its status and details
    (its text is a multi-line dump)."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        status = getattr(code(), "name", code())
        text = f"proxy: {status}: {details() or ''}".strip().rstrip(":")
    else:
        text = str(exc).strip()
    return mask_url(text.splitlines()[0] if text else type(exc).__name__)


def storage_faults() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the storage connection failed", not "the request was wrong":
    a lost database connection, or a gRPC call to the proxy that did not get through (the
    proxy is down or restarting, or its database is). Workers ride these out."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import DBAPIError

    faults: tuple[type[BaseException], ...] = (StorageInternalError, DBAPIError)
    try:
        import grpc
    except ImportError:  # pragma: no cover (grpcio is a dependency)
        return faults
    return (*faults, grpc.RpcError)


READ_RETRY = "Caught an error from sqlalchemy: "  # how Optuna's RDB read retry begins its line


class _OneLineReadRetry(logging.Filter):
    """Optuna's RDB storage retries a failed read of the trials with a plainer query, and logs
    the whole SQLAlchemy error (the SQL, its parameters, a link) on the way: a dropped
    connection shows as a dozen lines. This keeps the first line of the cause (masked)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith(READ_RETRY):
            cause = (text[len(READ_RETRY):].strip().splitlines() or [""])[0]
            if cause.startswith("(") and ") " in cause:  # "(psycopg.OperationalError) ..."
                cause = cause.split(") ", 1)[1]
            record.msg = f"reading the trials failed ({mask_url(cause)}); reading them again"
            record.args = ()
        return True


def quiet_read_retries() -> None:
    """Optuna's read retry (a lost connection mid-read) in one line (idempotent)."""
    logger = logging.getLogger("optuna.storages._rdb.storage")
    if not any(isinstance(f, _OneLineReadRetry) for f in logger.filters):
        logger.addFilter(_OneLineReadRetry())


def in_chain(exc: BaseException | None, types: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, is a ``types``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, types):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def is_storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, one of :func:`storage_faults`.

    Optuna's optimize loop can hide the fault: when storing a trial's result fails and so does
    its fallback read, it raises an unrelated ``UnboundLocalError`` from the fault.
    """
    return in_chain(exc, storage_faults())


def _connect_proxy(host: str, port: int, timeout: float) -> optuna.storages.BaseStorage:
    """A client of ``vae-search serve``, once the proxy answers (waits up to ``timeout`` s)."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():  # experimental since Optuna 4.2
        warnings.simplefilter("ignore", ExperimentalWarning)
        storage = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError:
        storage.close()
        raise StorageError(
            f"cannot reach the storage proxy at {PROXY_SCHEME}://{host}:{port} within "
            f"{timeout:.0f} s (is 'vae-search serve' running there?)"
        ) from None
    return storage


def _prepare_sqlite(path: Path) -> None:
    if path.is_dir():
        raise StorageError(f"cannot use {path} as the SQLite file: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise StorageError(f"cannot create SQLite file {path}: directory {parent} does not exist")
    target = path if path.exists() else parent
    import os

    if not os.access(target, os.W_OK):
        raise StorageError(f"cannot write SQLite file {path}: {target} is read-only")
    try:
        with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT) as conn:
            # WAL lets readers (the dashboard, other workers) run beside one writer. It is a
            # property of the file, so setting it once here covers every later connection.
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as exc:
        if "unable to open" in str(exc):
            raise StorageError(
                f"cannot open SQLite file {path}: the location is not writable ({exc})"
            ) from None
        raise StorageError(f"{path} is not a usable SQLite database: {exc}") from None


def _sqlite_synchronous_normal(storage: optuna.storages.RDBStorage) -> None:
    """``PRAGMA synchronous=NORMAL`` on every connection: with WAL, a commit no longer waits for
    an fsync (about half of a per-epoch ``trial.report``). SQLite's recommended WAL setting: the
    file stays consistent; only the last commits can be lost on a power failure, not a crash.
    """
    from sqlalchemy import event

    def normal(conn: sqlite3.Connection, _record: object) -> None:
        conn.execute("PRAGMA synchronous=NORMAL")

    event.listen(storage.engine, "connect", normal)
    storage.engine.dispose()  # connections opened while creating the tables get it too


def make_storage(
    url: str | StorageURL, *, run: RunConfig | None = None, heartbeat: bool = True,
    pool_size: int | None = None,
) -> optuna.storages.BaseStorage:
    """Open (creating tables if needed) the Optuna storage behind ``url``.

    Args:
        url: Any SQLAlchemy URL (parsed or as text), e.g. ``sqlite:///vae_search.db`` or
            ``postgresql+psycopg://user@host/db``, or ``grpc://host:port`` for the storage
            proxy (``vae-search serve``; the proxy owns the tables and the heartbeats).
        run: Heartbeat and retry settings (defaults when omitted).
        heartbeat: Turn heartbeats and stale-trial retries on.
        pool_size: Database connections kept per process (server URLs; default 2, plus 2
            more under load). The proxy keeps one per serving thread.

    Returns:
        The storage: an :class:`optuna.storages.RDBStorage`, or the proxy's client.

    Raises:
        StorageError: malformed URL, unknown driver, unreachable server (after bounded retries)
            or proxy, unwritable SQLite location, or a schema from an incompatible Optuna.
    """
    url = StorageURL.of(url)
    if url.proxy is not None:
        return _connect_proxy(*url.proxy, timeout=PROXY_CONNECT_TIMEOUT)
    if url.in_memory:  # Optuna opens a connection per call: each one a new, empty database
        raise StorageError("an in-memory SQLite (sqlite:// or sqlite:///:memory:) cannot hold a "
                           f"study; use a file, e.g. {DEFAULT_STORAGE}")
    return _make_rdb_storage(url, run=run, heartbeat=heartbeat, pool_size=pool_size)


def _make_rdb_storage(
    url: StorageURL, *, run: RunConfig | None, heartbeat: bool, pool_size: int | None
) -> optuna.storages.RDBStorage:
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from sqlalchemy.exc import (
        IntegrityError,
        NoSuchModuleError,
        OperationalError,
        ProgrammingError,
    )

    run = run or RunConfig()
    shown, backend = url.masked, url.backend
    engine_kwargs: dict = {}
    if backend == "sqlite":
        if url.sqlite_path is not None:
            _prepare_sqlite(url.sqlite_path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    else:
        engine_kwargs.update(pool_pre_ping=True, pool_size=pool_size or 2,
                             max_overflow=0 if pool_size else 2, pool_recycle=1800)
        if backend == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}

    kwargs: dict = {}
    if heartbeat:
        with warnings.catch_warnings():  # experimental in Optuna 5, and the one it recommends
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=run.max_retry)
        kwargs = dict(
            heartbeat_interval=run.heartbeat_interval,
            grace_period=run.grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    delay = CONNECT_BACKOFF
    attempt = create_attempt = 0
    while True:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url.sqlalchemy_url,
                                                     engine_kwargs=engine_kwargs, **kwargs)
            if backend == "sqlite":
                _sqlite_synchronous_normal(storage)
            return storage
        except NoSuchModuleError:
            raise StorageError(
                f"unknown database driver in {shown!r} (use sqlite:/// or postgresql+psycopg://)"
            ) from None
        except ModuleNotFoundError as exc:
            raise StorageError(f"database driver for {shown!r} is not installed: {exc}") from None
        except (IntegrityError, ProgrammingError) as exc:
            # Several workers creating Optuna's tables on a fresh PostgreSQL database at once:
            # CREATE TABLE / the version row collide ("duplicate key value violates unique
            # constraint pg_type_typname_nsp_index", "relation ... already exists"). The loser
            # retries and then finds the tables made by the winner.
            create_attempt += 1
            attempt -= 1
            if create_attempt >= CREATE_ATTEMPTS:
                raise StorageError(
                    f"cannot create the Optuna tables in {shown}: {error_reason(exc)}"
                ) from None
            time.sleep(CREATE_BACKOFF * (1.0 + random.random()))
        except OperationalError as exc:
            if attempt >= CONNECT_ATTEMPTS:
                raise StorageError(
                    f"cannot connect to {shown} after {attempt} attempts: {error_reason(exc)}"
                ) from None
            time.sleep(delay)
            delay *= 2
        except RuntimeError as exc:
            if "schema" in str(exc).lower() or "compatible" in str(exc).lower():
                raise StorageError(
                    f"{shown} was written by an incompatible Optuna version "
                    f"({str(exc).splitlines()[0]}); nothing was changed. If the database is "
                    "older than this Optuna, back it up and run 'optuna storage upgrade "
                    "--storage URL'; if it is newer, upgrade Optuna"
                ) from None
            raise


def open_storage(
    storage_url: str | StorageURL,
) -> tuple[optuna.storages.BaseStorage, list[str]]:
    """Open an existing storage (never creates a database or tables) and list its studies.

    Raises:
        StorageError: bad URL, missing SQLite file, or a database Optuna cannot read.
    """
    import optuna

    url = StorageURL.of(storage_url)
    if url.proxy is not None:
        proxy = _connect_proxy(*url.proxy, timeout=PROXY_CONNECT_TIMEOUT)
        return proxy, [s.study_name for s in proxy.get_all_studies()]
    shown, path = url.masked, url.sqlite_path
    if path is not None and path.is_dir():
        raise StorageError(f"no database at {shown} ({path} is a directory)")
    if path is not None and not path.is_file():
        raise StorageError(f"no database at {shown} (file {path} does not exist)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(url.sqlalchemy_url, skip_table_creation=True)
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as exc:  # unknown driver, refused connection, not an Optuna database...
        raise StorageError(f"cannot open storage {shown}: {error_reason(exc)}") from None
    return storage, names


def load_study(storage_url: str | StorageURL, study_name: str | None) -> optuna.Study:
    """Load an existing study (never creates one).

    Args:
        storage_url: SQLAlchemy URL or the proxy's (parsed or as text). A SQLite file must
            exist.
        study_name: The study; may be omitted when the storage holds exactly one.

    Raises:
        StorageError: bad URL, missing file, missing or ambiguous study.
    """
    import optuna

    url = StorageURL.of(storage_url)
    storage, names = open_storage(url)
    shown = url.masked
    if study_name is None:
        if len(names) != 1:
            raise StorageError(f"storage {shown} holds {len(names)} studies "
                               f"({', '.join(sorted(names)) or 'none'}); pass --study-name")
        study_name = names[0]
    if study_name not in names:
        raise StorageError(f"no study {study_name!r} in {shown} (studies: "
                           f"{', '.join(sorted(names)) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


def worker_seed(study_seed: int, identity: str) -> int:
    """A sampler seed for one worker: stable for a (study seed, worker identity) pair.

    Workers on one study must not share a sampler seed, or the random start-up phase would
    propose the same points in every worker. The identity is the pool index for ``--workers``
    children and ``host:pid`` for an independently started worker.

    Args:
        study_seed: The configuration's seed.
        identity: Any string unique among the study's workers.

    Returns:
        A seed in ``[0, 2**31 - 1)``.
    """
    digest = hashlib.sha256(f"{study_seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)
