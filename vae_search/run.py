"""``python -m vae_search.run``: create or join a study, run trials, show progress and a summary.

``--trials`` is the study's total budget of finished (complete + pruned) trials, shared by all
workers on the same storage: re-running the command resumes the study up to the budget, and
never wipes results. ``--help`` does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.cli import EXIT_USAGE, OneLineParser, bounded_int
from vae_search.config import ConfigError, StudyConfig, load_config
from vae_search.storage import (
    DEFAULT_STORAGE,
    StorageError,
    error_reason,
    mask_url,
    worker_seed,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "BudgetGate",
    "BudgetReached",
    "Interrupted",
    "build_parser",
    "main",
    "open_worker_study",
    "run_pool",
    "summary_table",
]

STORAGE_RETRIES = 5  # consecutive lost-connection failures a worker rides out
STORAGE_BACKOFF = 2.0  # seconds, times the attempt number, before retrying
EXIT_FAULT = 1  # the environment failed (database lost); not a user mistake
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
DEFAULT_STUDY = "digits"
DEFAULT_TRIALS = 20
DEFAULT_WORKERS = 1
STORAGE_ENV = "VAE_SEARCH_STORAGE"  # default for --storage (keeps passwords off command lines)
BUDGET_POLL = 2.0  # seconds between budget checks while other workers' trials decide it
POOL_POLL = 1.0  # seconds between the --workers parent's looks at its children and the study
FAIL_INTERRUPTED = "interrupted"  # fail_reason of a trial stopped by SIGINT/SIGTERM
FAIL_SURPLUS = "surplus"  # fail_reason prefix of a trial not run because the budget was met
MAX_CONSECUTIVE_FAILURES = 10  # a worker stops when this many trials in a row fail
SUMMARY_ROWS = 10


_positive_int = bounded_int(1)
_nonneg_int = bounded_int(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m vae_search.run",
        description="Search KL-annealing schedules (klstart, annealtime), latent dimension and "
        "reduction for a VAE, with Optuna, judging every trial by its validation ELBO and "
        "recording posterior-collapse diagnostics.",
    )
    parser.add_argument(
        "--trials", type=_positive_int, default=DEFAULT_TRIALS,
        help="total budget of finished (complete + pruned) trials in the study, shared by all "
        f"workers; re-running resumes up to it (default {DEFAULT_TRIALS})",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=None,
        help="stop starting new trials after this many seconds",
    )
    parser.add_argument(
        "--study", default=DEFAULT_STUDY,
        help=f"a study config: a name under studies/ or a path to a TOML file "
        f"(default {DEFAULT_STUDY})",
    )
    parser.add_argument(
        "--storage", default=os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE,
        help=f"SQLAlchemy URL of the study database (default: ${STORAGE_ENV}, else "
        f"{DEFAULT_STORAGE})",
    )
    parser.add_argument("--study-name", default=None, help="default: the config's name")
    parser.add_argument(
        "--seed", type=_nonneg_int, default=None, help="override the config's seed"
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help="override train.epochs"
    )
    parser.add_argument(
        "--workers", type=_positive_int, default=DEFAULT_WORKERS,
        help="local worker processes sharing the study and its --trials budget "
        f"(default {DEFAULT_WORKERS}); more machines can join with the same --storage",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None,
        help="TensorFlow threads per worker process (default: TensorFlow's choice for one "
        "worker, CPU cores / --workers for several)",
    )
    parser.add_argument(  # set by the --workers parent for its children
        "--worker-index", type=_nonneg_int, default=None, help=argparse.SUPPRESS
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, summary only")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors instead of one line"
    )
    return parser


def resolve_config(args: argparse.Namespace) -> StudyConfig:
    """Load the config and apply command-line overrides (validated again)."""
    config = load_config(args.study)
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
        s, old = config.search, config.train.epochs
        if s.klstart[1] + s.annealtime[1] > args.epochs or s.klstart[1] >= args.epochs:
            # Shrink the schedule box in proportion so every trial still ends at beta = 1.
            def scaled(lo_hi: tuple[int, int]) -> list[int]:
                hi = min(lo_hi[1] * args.epochs // old, args.epochs // 2)
                return [min(lo_hi[0], hi), hi]

            overrides["search.klstart"] = scaled(s.klstart)
            overrides["search.annealtime"] = scaled(s.annealtime)
            if not args.quiet:
                print(f"note: --epochs {args.epochs}: schedule ranges scaled to klstart "
                      f"{overrides['search.klstart']}, annealtime {overrides['search.annealtime']}",
                      file=sys.stderr)
    return config.with_overrides(**overrides) if overrides else config


def finished_count(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class Progress:
    """Optuna callback: a progress bar (done/total, elapsed, best ELBO, collapsed, pruned)."""

    def __init__(self, study: optuna.Study, total: int, *, enabled: bool) -> None:
        from tqdm import tqdm

        self.total = total
        self.consecutive_failures = 0
        self.last_failure = ""
        done, postfix = self._state(study)
        self.bar = tqdm(
            total=total, initial=done, postfix=postfix, unit="trial", disable=not enabled,
            dynamic_ncols=True, file=sys.stderr,
        )

    def _state(self, study: optuna.Study) -> tuple[int, dict[str, Any]]:
        """Finished trials (capped at the budget) and the postfix, from one read of the trials."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = sum(1 for t in trials if t.state == TrialState.PRUNED)
        best = max((t.value for t in complete if t.value is not None), default=None)
        postfix = {
            "best": f"{best:.2f}" if best is not None else "-",
            "collapsed": sum(1 for t in trials if t.user_attrs.get(keys.ATTR_COLLAPSED) is True),
            "pruned": pruned,
            "failed": sum(1 for t in trials if t.state == TrialState.FAIL),
        }
        return min(len(complete) + pruned, self.total), postfix

    def refresh(self, study: optuna.Study) -> None:
        """Redraw from the storage (after each trial; the ``--workers`` parent polls it)."""
        self.bar.n, postfix = self._state(study)
        self.bar.set_postfix(**postfix, refresh=False)
        self.bar.refresh()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            self.consecutive_failures += 1
            self.last_failure = str(trial.user_attrs.get(keys.ATTR_FAIL_REASON, "see log"))
            if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                self.warn(
                    f"stopping: {self.consecutive_failures} trials in a row failed "
                    f"(last: {self.last_failure})"
                )
                study.stop()
        else:
            self.consecutive_failures = 0
        self.refresh(study)

    def warn(self, message: str) -> None:
        """A line on stderr that does not break the progress bar (shown even with --quiet)."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def summary_table(study: optuna.Study, rows: int = SUMMARY_ROWS) -> str:
    """The best trials as a text table (complete trials first, by validation ELBO)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    by_state = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    collapsed = sum(1 for t in trials if t.user_attrs.get(keys.ATTR_COLLAPSED) is True)
    lines = [
        f"study {study.study_name!r}: {len(trials)} trials — "
        f"{by_state[TrialState.COMPLETE]} complete, {by_state[TrialState.PRUNED]} pruned, "
        f"{by_state[TrialState.FAIL]} failed, {by_state[TrialState.RUNNING]} running; "
        f"{collapsed} collapsed"
    ]
    complete = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: -t.value,  # type: ignore[operator]
    )
    if not complete:
        lines.append("no complete trials yet")
        return "\n".join(lines)
    header = ("trial", "klstart", "anneal", "latent", "reduction", "val ELBO", "active", "KL",
              "I(x;z)", "collapsed")
    table = [header]
    for t in complete[:rows]:
        u = t.user_attrs
        table.append((
            str(t.number),
            str(t.params.get("klstart", "")),
            str(t.params.get("annealtime", "")),
            str(t.params.get("latent_dim", "")),
            str(t.params.get("reduction", "")),
            f"{t.value:.2f}",
            f"{u.get(keys.ATTR_ACTIVE_UNITS, '')}",
            f"{u.get(keys.ATTR_KL_TOTAL, float('nan')):.2f}",
            f"{u.get(keys.ATTR_MUTUAL_INFO, float('nan')):.2f}",
            "yes" if u.get(keys.ATTR_COLLAPSED) else "no",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append(f"best {min(rows, len(complete))} by validation ELBO (nats/example, higher is "
                 "better):")
    for i, row in enumerate(table):
        lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; carries the exit status (128 + signal number)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class _SignalState:
    """What the SIGINT/SIGTERM handler does: raise now, or (``deferred``) remember for later."""

    def __init__(self) -> None:
        self.fired: int | None = None
        self.deferred = False  # True while Optuna records a finished trial (must not be torn)
        self.training = False  # True while the objective runs TensorFlow code
        self.pending: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.fired is not None:  # a second signal during the clean-up: leave now
            os._exit(128 + self.fired)
        self.fired = signum
        if self.deferred or self.training:
            # An exception raised from a signal handler inside TensorFlow's tracing or C++
            # calls can surface as a SystemError; hold it for the next epoch boundary instead.
            self.pending = signum
            return
        raise Interrupted(signum)

    def at_epoch_end(self, trial: Any, epoch: int, record: Any) -> None:
        """``Objective(on_epoch=...)``: a safe point to raise a signal held during training."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)

    def defer(self) -> None:
        self.deferred = True

    def resume(self) -> None:
        """Stop deferring; raise the signal that arrived meanwhile, if any."""
        self.deferred = False
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


_signals = _SignalState()


def install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread.

    The exception unwinds the running trial like Ctrl-C does (Optuna marks it FAIL; the runner
    records ``fail_reason = "interrupted"``) instead of the default SIGTERM action, which would
    leave the trial RUNNING until its heartbeat goes stale. While Optuna stores a trial's result
    (after the objective returns, until the next callback) the signal is held and raised right
    after, so a finished trial is never half-written. A second signal exits at once with the
    same status.
    """
    global _signals
    _signals = _SignalState()
    signal.signal(signal.SIGINT, _signals.handler)
    signal.signal(signal.SIGTERM, _signals.handler)


class DatabaseLost(RuntimeError):
    """The database kept failing mid-run; finished trials are committed, the run can resume."""


class BudgetReached(Exception):
    """This worker's trial is surplus: the study's budget is met (or the timeout passed)."""


class _QuietTrials(logging.Filter):
    """Drop Optuna's "Trial N failed" warnings (with tracebacks) for trials we ended on purpose
    (interrupted or surplus ones) and for trials lost with a database connection, which the
    worker reports in one line itself. Real failures are still shown."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = re.match(r"Trial (\d+) failed", message)
        if not match:
            return True
        if re.search(r"error: (Interrupted|BudgetReached)\(", message) or re.search(
            r"(StorageInternalError|OperationalError|InterfaceError|AdminShutdown)", message
        ):
            self.numbers.add(int(match.group(1)))
        return int(match.group(1)) not in self.numbers


class BudgetGate:
    """Makes ``--trials`` an exact, study-wide budget across any number of workers.

    Optuna's ``MaxTrialsCallback`` only checks *after* a trial, so K workers that each start a
    trial while the study is one short of the budget end with up to K - 1 extra trials. The gate
    adds two checks that read the shared storage:

    * **Before asking** for a trial (at start and after each of this worker's trials): if
      ``finished + running >= budget`` the trials already in flight can fill the budget, so the
      worker waits (polling every ``BUDGET_POLL`` s, failing stale trials of dead workers) until
      either the budget is met (stop) or a running trial failed and a slot opened (ask).
    * **At trial start** (a reservation, since two workers can pass the first check at the same
      instant): trial ``n`` runs only if ``finished + (running trials numbered below n) <
      budget``. Trials are numbered in the order they were asked, so the lowest-numbered running
      trial never waits and there is no deadlock. While the answer depends on trials ahead that
      may still fail, the trial waits (its heartbeat keeps beating). If the budget is met first,
      the trial is *surplus*: it is failed before training, with ``fail_reason`` starting with
      ``"surplus"``, and the worker stops.

    Finished (complete + pruned) trials therefore never exceed the budget; surplus trials are
    only possible when workers ask at the same instant near the end of the budget, and are never
    trained. Waiting workers also run Optuna's stale-trial check, so a dead worker's trial is
    failed and re-queued (``RetryHeartbeatStaleTrialCallback``) even while the surviving workers
    have nothing left to start.

    Args:
        budget: The study's total number of finished trials (``--trials``).
        deadline: ``time.monotonic()`` after which no new trial starts (``--timeout``).
        quiet: Filter that hides Optuna's failure warnings for trials the gate ended.
    """

    def __init__(
        self, budget: int, *, deadline: float | None = None, quiet: _QuietTrials | None = None
    ) -> None:
        self.budget = budget
        self.deadline = deadline
        self.quiet = quiet or _QuietTrials()
        self.current: optuna.Trial | None = None  # this worker's running trial

    def _counts(self, study: optuna.Study, below: int | None) -> tuple[int, int]:
        from optuna.trial import TrialState

        trials = study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
        finished = sum(1 for t in trials if t.state != TrialState.RUNNING)
        running = sum(
            1 for t in trials
            if t.state == TrialState.RUNNING and (below is None or t.number < below)
        )
        return finished, running

    def _timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    @staticmethod
    def _reap(study: optuna.Study) -> None:
        import warnings

        import optuna
        from optuna.exceptions import ExperimentalWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)

    def slot_free(self, study: optuna.Study) -> bool:
        """Wait until a new trial may be asked for (True) or the budget is met (False)."""
        while True:
            finished, running = self._counts(study, below=None)
            if finished >= self.budget or self._timed_out():
                return False
            if finished + running < self.budget:
                return True
            self._reap(study)
            time.sleep(BUDGET_POLL)

    def admit(self, trial: optuna.Trial) -> None:
        """The reservation check at trial start; raises :class:`BudgetReached` if surplus."""
        while True:
            finished, ahead = self._counts(trial.study, below=trial.number)
            if finished >= self.budget or self._timed_out():
                why = (f"the study's budget of {self.budget} finished trials was met by other "
                       "workers" if finished >= self.budget else "--timeout passed")
                reason = f"{FAIL_SURPLUS}: {why} before this trial started; it was not run"
                trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
                self.quiet.numbers.add(trial.number)
                raise BudgetReached(reason)
            if finished + ahead < self.budget:
                return
            self._reap(trial.study)
            time.sleep(BUDGET_POLL)

    def wrap(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """The objective behind the reservation check, recording interruptions."""

        def gated(trial: optuna.Trial) -> float:
            self.current = trial
            try:
                self.admit(trial)
                _signals.training = True
                try:
                    return objective(trial)
                finally:
                    _signals.training = False
            except Interrupted:
                self.quiet.numbers.add(trial.number)
                trial.set_user_attr(keys.ATTR_FAIL_REASON, FAIL_INTERRUPTED)
                raise
            finally:
                _signals.defer()  # Optuna now stores the result; held until the callback

        return gated

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Callback after each of this worker's trials: stop unless a slot is (or becomes) free."""
        self.current = None
        _signals.resume()
        if not self.slot_free(study):
            study.stop()

    def taken_over(self, study: optuna.Study) -> bool:
        """Whether this worker's trial was finished by someone else (failed as stale)."""
        trial, self.current = self.current, None
        if trial is None:
            return False
        return study._storage.get_trial(trial._trial_id).state.is_finished()

    def close_interrupted(self, study: optuna.Study, reason: str = "") -> None:
        """Fail this worker's trial if an interruption left it RUNNING (outside the objective).

        Args:
            study: The study.
            reason: The recorded ``fail_reason`` (default: interrupted).
        """
        from optuna.trial import TrialState

        trial, self.current = self.current, None
        if trial is None:
            return
        storage = study._storage
        storage.remove_session()  # the interrupted transaction, if any, is gone
        if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            storage.set_trial_user_attr(
                trial._trial_id, keys.ATTR_FAIL_REASON, reason or FAIL_INTERRUPTED
            )
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def sampler_identity(args: argparse.Namespace) -> str:
    """What makes this worker's sampler seed distinct: host and pool index, else host:pid."""
    if args.worker_index is None:
        return worker_identity()
    return f"{socket.gethostname()}#{args.worker_index}"  # reproducible per host and index


def open_worker_study(args: argparse.Namespace, config: StudyConfig) -> optuna.Study:
    """Open the storage and create or join the study with this worker's own sampler seed."""
    from vae_search.storage import make_storage
    from vae_search.study import open_study

    storage = make_storage(args.storage, run=config.run)
    return open_study(
        config, storage, study_name=args.study_name,
        sampler_seed=worker_seed(config.seed, sampler_identity(args)),
    )


def _setup_optuna() -> _QuietTrials:
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet = _QuietTrials()
    logging.getLogger("optuna.study._optimize").addFilter(quiet)  # where Optuna logs failures
    return quiet


def run(args: argparse.Namespace) -> int:
    """Run one worker until the study's budget is met (or the timeout). Returns the exit code."""
    if args.workers > 1:
        return run_pool(args)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    child = args.worker_index is not None
    config = resolve_config(args)
    from vae_search.data import load_dataset

    dataset = load_dataset(config)  # bad data is an error before any study is created
    if config.model.builder:  # so is a broken model.builder (this imports TensorFlow)
        from vae_search.models.builder import check_builder

        check_builder(config, dataset)
    quiet = _setup_optuna()

    shown_url = mask_url(args.storage)
    study = open_worker_study(args, config)
    done = finished_count(study)
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    gate = BudgetGate(args.trials, deadline=deadline, quiet=quiet)
    if done >= args.trials:
        if not child:
            print(f"study {study.study_name!r} already has {done} finished trials "
                  f"(budget --trials {args.trials}); raise --trials to add more")
    else:
        say(f"study {study.study_name!r} on {shown_url}: {done}/{args.trials} trials finished; "
            "loading TensorFlow and the data...")
        from vae_search.models import configure_threads

        configure_threads(args.threads)  # before any TensorFlow op
        from optuna.exceptions import UpdateFinishedTrialError

        from vae_search.objective import Objective, TrainingDiverged

        from vae_search.artifacts import artifact_hook

        objective = Objective(
            config, dataset, worker=worker_identity(), on_finish=artifact_hook(args.storage),
            on_epoch=lambda *a: _signals.at_epoch_end(*a),  # held signals are raised here
        )
        from optuna.exceptions import StorageInternalError
        from sqlalchemy.exc import DBAPIError

        progress = Progress(study, args.trials, enabled=not args.quiet)
        started = time.monotonic()
        lost = 0  # consecutive lost-connection failures
        try:
            while gate.slot_free(study):
                try:
                    study.optimize(
                        gate.wrap(objective),
                        timeout=None if deadline is None
                        else max(0.0, deadline - time.monotonic()),
                        catch=(TrainingDiverged,),
                        callbacks=[*study_callbacks(study, config, args, progress), gate],
                    )
                    break
                except (StorageInternalError, DBAPIError) as exc:
                    # The database dropped or refused a connection mid-trial (a server restart,
                    # a network blip). The pool (pool_pre_ping) reconnects on the next call; the
                    # trial in flight is failed (or, if even that write fails, recovered later by
                    # the heartbeat). Finished trials are already committed.
                    lost += 1
                    reason = error_reason(exc)
                    if lost > STORAGE_RETRIES:
                        raise DatabaseLost(
                            f"lost the database connection {lost} times in a row ({reason}); "
                            "finished trials are kept; re-run the same command to resume"
                        ) from None
                    progress.warn(f"warning: database connection lost ({reason}); "
                                  f"reconnecting (attempt {lost} of {STORAGE_RETRIES})")
                    time.sleep(STORAGE_BACKOFF * lost)
                    try:  # if failing the trial in flight was itself lost, close it now
                        gate.close_interrupted(study, reason=f"database connection lost: {reason}")
                    except (StorageInternalError, DBAPIError):
                        pass  # still down: the heartbeat recovers the trial later
                    _signals.resume()
                    continue
                except (ValueError, UpdateFinishedTrialError):
                    if not gate.taken_over(study):
                        raise
                    progress.warn(
                        "warning: another worker failed this worker's trial as stale (its "
                        "heartbeat was later than run.grace_period; raise it if epochs are "
                        "long); continuing"
                    )
                    _signals.resume()
            _signals.resume()
        except BudgetReached:
            _signals.resume()
        except Interrupted:
            _signals.deferred = False
            gate.close_interrupted(study)
            raise
        finally:
            progress.close()
        say(f"ran for {time.monotonic() - started:.1f} s")
    if not child:
        finalize(study, config, args)
    return 0


def _child_command(args: argparse.Namespace, index: int, threads: int) -> list[str]:
    argv = [sys.executable, "-m", "vae_search.run", "--workers", "1", "--worker-index",
            str(index), "--threads", str(threads), "--trials", str(args.trials),
            "--study", str(args.study), "--quiet"]
    for flag, value in (("--timeout", args.timeout), ("--study-name", args.study_name),
                        ("--seed", args.seed), ("--epochs", args.epochs)):
        if value is not None:
            argv += [flag, str(value)]
    if args.debug:
        argv.append("--debug")
    return argv


def _die_with_parent() -> None:  # pragma: no cover (runs in the child before exec)
    """Linux: a child gets SIGTERM if the --workers parent dies (no orphaned workers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_pool(args: argparse.Namespace) -> int:
    """``--workers K``: K worker processes on the same storage; this process only watches.

    The parent creates (or joins and checks) the study once, so a bad config or storage is
    one error, then starts K copies of the single-worker command, each with the storage URL in
    ``$VAE_SEARCH_STORAGE`` (never on a command line), ``--threads`` = cores / K, and its own
    process group: Ctrl-C reaches only the parent, which forwards SIGINT/SIGTERM exactly once
    to every child and waits for them to close their trials. The exit status is 130 (SIGINT)
    or 143 (SIGTERM); otherwise the first non-zero child status, or 0.
    """
    from vae_search.storage import sqlite_path

    try:
        in_memory = args.storage.startswith("sqlite") and sqlite_path(args.storage) is None
    except Exception:  # noqa: BLE001 (malformed: make_storage reports it below)
        in_memory = False
    if in_memory:
        raise StorageError("--workers needs a database the processes can share: a SQLite file "
                           "(sqlite:///path.db) or a server, not an in-memory SQLite")
    config = resolve_config(args)
    from vae_search.data import load_dataset

    dataset = load_dataset(config)  # one clear data error here rather than K in the children
    if config.model.builder:
        from vae_search.models.builder import check_builder

        check_builder(config, dataset)
    _setup_optuna()
    study = open_worker_study(args, config)
    done = finished_count(study)
    if done >= args.trials:
        print(f"study {study.study_name!r} already has {done} finished trials "
              f"(budget --trials {args.trials}); raise --trials to add more")
        finalize(study, config, args)
        return 0
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if not args.quiet:
        print(f"study {study.study_name!r} on {mask_url(args.storage)}: {done}/{args.trials} "
              f"trials finished; starting {args.workers} workers ({threads} TensorFlow "
              "thread(s) each)...", file=sys.stderr)
    env = {**os.environ, STORAGE_ENV: args.storage}
    # The children import this very package, installed or not (e.g. run from a checkout).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    received: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        if not received:
            received.append(signum)
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signum)

    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for index in range(args.workers):
        procs.append(subprocess.Popen(
            _child_command(args, index, threads), env=env, start_new_session=True,
            preexec_fn=_die_with_parent,
        ))
        if received:  # a signal arrived while starting them
            procs[-1].send_signal(received[0])
    progress = Progress(study, args.trials, enabled=not args.quiet)
    try:
        while any(proc.poll() is None for proc in procs):
            time.sleep(POOL_POLL)
            if not received:
                progress.refresh(study)
        progress.refresh(study)
    finally:
        progress.close()
    codes = [proc.returncode for proc in procs]
    if received:
        print("interrupted: finished trials are kept; re-run the same command to resume",
              file=sys.stderr)
        return 128 + received[0]
    failed = [code for code in codes if code != 0]
    if failed:
        print(f"vae_search: {len(failed)} of {args.workers} workers exited with status "
              f"{failed[0]}{' (rerun with --debug for tracebacks)' if not args.debug else ''}",
              file=sys.stderr)
    finalize(study, config, args)
    return failed[0] if failed else 0


def study_callbacks(
    study: optuna.Study, config: StudyConfig, args: argparse.Namespace, progress: Progress
) -> list[Any]:
    """Callbacks run after every trial of this worker: the progress display and the dashboard
    figures (refreshed every ``run.refresh_every`` finished trials). The budget is not here:
    :class:`BudgetGate`, the last callback, stops the study when it is met."""
    from vae_search.report import FigureRefresher

    return [progress, FigureRefresher(config.run.refresh_every)]


def finalize(study: optuna.Study, config: StudyConfig, args: argparse.Namespace) -> None:
    """What a worker does at the end: refresh the figures, the summary table, how to browse."""
    from vae_search.report import FigureRefresher

    FigureRefresher(0).refresh(study)
    shown_url = mask_url(args.storage)
    print(summary_table(study))
    print(f"\nbrowse: optuna-dashboard {shown_url}" +
          ("   (password hidden)" if "***" in shown_url else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vae_search.data import DataError
    from vae_search.study import StudyMismatch

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install_signal_handlers()
    try:
        return run(args)
    except KeyboardInterrupt as exc:
        if args.worker_index is None:
            print("interrupted: finished trials are kept; re-run the same command to resume",
                  file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    except (ConfigError, DataError, StorageError, StudyMismatch) as exc:
        if args.debug:
            raise
        print(f"vae_search: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseLost as exc:
        if args.debug:
            raise
        print(f"vae_search: error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    finally:
        for sig, previous in saved.items():  # main() may run inside another program (tests)
            signal.signal(sig, previous)


if __name__ == "__main__":
    sys.exit(main())
