"""The bench's worker-level measurements, each in a fresh process: ``--help`` start-up, a
worker's peak RSS over consecutive trials, and the share of trial wall time spent in Optuna
storage calls (``vae-search bench`` prints them; it runs :func:`worker_run` in a child
via its hidden ``--worker`` flag).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vae_search.bench.timing import CallTimer

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_STUDY", "help_startup", "postgres_reachable", "spawn_worker",
    "worker_run",
]

DEFAULT_STUDY = "seed_mse"  # the storage share is measured on the default study (cli)

def help_startup(repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of ``python -m vae_search.run --help``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "vae_search.run", "--help"],
            check=True, stdout=subprocess.DEVNULL,
        )
        best = min(best, time.perf_counter() - start)
    return best


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from ``/proc/self/status``.

    ``VmHWM`` rather than ``getrusage``: Linux carries ``ru_maxrss`` across ``exec``, so a
    worker spawned by a big parent would report the parent's peak.
    """
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def worker_run(url: str, trials: list[int], epochs: int) -> dict[str, Any]:
    """One worker: run ``max(trials)`` trials of the default study (``seed_mse``; its own
    epochs when ``epochs`` is 0) through the trial loop ``vae-search run`` uses, one trial at
    a time, as a ``--workers`` child does (``--quiet``, no figures, no report at the end).

    Returns:
        Peak/current RSS after each count in ``trials``, wall time, storage seconds and calls.
    """
    from vae_search.cli import RunOptions
    from vae_search.engine.budget import BudgetGate
    from vae_search.engine.signals import SignalState
    from vae_search.engine.worker import prepare, train
    from vae_search.report import Progress
    from vae_search.run import resolve_config
    from vae_search.storage._optuna import study_storage
    from vae_search.storage.report_writer import ReportWriter
    from vae_search.trial import objective as objective_module

    name = f"bench-{os.getpid()}-{time.time_ns()}"
    argv = ["--study", DEFAULT_STUDY, "--storage", url, "--study-name", name, "--trials",
            str(max(trials)), "--workers", "1", "--worker-index", "0", "--population", "1",
            "--quiet", *(["--epochs", str(epochs)] if epochs else [])]
    options = RunOptions.parse(argv)
    config = resolve_config(options)
    dataset, study = prepare(options, config)
    timer = CallTimer(study_storage(study))
    # The objective's batched user-attr writes go to the storage's backend directly.
    objective_module.set_user_attrs = timer.wrap(
        "set_user_attrs (batched)", objective_module.set_user_attrs)
    # Waiting for the report thread (before a pruning check, at a trial's end) is storage time
    # on the training thread too.
    ReportWriter.flush = timer.wrap("waiting for the report thread", ReportWriter.flush)  # type: ignore[method-assign]
    ReportWriter.__exit__ = timer.wrap(  # type: ignore[method-assign]
        "waiting for the report thread", ReportWriter.__exit__)
    rss: dict[int, tuple[float, float]] = {}

    class Measured(Progress):
        """The run's (silent) progress bar, plus the RSS after the chosen trial counts."""

        def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            super().__call__(study, trial)
            if trial.number + 1 in trials:
                rss[trial.number + 1] = _rss_mb()

    start = time.perf_counter()
    train(study, config, dataset, options, SignalState(),
          gate=BudgetGate(options.trials, grace_period=config.run.grace_period),
          progress=Measured(study, options.trials, enabled=False), trials_left=options.trials)
    wall = time.perf_counter() - start
    pruned = sum(1 for t in study.trials if t.state.name == "PRUNED")
    epochs_run = sum(len(t.intermediate_values) for t in study.trials)
    if not url.startswith("sqlite"):
        import optuna

        optuna.delete_study(study_name=name, storage=url)
    return {
        "rss": {str(k): v for k, v in rss.items()},
        "wall": wall,
        "storage_s": timer.seconds,
        "storage_background_s": timer.background_seconds,
        "storage_calls": timer.calls,
        "storage_methods": sorted(([name, *row] for name, row in timer.by_method.items()),
                                  key=lambda r: -(r[1] + r[3])),
        "epochs": epochs_run,
        "study": config.name,
        "trials": max(trials),
        "pruned": pruned,
    }


def spawn_worker(url: str, trials: Sequence[int], epochs: int) -> dict[str, Any]:
    """:func:`worker_run` in a fresh process (so RSS is the worker's own)."""
    out = subprocess.run(
        [sys.executable, "-m", "vae_search.bench.command", "--worker", url,
         "--worker-trials", ",".join(map(str, trials)), "--worker-epochs", str(epochs)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def postgres_reachable(url: str) -> bool:
    """A TCP connect and one query (fails fast; no retries)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 2).close()
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception:  # noqa: BLE001 (any failure means: not available here)
        return False
    return True


