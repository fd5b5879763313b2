"""``vae-search bench --storage-load`` (all knobs: ``python -m vae_search.bench.loadtest``):
the storage load of N workers on PostgreSQL, directly and through the gRPC storage proxy.

The workers are simulated (:mod:`vae_search.bench.loadworker`): processes without TensorFlow that
make a real worker's storage calls, with a sleep of a few ms per epoch. Every run gets a scratch
database (dropped afterwards), a hard time limit, and this machine only. The workers wait at a
barrier until all have started, so start-up is not measured. A direct run is refused when the
server has too few free connections for it (each direct worker keeps about two: its main
thread and its heartbeat thread) rather than starve the server's other users. Printed per run:
trials/s, the database connections in use (most seen), the load average, and the p50/p99
latency of each storage call, as seen by the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vae_search.bench.loadworker import READY_TIMEOUT
from vae_search.cli import STORAGE_ENV, OneLineParser, bounded_int, positive_float

__all__ = ["LoadSpec", "RunResult", "main", "run_load_test"]

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_WORKERS = (8, 32, 128)
QUICK_WORKERS = (4,)
DEFAULT_DURATION = 60.0  # seconds each worker starts trials for (after all have started)
QUICK_DURATION = 5.0
DEFAULT_EPOCHS = 10  # reports per trial
DEFAULT_EPOCH_MS = 5.0  # the "training" of one epoch
DEFAULT_PROXY_THREADS = 8
RUN_GRACE = 120.0  # seconds past the duration before every worker is stopped (SIGTERM)
STOP_TIMEOUT = 30.0  # seconds a stopped worker has to write its numbers
RESERVED_CONNECTIONS = 15  # left free for the server's other users
DIRECT_CONNECTIONS = 2  # a direct worker's pool in use: main thread + heartbeat thread
MODES = ("direct", "proxy")
SHOWN_CALLS = (  # storage calls in the table (label, method)
    ("report", "set_trial_intermediate_value"),
    ("read trials", "get_all_trials"),
    ("new trial", "create_new_trial"),
    ("param", "set_trial_param"),
    ("attrs", "user attrs (batch)"),
    ("tell", "set_trial_state_values"),
    ("heartbeat", "heartbeat"),
)


@dataclass(frozen=True)
class LoadSpec:
    """One load test: every N in ``workers``, each mode, each worker for ``duration`` s."""

    workers: tuple[int, ...] = DEFAULT_WORKERS
    duration: float = DEFAULT_DURATION
    epochs: int = DEFAULT_EPOCHS
    epoch_ms: float = DEFAULT_EPOCH_MS
    proxy_threads: int = DEFAULT_PROXY_THREADS


@dataclass
class RunResult:
    """What one run measured (or why it did not run)."""

    mode: str
    workers: int
    trials: int = 0
    wall: float = 0.0
    connections: int = 0  # most database connections seen at once
    load: float = 0.0  # 1-minute load average at the end
    latencies: dict[str, list[float]] = field(default_factory=dict)  # ms per call
    note: str = ""

    @property
    def rate(self) -> float:
        return self.trials / self.wall if self.wall > 0 else 0.0


# -- one run ---------------------------------------------------------------------------------


class Database:
    """A scratch database on the server, and the connection counts the runs need."""

    def __init__(self, admin_url: str) -> None:
        import sqlalchemy

        self.admin_url = admin_url
        self.admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT",
                                              pool_size=1, max_overflow=0)
        self.name = f"vae_search_load_{uuid.uuid4().hex[:10]}"
        self.url = sqlalchemy.make_url(admin_url).set(database=self.name).render_as_string(
            hide_password=False)

    def scalar(self, sql: str, **params: Any) -> Any:
        import sqlalchemy

        with self.admin.connect() as conn:
            result = conn.execute(sqlalchemy.text(sql), params)
            return result.scalar_one() if result.returns_rows else None

    def free_connections(self) -> int:
        limit = int(self.scalar("show max_connections"))
        reserved = int(self.scalar("show superuser_reserved_connections"))
        return limit - reserved - int(self.scalar("select count(*) from pg_stat_activity"))

    def connections(self) -> int:
        return int(self.scalar("select count(*) from pg_stat_activity where datname = :db",
                               db=self.name))

    def __enter__(self) -> Database:
        self.scalar(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        self.scalar(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.dispose()


def _needed_connections(mode: str, workers: int, spec: LoadSpec) -> int:
    return workers * DIRECT_CONNECTIONS if mode == "direct" else spec.proxy_threads + 1


def run_once(mode: str, workers: int, spec: LoadSpec, admin_url: str) -> RunResult:
    """One run: ``workers`` simulated workers on a scratch database, ``mode`` direct or proxy."""
    import optuna

    from vae_search.storage import proxy as serve
    from vae_search.storage.connection import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = RunResult(mode=mode, workers=workers)
    with Database(admin_url) as db, tempfile.TemporaryDirectory() as tmp:
        need, free = _needed_connections(mode, workers, spec), db.free_connections()
        if need > free - RESERVED_CONNECTIONS:
            result.note = (f"not run: needs about {need} connections, the server has {free} "
                           f"free (max_connections) and {RESERVED_CONNECTIONS} are left to others")
            return result
        storage = make_storage(db.url)  # the tables, and the study the workers join
        optuna.create_study(storage=storage, study_name="load", direction="maximize")
        storage.engine.dispose()  # type: ignore[attr-defined]
        procs: list[subprocess.Popen] = []
        proxy = None
        try:
            url = db.url
            if mode == "proxy":
                port = serve.free_port()
                with open(Path(tmp) / "serve.log", "w") as log:
                    proxy = serve.spawn(db.url, port=port, stdout=log, stderr=subprocess.STDOUT,
                                        extra=["--threads", str(spec.proxy_threads)])
                url = f"grpc://127.0.0.1:{port}"
            procs = _start_workers(url, workers, spec, Path(tmp))
            _measure(result, db, procs, workers, spec, Path(tmp))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            if proxy is not None:
                proxy.terminate()
                proxy.wait(timeout=30)
    return result


def _start_workers(url: str, workers: int, spec: LoadSpec, tmp: Path) -> list[subprocess.Popen]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, STORAGE_ENV: url,
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    procs = []
    for index in range(workers):
        argv = [sys.executable, "-m", "vae_search.bench.loadworker", "--index", str(index),
                "--study", "load", "--duration", str(spec.duration), "--epochs", str(spec.epochs),
                "--epoch-ms", str(spec.epoch_ms), "--barrier", str(tmp),
                "--out", str(tmp / f"worker-{index}.json")]
        with open(tmp / f"worker-{index}.log", "w") as log:
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _measure(result: RunResult, db: Database, procs: list[subprocess.Popen], workers: int,
             spec: LoadSpec, tmp: Path) -> None:
    """Release the barrier once every worker is ready, watch the run, collect the numbers."""
    deadline = time.monotonic() + READY_TIMEOUT
    while len(list(tmp.glob("ready-*"))) < workers:
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
            result.note = "not run: the workers did not all start (see their logs)"
            return
        time.sleep(0.2)
    (tmp / "go").touch()
    released = time.time()
    limit = spec.duration + RUN_GRACE
    deadline = time.monotonic() + limit
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        result.connections = max(result.connections, db.connections())
        time.sleep(0.5)
    result.load = os.getloadavg()[0]
    late = [p for p in procs if p.poll() is None]
    if late:  # the time limit: each stops and reports the trials it finished
        result.note = f"stopped at the {limit:.0f} s limit"
        for proc in late:
            proc.terminate()
        for proc in late:
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
    reports = [json.loads(p.read_text()) for p in sorted(tmp.glob("worker-*.json"))]
    if len(reports) < workers and not result.note:
        failed = next(p for p in procs if p.returncode)  # the first worker that failed
        log = (tmp / f"worker-{procs.index(failed)}.log").read_text().strip().splitlines()
        result.note = f"{workers - len(reports)} workers failed: {log[-1] if log else '?'}"
    if any(r["tensorflow"] for r in reports):
        raise RuntimeError("a simulated worker imported TensorFlow")
    result.trials = sum(r["trials"] for r in reports)
    result.wall = max((r["end"] for r in reports), default=released) - released
    for report in reports:
        for name, values in report["ms"].items():
            result.latencies.setdefault(name, []).extend(values)


# -- the command -----------------------------------------------------------------------------


def _percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"{cuts[49]:.1f}/{cuts[98]:.0f}"


def print_header(spec: LoadSpec) -> None:
    print(f"each worker starts trials of {spec.epochs} epochs ({spec.epoch_ms:g} ms each) for "
          f"{spec.duration:g} s; proxy: {spec.proxy_threads} threads; storage calls: p50/p99 "
          "ms as the workers see them")
    print(f"{'mode':<7}{'workers':>8}{'trials/s':>10}{'wall s':>8}{'db conns':>9}{'load':>6}  "
          + "  ".join(f"{label:>11}" for label, _ in SHOWN_CALLS), flush=True)


def print_row(r: RunResult) -> None:
    if r.note.startswith("not run"):
        print(f"{r.mode:<7}{r.workers:>8}  {r.note}", flush=True)
        return
    cells = "  ".join(f"{_percentiles(r.latencies.get(name, [])):>11}" for _, name in SHOWN_CALLS)
    print(f"{r.mode:<7}{r.workers:>8}{r.rate:>10.1f}{r.wall:>8.1f}{r.connections:>9}"
          f"{r.load:>6.1f}  {cells}" + (f"  ({r.note})" if r.note else ""), flush=True)


def print_results(results: Sequence[RunResult], spec: LoadSpec) -> None:
    """The table: a header, one line per run."""
    print_header(spec)
    for r in results:
        print_row(r)


def run_load_test(spec: LoadSpec, admin_url: str = DEFAULT_POSTGRES) -> list[RunResult]:
    """Every N in ``spec.workers``, directly and through the proxy; prints each run's line."""
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{os.cpu_count()} cores", flush=True)
    print_header(spec)
    results = []
    for workers in spec.workers:
        for mode in MODES:
            results.append(run_once(mode, workers, spec, admin_url))
            print_row(results[-1])
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    return results


