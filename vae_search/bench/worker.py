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
from typing import Any

from vae_search.bench.timing import CallTimer

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
    epochs when ``epochs`` is 0), as ``run`` does.

    Returns:
        Peak/current RSS after each count in ``trials``, wall time, storage seconds and calls.
    """
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    from vae_search.config.schema import load_config
    from vae_search.engine.study import open_study
    from vae_search.storage._optuna import study_storage
    from vae_search.storage.connection import make_storage
    from vae_search.trial import objective as objective_module
    from vae_search.trial.objective import Objective

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(DEFAULT_STUDY)
    if epochs:
        config, _ = config.with_epochs(epochs)
    name = f"bench-{os.getpid()}-{time.time_ns()}"
    study = open_study(config, make_storage(url, run=config.run), study_name=name)
    timer = CallTimer(study_storage(study))
    # The objective's batched user-attr writes go to the storage's backend directly.
    objective_module.set_user_attrs = timer.wrap(
        "set_user_attrs (batched)", objective_module.set_user_attrs)
    # Waiting for the report thread (before a pruning check, at a trial's end) is storage time
    # on the training thread too.
    from vae_search.storage.report_writer import ReportWriter

    ReportWriter.flush = timer.wrap("waiting for the report thread", ReportWriter.flush)  # type: ignore[method-assign]
    ReportWriter.__exit__ = timer.wrap(  # type: ignore[method-assign]
        "waiting for the report thread", ReportWriter.__exit__)
    rss: dict[int, tuple[float, float]] = {}

    def measure(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number + 1 in trials:
            rss[trial.number + 1] = _rss_mb()

    objective = Objective(config, worker="bench")
    start = time.perf_counter()
    study.optimize(objective, n_trials=max(trials), callbacks=[measure])
    wall = time.perf_counter() - start
    pruned = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    epochs_run = sum(len(t.intermediate_values) for t in study.trials)
    if not url.startswith("sqlite"):
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


