"""One worker's trial loop: the budget gate, signals, and riding out database faults.

:func:`run_worker` is to ``vae-search run`` what Optuna's ``study/_optimize.py`` is to
``Study.optimize``: the loop in its own module, the command (``run.py``) a thin facade. It takes
a frozen :class:`~vae_search.cli.RunOptions` and the resolved configuration, and keeps no module
state: the SIGINT/SIGTERM handlers write to the :class:`SignalState` passed in.
Importing this module does not import TensorFlow or Optuna.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from vae_search import keys
from vae_search.cli import RunOptions
from vae_search.config.schema import StudyConfig
from vae_search.report.rows import StateCounts
from vae_search.search.budget import FAIL_SURPLUS, BudgetGate, BudgetReached
from vae_search.search.signals import (
    FAIL_INTERRUPTED,
    TAKEN_OVER,
    DatabaseLost,
    Interrupted,
    LostConnections,
    SignalState,
    worker_identity,
)
from vae_search.storage._optuna import QuietFailedTrials, fresh_trial, study_storage
from vae_search.storage.connection import (
    error_reason,
    is_storage_fault,
    storage_faults,
    worker_seed,
)

if TYPE_CHECKING:
    import optuna

    from vae_search.report import Progress

__all__ = [
    "FAIL_INTERRUPTED",
    "FAIL_SURPLUS",
    "BudgetGate",
    "BudgetReached",
    "DatabaseLost",
    "Interrupted",
    "SignalState",
    "Gate",
    "finish",
    "open_worker_study",
    "optimize",
    "run_worker",
]

MAX_CONSECUTIVE_FAILURES = 10  # a worker stops when this many trials in a row fail

Value = float | tuple[float, float]  # the ELBO, or (ELBO, I(x;z)) in a pareto study


class Gate(Protocol):
    """What the trial loop asks before each trial (:class:`BudgetGate` is one)."""

    deadline: float | None  # time.monotonic() after which no trial starts

    def slot_free(self, study: optuna.Study) -> bool:
        """Wait until a trial may be asked for (True), or the loop is done (False)."""

    def admit(self, trial: optuna.Trial) -> None:
        """Raise :class:`BudgetReached` if ``trial`` must not run."""


class TrialLoop:
    """This worker's side of ``study.optimize``: the gated objective and the after-trial check.

    Args:
        gate: The study-wide budget.
        signals: Where the signal handlers record what arrived.
        warn: Prints one line without breaking the progress bar.
        heartbeat: What each trial runs inside (from the reservation check to the end of the
            objective): the heartbeat relay behind the gRPC proxy, else nothing.
    """

    def __init__(
        self, gate: Gate, signals: SignalState, *, warn: Callable[[str], None],
        heartbeat: Callable[[optuna.Trial], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.gate = gate
        self.signals = signals
        self.warn = warn
        self.heartbeat = heartbeat or (lambda trial: contextlib.nullcontext())
        self.current: optuna.Trial | None = None  # this worker's running trial
        self.failures = 0  # consecutive failed trials
        self.finished = 0  # trials this worker saw to the end (any state)

    def wrap(self, objective: Callable[[optuna.Trial], Value]) -> Callable[[optuna.Trial], Value]:
        """The objective behind the reservation check, recording interruptions."""

        def gated(trial: optuna.Trial) -> Value:
            self.current = trial
            try:
                with self.heartbeat(trial):
                    self.gate.admit(trial)
                    self.signals.training = True
                    try:
                        return objective(trial)
                    finally:
                        self.signals.training = False
            except Interrupted:
                trial.set_user_attr(keys.ATTR_FAIL_REASON, FAIL_INTERRUPTED)
                raise
            finally:
                self.signals.defer()  # Optuna now stores the result; held until the callback

        return gated

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """The last callback after each trial: stop after too many failures in a row, raise a
        held signal, and stop unless a budget slot is (or becomes) free."""
        self.current = None
        self.finished += 1
        if trial.state.name == "FAIL":
            self.failures += 1
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                last = trial.user_attrs.get(keys.ATTR_FAIL_REASON, "see log")
                self.warn(f"stopping: {self.failures} trials in a row failed (last: {last})")
                study.stop()
        else:
            self.failures = 0
        self.signals.resume()
        if not self.gate.slot_free(study):
            study.stop()

    def taken_over(self) -> bool:
        """Whether this worker's trial was finished by someone else (failed as stale)."""
        trial, self.current = self.current, None
        return trial is not None and fresh_trial(trial).state.is_finished()

    def close_interrupted(self, study: optuna.Study, reason: str = FAIL_INTERRUPTED) -> None:
        """Fail this worker's trial if an interruption left it RUNNING (outside the objective).

        Args:
            study: The study.
            reason: The recorded ``fail_reason``.
        """
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        trial, self.current = self.current, None
        if trial is None:
            return
        try:
            trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
        except UpdateFinishedTrialError:
            return  # finished after all (stored before the interruption, or failed as stale)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def sampler_identity(options: RunOptions) -> str:
    """What makes this worker's sampler seed distinct: host and pool index, else host:pid."""
    if options.worker_index is None:
        return worker_identity()
    return f"{socket.gethostname()}#{options.worker_index}"  # reproducible per host and index


