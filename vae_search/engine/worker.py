"""One worker: from its options to the trial loop, and what a run starts and ends with.

:func:`prepare` is the one run-setup path (``run``, its ``--workers`` pool, ``confirm`` and the
Python API): the data, a ``model.builder`` check, Optuna's logging, and the study with this
worker's sampler seed, each a clear error before any trial exists. :func:`train` turns a
worker's options into the loop's parts (objective, slots, gate) and runs
:func:`~vae_search.engine.loop.run_trials`. :func:`run_worker` is ``vae-search run`` in this
process. Importing this module does not import TensorFlow or Optuna.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from vae_search.cli import RunOptions
from vae_search.config.schema import StudyConfig
from vae_search.engine.budget import BudgetGate
from vae_search.engine.signals import SignalState, worker_identity
from vae_search.report.rows import StateCounts
from vae_search.storage.connection import (
    error_reason,
    is_storage_fault,
    quiet_read_retries,
    worker_seed,
)

if TYPE_CHECKING:
    import optuna

    from vae_search.data.datasets import Dataset
    from vae_search.engine.loop import Gate
    from vae_search.report import Progress

__all__ = ["finish", "open_worker_study", "prepare", "run_worker", "train"]


def sampler_identity(options: RunOptions) -> str:
    """What makes this worker's sampler seed distinct: host and pool index, else host:pid."""
    if options.worker_index is None:
        return worker_identity()
    return f"{socket.gethostname()}#{options.worker_index}"  # reproducible per host and index


def open_worker_study(options: RunOptions, config: StudyConfig) -> optuna.Study:
    """Open the storage, check the artifact store, and create or join the study with this
    worker's own sampler seed (a bad storage or store is an error before the study exists)."""
    from vae_search.engine.study import open_study
    from vae_search.storage.artifacts import artifact_store
    from vae_search.storage.connection import make_storage

    storage = make_storage(options.storage, run=config.run)
    artifact_store(options.storage, options.artifacts)  # built here, used by the trial loop
    return open_study(
        config, storage, study_name=options.study_name,
        sampler_seed=worker_seed(config.seed, sampler_identity(options)),
    )


