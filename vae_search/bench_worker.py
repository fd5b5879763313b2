"""The bench's worker-level measurements, each in a fresh process: ``--help`` start-up, a
worker's peak RSS over consecutive trials, and the share of trial wall time spent in Optuna
storage calls (``python -m vae_search.bench`` prints them; it runs :func:`worker_run` in a child
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

__all__ = ["help_startup", "postgres_reachable", "spawn_worker", "worker_run"]

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


class StorageTimer:
    """Time every outermost public method call on one storage object (instance patching)."""

    def __init__(self, storage: Any) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.by_method: dict[str, float] = {}
        self._depth = 0
        for name in dir(type(storage)):
            if name.startswith("_") or not callable(getattr(storage, name, None)):
                continue
            setattr(storage, name, self._wrap(name, getattr(storage, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.seconds += spent
                self.by_method[name] = self.by_method.get(name, 0.0) + spent
                self.calls += 1
                self._depth -= 1

        return timed


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
    """One worker: run ``max(trials)`` trials of the default study, as ``run`` does.

    Returns:
        Peak/current RSS after each count in ``trials``, wall time, storage seconds and calls.
    """
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    from vae_search._optuna import study_storage
    from vae_search.config import load_config
    from vae_search.objective import Objective
    from vae_search.storage import make_storage
    from vae_search.study import open_study

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config, _ = load_config("digits").with_epochs(epochs)
    name = f"bench-{os.getpid()}-{time.time_ns()}"
    study = open_study(config, make_storage(url, run=config.run), study_name=name)
    timer = StorageTimer(study_storage(study))
    rss: dict[int, tuple[float, float]] = {}

    def measure(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number + 1 in trials:
            rss[trial.number + 1] = _rss_mb()

    objective = Objective(config, worker="bench")
    start = time.perf_counter()
    study.optimize(objective, n_trials=max(trials), callbacks=[measure])
    wall = time.perf_counter() - start
    pruned = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
    if not url.startswith("sqlite"):
        optuna.delete_study(study_name=name, storage=url)
    return {
        "rss": {str(k): v for k, v in rss.items()},
        "wall": wall,
        "storage_s": timer.seconds,
        "storage_calls": timer.calls,
        "storage_top": sorted(timer.by_method.items(), key=lambda kv: -kv[1])[:3],
        "trials": max(trials),
        "pruned": pruned,
    }


def spawn_worker(url: str, trials: Sequence[int], epochs: int) -> dict[str, Any]:
    """:func:`worker_run` in a fresh process (so RSS is the worker's own)."""
    out = subprocess.run(
        [sys.executable, "-m", "vae_search.bench", "--worker", url,
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