def open_worker_study(options: RunOptions, config: StudyConfig) -> optuna.Study:
    """Open the storage, check the artifact store, and create or join the study with this
    worker's own sampler seed (a bad storage or store is an error before the study exists)."""
    from vae_search.storage.artifacts import artifact_store
    from vae_search.storage.connection import make_storage
    from vae_search.storage.studies import open_study

    storage = make_storage(options.storage, run=config.run)
    artifact_store(options.storage, options.artifacts)  # built here, used by the trial loops
    return open_study(
        config, storage, study_name=options.study_name,
        sampler_seed=worker_seed(config.seed, sampler_identity(options)),
    )


def setup_optuna() -> QuietFailedTrials:
    """Optuna's warnings only; failures of trials a worker ended on purpose are not logged."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_thread_storage_faults()
    return QuietFailedTrials((Interrupted, BudgetReached, *storage_faults())).install()


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


def run_worker(options: RunOptions, config: StudyConfig, signals: SignalState) -> int:
    """Run trials in this process until the study's budget is met (or the timeout).

    Returns:
        The exit status (0).

    Raises:
        Interrupted: SIGINT/SIGTERM (the trial in flight is failed as interrupted).
        DatabaseLost: the database failed ``STORAGE_RETRIES`` times in a row.
    """
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    from vae_search.data.datasets import load_dataset

    dataset = load_dataset(config)  # bad data is an error before any study is created
    if config.model.builder:  # so is a broken model.builder (this imports TensorFlow)
        from vae_search.models.builder import check_builder

        check_builder(config, dataset)
    setup_optuna()
    study = open_worker_study(options, config)
    done = finished_count(study)
    if done >= options.trials:
        if not options.child:
            budget_met(study, done, options.trials)
    else:
        if not options.quiet:
            print(f"study {study.study_name!r} on {options.storage.masked}: {done}/"
                  f"{options.trials} trials finished; loading TensorFlow and the data...",
                  file=sys.stderr)
        quiet_tensorflow(options.debug)
        started = time.monotonic()
        from vae_search.report import Progress
        from vae_search.search.population import population_size, run_population

        size, note = population_size(options, config, dataset, options.trials - done)
        if note and not options.quiet:
            print(note, file=sys.stderr)
        if size > 1:
            run_population(study, config, dataset, options, signals, deadline, size)
        else:
            optimize(study, config, dataset, options, signals,
                     gate=BudgetGate(options.trials, deadline=deadline),
                     progress=Progress(study, options.trials, enabled=not options.quiet))
        if not options.quiet:
            print(f"ran for {time.monotonic() - started:.1f} s", file=sys.stderr)
    if not options.child:
        finish(study, config, options)
    return 0


def optimize(
    study: optuna.Study, config: StudyConfig, dataset: Any, options: RunOptions,
    signals: SignalState, *, gate: Gate, progress: Progress,
) -> None:
    """``study.optimize`` behind a gate, retried while the database comes back.

    Args:
        gate: Decides when to ask for a trial and whether a trial may run: the study's
            ``--trials`` budget (:class:`BudgetGate`), or the queue of confirmation runs.
        progress: The progress bar (closed on return).
    """
    from vae_search.models import configure_threads

    configure_threads(options.threads)  # before any TensorFlow op
    from optuna.exceptions import UpdateFinishedTrialError

    from vae_search.report import FigureRefresher
    from vae_search.storage.artifacts import artifact_hook
    from vae_search.storage.heartbeat import heartbeat_relay
    from vae_search.trial.objective import Objective, TrainingDiverged

    save_artifacts = artifact_hook(options.storage, options.artifacts)

    def on_finish(trial: optuna.Trial, trainer: Any, data: Any) -> None:
        save_artifacts(trial, trainer, data)

    objective = Objective(
        config, dataset, worker=worker_identity(), on_finish=on_finish,
        on_epoch=signals.at_epoch_end,  # held signals are raised here
    )
    deadline = gate.deadline
    relay = heartbeat_relay(study_storage(study), config.run.heartbeat_interval)
    loop = TrialLoop(gate, signals, warn=progress.warn, heartbeat=relay)
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
        progress,
        FigureRefresher(config.run.refresh_every, seconds=config.run.refresh_seconds),
        loop.after_trial,  # last: it may raise a held signal
    ]
    faults = storage_faults()
    retries = LostConnections(progress.warn)
    try:
        while True:
            try:
                if not gate.slot_free(study):
                    break
                study.optimize(
                    loop.wrap(objective),
                    timeout=None if deadline is None else max(0.0, deadline - time.monotonic()),
                    catch=(TrainingDiverged,),
                    callbacks=callbacks,
                )
                break
            except (ValueError, UpdateFinishedTrialError):
                if not loop.taken_over():
                    raise
                progress.warn(TAKEN_OVER)
                signals.resume()
            except Exception as exc:
                if not is_storage_fault(exc):
                    raise
                # The database dropped or refused a connection mid-trial (a server restart,
                # a network blip), or the gRPC proxy did (restarting). The trial in flight is
                # failed (or, if even that write fails, recovered later through its stale
                # heartbeat).
                reason = retries.lost_connection(exc, loop.finished)
                # If failing the trial in flight was itself lost, close it now; if the database
                # is still down, the heartbeat recovers the trial later.
                with contextlib.suppress(*faults):
                    loop.close_interrupted(study, reason=f"database connection lost: {reason}")
                signals.resume()
        signals.resume()
    except BudgetReached:
        signals.resume()
    except Interrupted:
        signals.deferred = False
        loop.close_interrupted(study)
        raise
    finally:
        progress.close()