def setup_optuna() -> None:
    """Optuna's warnings only; a lost connection in a background thread, or under one of
    Optuna's reads (which it retries), in one line."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_thread_storage_faults()
    quiet_read_retries()


def _quiet_thread_storage_faults() -> None:
    """A lost database connection in a background thread is one warning line, not a traceback.

    Optuna's heartbeat thread (and our report thread) die on a dropped connection; Python
    would print the thread's traceback. The trial itself goes on: its next write on the main
    thread reconnects (or fails it through the usual retry path). Other errors keep the
    default report."""
    import threading

    previous = threading.excepthook
    if getattr(previous, "_vae_search", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and is_storage_fault(args.exc_value):
            name = args.thread.name if args.thread is not None else "a background thread"
            print(f"warning: {name} lost the database connection "
                  f"({error_reason(args.exc_value)}); the trial goes on", file=sys.stderr)
            return
        previous(args)

    hook._vae_search = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def quiet_tensorflow(debug: bool) -> None:
    """TensorFlow's Python warnings (e.g. "... triggered tf.function retracing") are for
    ``--debug`` only; Python errors are always shown.

    Its native log too: on CPUs without AVX-512 the token models' graphs make oneDNN print an
    "E"-level notice that it falls back to Eigen, which is no error. Native failures still raise
    Python exceptions. (Read when TensorFlow is imported, so this must run before.)
    """
    if not debug:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        if "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def finished_count(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return StateCounts.of_trials(study.get_trials(deepcopy=False, states=states)).finished


def budget_met(study: optuna.Study, done: int, budget: int) -> None:
    print(f"study {study.study_name!r} already has {done} finished trials "
          f"(budget --trials {budget}); raise --trials to add more")


def finish(study: optuna.Study, config: StudyConfig, options: RunOptions) -> None:
    """What a run ends with: refresh the figures, the summary table, how to browse."""
    from vae_search.report import FigureRefresher, summary_table

    FigureRefresher(0).refresh(study)
    shown_url = options.storage.masked
    print(summary_table(study))
    # optuna-dashboard itself cannot open a proxy URL; our dashboard command can
    browser = "vae-search dashboard --storage" if options.storage.proxy else (
        "optuna-dashboard")
    print(f"\nbrowse: {browser} {shown_url}" +
          ("   (password hidden)" if "***" in shown_url else ""))


def prepare(options: RunOptions, config: StudyConfig) -> tuple[Dataset, optuna.Study]:
    """What every run does before its first trial: bad data, a model too large for the
    memory, a broken ``model.builder``
    (this imports TensorFlow), a bad storage or study are each one error here, before any
    trial is created. Returns the dataset and the study (this worker's sampler)."""
    from vae_search.data.datasets import load_dataset
    from vae_search.engine.sizing import check_fits

    # Before anything imports TensorFlow (a builder's check below, train() later), which reads
    # its log level once, at import.
    quiet_tensorflow(options.debug)
    dataset = load_dataset(config)
    check_fits(config, dataset)  # a model too large for the memory, before it is allocated
    if config.model.builder:
        from vae_search.models.builder import check_builder

        check_builder(config, dataset)
    setup_optuna()
    return dataset, open_worker_study(options, config)


def train(study: optuna.Study, config: StudyConfig, dataset: Dataset, options: RunOptions,
          signals: SignalState, *, gate: Gate, progress: Progress, trials_left: int) -> None:
    """Run trials in this process through the one trial loop until ``gate`` says no more.

    Args:
        gate: The study's ``--trials`` budget, or confirm's queue.
        progress: The progress bar (closed on return).
        trials_left: At most this many trials to run (caps the population).
    """
    # From here TensorFlow runs: a signal is held until the loop's first safe point (an
    # exception raised inside TensorFlow's import or C++ calls can surface as another error).
    signals.training = True
    # TensorFlow is imported here; prepare() (always first) already set its log level.
    from vae_search.models import configure_threads

    configure_threads(options.threads)  # before any TensorFlow op
    from vae_search.engine.loop import run_trials
    from vae_search.engine.sizing import population_size
    from vae_search.models import get_trainer, spec_for
    from vae_search.models.population import OneSlot, PopulationTrainer
    from vae_search.report import FigureRefresher
    from vae_search.storage.artifacts import artifact_hook
    from vae_search.trial.objective import Objective

    size, note = population_size(options, config, dataset, trials_left)
    if note and not options.quiet:
        print(note, file=sys.stderr)
    objective = Objective(config, dataset, worker=worker_identity(),
                          on_finish=artifact_hook(options.storage, options.artifacts))
    slots: Any = OneSlot()
    if size > 1:  # P trials stacked into one model, at the widest searched latent dim
        widest = spec_for(config, dataset, max(config.search.latent_dim))
        slots = PopulationTrainer(get_trainer(widest), size)
    # A --workers parent draws the figures for its children (pool.supervise).
    refresher = FigureRefresher(0 if options.child else config.run.refresh_every,
                                seconds=config.run.refresh_seconds)
    run_trials(study, objective, slots, gate, signals=signals, progress=progress,
               callbacks=[progress, refresher])


def run_worker(options: RunOptions, config: StudyConfig, signals: SignalState, *,
               prepared: tuple[Dataset, optuna.Study] | None = None) -> int:
    """Run trials in this process until the study's budget is met (or the timeout).

    Args:
        prepared: What :func:`prepare` returned, when the caller has already called it.

    Returns:
        The exit status (0).

    Raises:
        Interrupted: SIGINT/SIGTERM (the trials in flight are failed as interrupted).
        DatabaseLost: the database failed ``STORAGE_RETRIES`` times in a row.
        FailureStreak: too many trials in a row failed.
    """
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    dataset, study = prepared or prepare(options, config)
    done = finished_count(study)
    if done >= options.trials:
        if not options.child:
            budget_met(study, done, options.trials)
    else:
        if not options.quiet:
            print(f"study {study.study_name!r} on {options.storage.masked}: {done}/"
                  f"{options.trials} trials finished; loading TensorFlow and the data...",
                  file=sys.stderr)
        started = time.monotonic()
        from vae_search.report import Progress

        progress = Progress(study, options.trials, enabled=not options.quiet)
        gate = BudgetGate(options.trials, deadline=deadline, warn=progress.warn,
                          grace_period=config.run.grace_period)
        train(study, config, dataset, options, signals, gate=gate, progress=progress,
              trials_left=options.trials - done)
        if not options.quiet:
            print(f"ran for {time.monotonic() - started:.1f} s", file=sys.stderr)
    if not options.child:
        finish(study, config, options)
    return 0