def build_parser(prog: str = "python -m vae_search.bench.loadtest") -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help="a PostgreSQL URL whose user may create databases (a scratch "
                        f"database per run is made beside it; default {DEFAULT_POSTGRES})")
    parser.add_argument("--workers", default=",".join(map(str, DEFAULT_WORKERS)),
                        help="comma-separated numbers of simulated workers")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_WORKERS[0]} workers for {QUICK_DURATION:g} s (a smoke test)")
    parser.add_argument("--duration", type=positive_float, default=DEFAULT_DURATION,
                        help="seconds each worker starts new trials for, once all have started "
                        f"(default {DEFAULT_DURATION:g}); a run is stopped {RUN_GRACE:g} s "
                        "later at the latest")
    parser.add_argument("--epochs", type=bounded_int(1), default=DEFAULT_EPOCHS,
                        help=f"reports per trial (default {DEFAULT_EPOCHS})")
    parser.add_argument("--epoch-ms", type=positive_float, default=DEFAULT_EPOCH_MS,
                        help=f"milliseconds of each simulated epoch (default {DEFAULT_EPOCH_MS})")
    parser.add_argument("--proxy-threads", type=bounded_int(1, 256),
                        default=DEFAULT_PROXY_THREADS, help="the proxy's --threads")
    return parser


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    if args.quick:
        return LoadSpec(workers=QUICK_WORKERS, duration=QUICK_DURATION, epochs=3,
                        epoch_ms=args.epoch_ms, proxy_threads=args.proxy_threads)
    try:
        workers = tuple(int(n) for n in args.workers.split(","))
    except ValueError:
        workers = ()
    if not workers or min(workers) < 1:
        build_parser().error(f"--workers: expected numbers like 8,32,128, got {args.workers!r}")
    return LoadSpec(workers=workers, duration=args.duration, epochs=args.epochs,
                    epoch_ms=args.epoch_ms, proxy_threads=args.proxy_threads)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vae_search.storage.connection import StorageError, error_reason, is_storage_fault

    try:
        run_load_test(spec_from_args(args), args.postgres)
    except Exception as exc:  # the server refused or is unreachable: one line
        if not (isinstance(exc, (StorageError, OSError)) or is_storage_fault(exc)):
            raise
        print(f"vae_search: error: {error_reason(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
