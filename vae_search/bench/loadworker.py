"""One simulated worker of the storage load test (:mod:`~vae_search.bench.loadtest` starts N).

A process without TensorFlow that does, against the storage, what a real worker does per trial:
the budget gate's reads (before asking and at the start), ask, four suggestions, the start
attrs, the heartbeat (Optuna's thread on a database, the relay behind the proxy), one
``trial.report`` per "epoch" (an epoch is a sleep of a few ms), the pruner's reads from
half-way (its answer is ignored, so every trial has the same length), the diagnostics attrs
and tell. Not simulated: the figure refresh every few trials. It waits at a file barrier until
every worker has started, times every storage call, and writes the numbers as JSON (also
when stopped by SIGTERM at the run's time limit).

``python -m vae_search.bench.loadworker`` takes the storage URL from ``$VAE_SEARCH_STORAGE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vae_search.bench.timing import CallTimer
from vae_search.cli import STORAGE_ENV

__all__ = ["HEARTBEAT_CALLS", "READY_TIMEOUT", "main", "simulate"]

READY_TIMEOUT = 300.0  # seconds for N processes to start and open the storage
HEARTBEAT_CALLS = ("record_heartbeat", "set_trial_system_attr")  # on a database / relayed


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout:.0f} s")
        time.sleep(0.02)


def simulate(args: argparse.Namespace) -> int:
    """Run the trials of one simulated worker; write its measurements to ``args.out``."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    from vae_search.config.schema import RunConfig
    from vae_search.storage._optuna import set_user_attrs, study_storage, trial_id
    from vae_search.storage.connection import make_storage
    from vae_search.storage.heartbeat import Heartbeats

    warnings.simplefilter("ignore", ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = RunConfig()
    study = optuna.load_study(
        study_name=args.study, storage=make_storage(os.environ[STORAGE_ENV], run=run),
        sampler=optuna.samplers.RandomSampler(seed=args.index),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    storage = study_storage(study)
    calls = CallTimer(storage)  # heartbeats come from a thread: every_call() has them too
    heartbeats = Heartbeats(storage, run.heartbeat_interval)
    gate_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    epochs, pause = args.epochs, args.epoch_ms / 1e3

    def gate(study: optuna.Study, trial: Any = None) -> None:  # BudgetGate's read
        study.get_trials(deepcopy=False, states=gate_states)

    @contextlib.contextmanager
    def beating(trial: optuna.Trial) -> Iterator[None]:  # as the trial loop beats for a trial
        heartbeats.add(trial_id(trial))
        try:
            yield
        finally:
            heartbeats.discard(trial_id(trial))

    def attrs(trial: optuna.Trial, values: dict[str, Any]) -> None:
        start = time.perf_counter()  # its storage calls are timed on their own too
        set_user_attrs(trial, values)
        calls.add("user attrs (batch)", time.perf_counter() - start)

    def objective(trial: optuna.Trial) -> float:
        with beating(trial):
            gate(study)
            latent = trial.suggest_categorical("latent_dim", [2, 4, 8, 16])
            klstart = trial.suggest_int("klstart", 0, epochs // 2)
            trial.suggest_int("annealtime", 0, epochs // 2)
            trial.suggest_categorical("reduction", ["sum", "mean"])
            attrs(trial, {"seed": trial.number, "worker": f"sim#{args.index}",
                          "full_beta_epoch": klstart, "prune_from_epoch": epochs // 2,
                          "data": "simulated"})
            value = -100.0
            for epoch in range(epochs):
                time.sleep(pause)
                value = -100.0 + epoch + trial.number % 7
                trial.report(value, epoch)
                if epoch >= epochs // 2:
                    trial.should_prune()  # read as the pruner does; never acted on
            attrs(trial, {"active_units": latent // 2, "kl_per_dim": [0.5] * latent,
                          "unit_variances": [0.1] * latent, "kl_total": 3.0,
                          "collapsed_dims": 0, "mutual_info": 1.2, "recon": -90.0,
                          "collapsed": False, "history": {"epoch": list(range(epochs))},
                          "fail_reason": None})
        return value

    finished: list[int] = []

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished.append(trial.number)
        gate(study)

    def on_sigterm(signum: int, frame: Any) -> None:  # the run's time limit: stop, report
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stopped()

    barrier = Path(args.barrier)
    (barrier / f"ready-{args.index}").touch()
    _wait_for(barrier / "go", READY_TIMEOUT)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.time()
    try:
        gate(study)
        study.optimize(objective, timeout=args.duration, callbacks=[after_trial])
    except _Stopped:
        pass
    ended = time.time()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ms = {name: [round(s * 1e3, 3) for s in seconds]
          for name, seconds in calls.every_call().items()}
    for name in HEARTBEAT_CALLS:
        ms.setdefault("heartbeat", []).extend(ms.pop(name, []))
    result = {"index": args.index, "start": started, "end": ended, "trials": len(finished),
              "tensorflow": "tensorflow" in sys.modules, "ms": ms}
    Path(args.out).write_text(json.dumps(result))
    return 0


class _Stopped(Exception):
    """The load test's time limit: a simulated worker stops and reports what it did."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae_search.bench.loadworker")
    for name in ("--study", "--barrier", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--epoch-ms", type=float, required=True)
    return simulate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
