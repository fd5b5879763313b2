"""``vae-search serve`` (``python -m vae_search serve``): Optuna's gRPC storage proxy in front of
the study database, for many workers.

Workers started with ``--storage grpc://HOST:PORT`` talk to this process instead of the
database: the database sees this process's connection pool (``--threads`` + 1 connections)
however many workers there are. It runs :func:`optuna.storages.run_grpc_proxy_server` on the
database's storage (Optuna's cached RDB storage, as its docs advise), plus what the proxy lacks:

* heartbeats relayed by the workers become the trials' Optuna heartbeat rows, and a thread
  fails and re-queues the trials of workers that died (:mod:`vae_search.storage.heartbeat`), with
  ``--grace-period`` (more than the workers' ``--heartbeat-interval``) and ``--max-retry`` (the
  ``[run]`` settings' meaning and defaults);
* a clear start: an unreachable database, a port in use or a proxy URL as ``--storage`` is one
  line and exit status 2. SIGINT/SIGTERM stop it (exit 0); workers ride out a restart.

The proxy speaks plain, unauthenticated gRPC: it binds 127.0.0.1 unless ``--host`` says
otherwise; expose it on a private network only. ``report`` and ``dashboard`` may keep reading
the database directly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from vae_search.cli import (
    EXIT_OK,
    EXIT_USAGE,
    STORAGE_ENV,
    OneLineParser,
    add_storage_args,
    bounded_int,
    error_line,
    port_problem,
    positive_float,
)
from vae_search.config.schema import RunConfig
from vae_search.storage.connection import StorageError
from vae_search.storage.heartbeat import DEFAULT_REAP_EVERY
from vae_search.storage.url import DEFAULT_PROXY_PORT

__all__ = ["DEFAULT_HOST", "DEFAULT_THREADS", "build_parser", "free_port", "main", "spawn"]

DEFAULT_HOST = "127.0.0.1"  # plain gRPC without authentication: this machine unless told
DEFAULT_THREADS = 8  # request threads; the database sees one connection per thread (+1)


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def build_parser(prog: str = "vae-search serve") -> OneLineParser:
    run = RunConfig()
    parser = OneLineParser(
        prog=prog,
        description="Serve Optuna's gRPC storage proxy in front of the study database, so that "
        "many workers (--storage grpc://HOST:PORT) share a few database connections; fails "
        "and re-queues the trials of workers that die behind it.",
    )
    add_storage_args(parser, study_name_help=None,
                     what="SQLAlchemy URL of the study database (not a proxy)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=bounded_int(1, 65535, noun="a port number"),
                        default=DEFAULT_PROXY_PORT, help=f"port (default {DEFAULT_PROXY_PORT})")
    parser.add_argument("--threads", type=bounded_int(1, 256), default=DEFAULT_THREADS,
                        help="request threads, and database connections (+1) "
                        f"(default {DEFAULT_THREADS})")
    parser.add_argument("--grace-period", type=bounded_int(1), default=run.grace_period,
                        help="seconds without a heartbeat after which a running trial is "
                        "failed and re-queued; more than --heartbeat-interval (default "
                        f"{run.grace_period}, as run.grace_period)")
    parser.add_argument("--heartbeat-interval", type=bounded_int(1),
                        default=run.heartbeat_interval,
                        help="seconds between the workers' heartbeats, their "
                        f"run.heartbeat_interval (default {run.heartbeat_interval})")
    parser.add_argument("--max-retry", type=bounded_int(0), default=run.max_retry,
                        help=f"re-queue a trial at most this many times (default "
                        f"{run.max_retry}, as run.max_retry)")
    parser.add_argument("--reap-every", type=positive_float, default=DEFAULT_REAP_EVERY,
                        help="seconds between stale-trial checks (default "
                        f"{DEFAULT_REAP_EVERY:g})")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve(args: Any) -> int:
    """Open the database, start the stale-trial thread, serve until SIGINT/SIGTERM."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage

    from vae_search.storage.connection import make_storage, quiet_read_retries
    from vae_search.storage.heartbeat import StaleTrialReaper, report_stale_trials, served_storage

    if args.storage.proxy is not None:
        raise StorageError(f"--storage {args.storage.masked} is a proxy; serve needs the "
                           "database URL (e.g. postgresql+psycopg://user@host/db)")
    if problem := port_problem(args.host, args.port):
        raise StorageError(problem)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_read_retries()
    run = RunConfig(heartbeat_interval=args.heartbeat_interval,
                    grace_period=args.grace_period, max_retry=args.max_retry)
    backend = cast(RDBStorage, make_storage(args.storage, run=run, pool_size=args.threads + 1))
    report_stale_trials(backend, max_retry=args.max_retry, log=_log)
    storage = served_storage(backend)
    stop = threading.Event()
    reaper = threading.Thread(
        target=StaleTrialReaper(storage, every=args.reap_every, log=_log).run, args=(stop,),
        name="stale-trials", daemon=True,
    )
    pool = ThreadPoolExecutor(max_workers=args.threads, thread_name_prefix="proxy")

    def on_signal(signum: int, frame: Any) -> None:
        raise _Stop()

    saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        reaper.start()
        print(f"serving {args.storage.masked} at grpc://{args.host}:{args.port} "
              f"({args.threads} threads; a trial silent {args.grace_period} s is failed and "
              f"re-queued at most {args.max_retry} times)  (Ctrl-C to stop)", flush=True)
        with warnings.catch_warnings():  # experimental since Optuna 4.2
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(
                storage, host=args.host, port=args.port, thread_pool=pool
            )
    except _Stop:
        _log("stopped")
    except RuntimeError as exc:  # gRPC could not bind after all
        raise StorageError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for sig, previous in saved.items():
            signal.signal(sig, previous)
    return EXIT_OK


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now (for a proxy started by a test or the load test)."""
    with socket.create_server((host, 0)) as sock:
        return int(sock.getsockname()[1])


def spawn(
    storage: str, *, port: int, host: str = DEFAULT_HOST, extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None, timeout: float = 60.0, **popen: Any,
) -> subprocess.Popen:
    """Start ``python -m vae_search.storage.proxy`` in a child process; return once it answers.

    The database URL goes through ``$VAE_SEARCH_STORAGE``, never on a command line.

    Args:
        storage: The database URL.
        port: The port to serve on; ``host`` the address.
        extra: More ``serve`` arguments (``--grace-period 8``...).
        env: The child's environment (default: this process's).
        timeout: Seconds to wait for the proxy to answer.
        popen: Passed to :class:`subprocess.Popen` (``stdout``, ``stderr``...).

    Raises:
        StorageError: the proxy exited or did not answer in time (it is stopped).
    """
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    child_env = {**(os.environ if env is None else env), STORAGE_ENV: storage}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vae_search", "serve", "--host", host, "--port", str(port), *extra],
        env=child_env, **popen,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        client = optuna.storages.GrpcStorageProxy(host=host, port=port)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.wait_server_ready(timeout=1.0)
                return proc
            except ConnectionError:
                continue
    finally:
        client.close()
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)
    raise StorageError(f"the proxy on {host}:{port} did not start (exit status {proc.returncode})")


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the proxy; returns the exit status (0 when stopped, 2 on bad input)."""
    parser = build_parser(prog or "vae-search serve")
    args = parser.parse_args(argv)
    if args.grace_period <= args.heartbeat_interval:  # healthy trials would be failed
        parser.error(f"--grace-period: must exceed the workers' heartbeat interval "
                     f"(--heartbeat-interval, their run.heartbeat_interval: "
                     f"{args.heartbeat_interval} s), got {args.grace_period}")
    try:
        return serve(args)
    except StorageError as exc:
        if args.debug:
            raise
        print(error_line("vae_search", exc), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
