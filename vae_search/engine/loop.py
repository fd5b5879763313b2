"""The trial loop: ask-and-tell over P slots, whatever the family; P = 1 is one trial at a time.

:func:`run_trials` is to ``vae-search run`` what Optuna's ``study/_optimize.py`` is to
``Study.optimize``, written once for every way a worker trains: a study's search trials under
its ``--trials`` budget, or the queued runs of ``vae-search confirm``; one trial at a time
(:class:`~vae_search.models.population.OneSlot`: any family, a user's builder too) or P dense or
made trials stacked into one model (:class:`~vae_search.models.population.PopulationTrainer`).

* **Refill at epoch boundaries.** A free slot takes the gate's next trial (``study.ask()``: the
  sampler's constant liar sees the other slots' trials as running), behind :class:`Gate`: a
  slot is filled only while ``finished + running < --trials``, so ``--trials`` stays exact
  across workers. A trial that would have to wait for this worker's own running trials is
  surplus (they cannot finish while it waits); with no trial of its own running, it waits.
* **Each slot is its own trial**, with the steps of :class:`~vae_search.trial.objective.TrialRun`
  (divergence, history, report, prune, end) and :meth:`Objective.finish
  <vae_search.trial.objective.Objective.finish>` (diagnostics, attrs, constraints, artifacts).
  A pruned, finished or diverged trial frees its slot.
* **Faults, each handled here once.** A signal is held while the slots train and raised at the
  next epoch boundary (or at once while the loop waits): every running trial is failed as
  ``interrupted``. A lost database connection fails the running trials and the loop goes on
  (:class:`~vae_search.engine.signals.LostConnections`); one that cannot even store that
  leaves them to go stale, as a killed worker's do. **Heartbeats** beat for every running trial
  (:class:`~vae_search.storage.heartbeat.Heartbeats`, relayed behind the gRPC proxy). A trial
  another worker failed as stale is dropped with a warning. After
  :data:`MAX_CONSECUTIVE_FAILURES` failed trials in a row the loop stops refilling.

A ``pareto`` study works the same way, without reports or pruning (Optuna cannot prune it).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any, Protocol

from vae_search import keys
from vae_search.engine.budget import BudgetReached
from vae_search.engine.signals import (
    FAIL_INTERRUPTED,
    TAKEN_OVER,
    FailureStreak,
    Interrupted,
    LostConnections,
    SignalState,
)
from vae_search.storage._optuna import fresh_trial, study_storage, trial_id
from vae_search.storage.connection import error_reason, is_storage_fault, storage_faults

if TYPE_CHECKING:
    import optuna

    from vae_search.models.population import Slots
    from vae_search.report import Progress
    from vae_search.storage.heartbeat import Heartbeats
    from vae_search.storage.report_writer import ReportWriter
    from vae_search.trial.objective import Objective, TrialRun

__all__ = ["MAX_CONSECUTIVE_FAILURES", "Gate", "TrialLoop", "run_trials"]

MAX_CONSECUTIVE_FAILURES = 10  # a worker stops refilling when this many trials in a row fail


class Gate(Protocol):
    """What the loop asks before and at the start of each trial (a
    :class:`~vae_search.engine.budget.BudgetGate`, or confirm's queue)."""

    def poll(self, study: optuna.Study) -> bool | None:
        """A trial may be asked for (True), none will be (False), or not yet (None)."""

    def slot_free(self, study: optuna.Study) -> bool:
        """Wait until :meth:`poll` is not None; its answer."""

    def ask(self, study: optuna.Study) -> optuna.Trial:
        """The next trial (``study.ask()``, or a planned confirmation run)."""

    def admit(self, trial: optuna.Trial, *, wait: bool) -> None:
        """Raise :class:`BudgetReached` (``fail_reason`` stored) if ``trial`` must not run."""

    def reap(self, study: optuna.Study) -> None:
        """Fail (and re-queue) stale trials of dead workers."""


class TrialLoop:
    """The slots, the study and the per-epoch bookkeeping (see the module docstring).

    Args:
        study: The study.
        objective: Plans, starts and finishes each trial.
        slots: Where the running trials train.
        gate: The budget (or confirm's queue).
        signals: Held signals are raised at the baseline's epoch boundaries too.
        callbacks: Called with ``(study, frozen_trial)`` after each trial is told.
        heartbeats: Beats for every running trial.
        reports: Stores the trials' writes off the training thread.
        warn: Prints one line without breaking the progress bar.
    """

    def __init__(self, study: optuna.Study, objective: Objective, slots: Slots, gate: Gate, *,
                 signals: SignalState, callbacks: list[Any], heartbeats: Heartbeats,
                 reports: ReportWriter, warn: Any = print) -> None:
        self.study = study
        self.objective = objective
        self.config = objective.config
        self.trainers = slots
        self.gate = gate
        self.signals = signals
        self.callbacks = callbacks
        self.heartbeats = heartbeats
        self.reports = reports
        self.warn = warn
        self.slots: list[TrialRun | None] = [None] * slots.size
        self.refill = True  # False once the budget is met, the timeout passed or trials fail
        self.warmed_up = False  # the median pruner has its n_startup_trials completed trials
        self.failures = 0  # consecutive failed trials
        self.streak: str | None = None  # why the loop stopped refilling after failures
        self.finished = 0  # trials this loop saw to the end (any state)
        self.completed = 0  # of which COMPLETE: the only ones the median rule reads
        self.unstarted: list[optuna.Trial] = []  # asked for, but never made it into a slot
        self.unstarted_reason = "database connection lost"  # their fail_reason

    @property
    def running(self) -> int:
        return sum(run is not None for run in self.slots)

    # -- starting trials ---------------------------------------------------------------------

    def fill(self) -> None:
        """Refill free slots from ``study.ask()`` while the gate has room.

        Stale trials of dead workers are failed first (and re-queued by the storage's retry
        callback), as Optuna's optimize loop does before each trial.
        """
        if self.unstarted:  # a fault left them RUNNING; they hold a place in the budget
            self._fail_unstarted()
        if not self.refill or None not in self.slots:
            return  # every slot is training (the usual case: fill runs after each epoch)
        self.gate.reap(self.study)
        room = self._warm_up_room()
        for slot, run in enumerate(self.slots):
            if run is not None or not self.refill:
                continue
            if self.signals.pending is not None:  # stopping: start nothing that must be failed
                return
            if room is not None:
                if room <= 0:
                    return
                room -= 1
            free = self.gate.poll(self.study)
            if free is None:  # the running trials may fill the budget: ask again later
                return
            if not free:
                self.refill = False
                return
            with warnings.catch_warnings():  # we record the heartbeats (Heartbeats)
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self.gate.ask(self.study)
            try:
                self.heartbeats.add(trial_id(trial))
                # With none of its own trials running, this worker may wait for the others'.
                self.gate.admit(trial, wait=not self.running)
                self.slots[slot] = self._start(slot, trial)
            except BudgetReached:  # another worker asked at the same instant
                self._tell(trial, state="FAIL")
                return
            except BaseException:  # a lost connection, a signal: failed by fail_running
                # Not beaten for from here: if it cannot be failed either, it goes stale.
                self.heartbeats.discard(trial_id(trial))
                self.unstarted.append(trial)
                raise

    def _warm_up_room(self) -> int | None:
        """How many more trials may start while the median pruner is still warming up.

        The median pruner judges nobody until ``pruner.n_startup_trials`` trials have
        completed. A full population started at once would train its whole first wave to the
        end unjudged (one at a time, the first pruning candidate is trial
        ``n_startup_trials + 1``), so until then the loop holds that many trials.
        ``None``: no limit (warmed up, or another pruner).
        """
        from optuna.trial import TrialState

        wanted = self.config.pruner.n_startup_trials
        if (self.warmed_up or self.config.search.objective == "pareto"
                or self.config.pruner.name != "median" or wanted <= 0):
            return None
        complete = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if complete >= wanted:
            self.warmed_up = True
            return None
        return wanted - complete - self.running

    def _start(self, slot: int, trial: optuna.Trial) -> TrialRun:
        o = self.objective
        run = o.begin(trial, self.reports, between_epochs=self.signals.raise_pending)
        self.trainers.load(slot, o.start(run.plan.params, run.plan.seed))
        return run

    # -- one epoch ---------------------------------------------------------------------------

    def epoch(self) -> None:
        """Train every slot one epoch, then record, report, prune, finish or fail each trial."""
        o = self.objective
        betas = [0.0 if run is None else run.beta for run in self.slots]
        inner = [0 if run is None else run.inner_steps for run in self.slots]
        results = self.trainers.results(
            o.x_train, o.x_val, betas, eval_seed=self.config.seed,
            active_threshold=self.config.collapse.active_threshold, inner_steps=inner)
        # The trials share one read of the completed trials until one of them completes
        # (other workers' trials join at the pruner's timed refresh), not one per trial.
        read = ("loop", id(self), self.completed)
        for slot, run in enumerate(self.slots):
            if run is None:
                continue
            information = o.information(self.trainers.member(slot, o.spec(run.plan.params)),
                                        inner[slot]) if inner[slot] else None
            state = run.after_epoch(results[slot], self.reports, read=read,
                                    information=information)
            if state == "FAIL":
                self._end(slot, state="FAIL")
            elif state is not None:
                trainer = self.trainers.member(slot, o.spec(run.plan.params))
                diag = o.finish(run, trainer, self.reports, pruned=state == "PRUNED")
                if state == "PRUNED":
                    self._end(slot, state="PRUNED")
                else:
                    self._end(slot, values=run.value(diag))

    # -- ending trials -----------------------------------------------------------------------

    def _end(self, slot: int, *, state: str | None = None, values: Any = None) -> None:
        run = self.slots[slot]
        assert run is not None
        self._drop(slot)
        frozen = self._tell(run.trial, state=state, values=values)
        self.finished += 1
        self.completed += frozen.state.name == "COMPLETE"
        if frozen.state.name != "FAIL":
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= MAX_CONSECUTIVE_FAILURES and self.refill:
            last = frozen.user_attrs.get(keys.ATTR_FAIL_REASON, "see the log")
            self.streak = f"{self.failures} trials in a row failed (last: {last})"
            self.refill = False

    def _tell(self, trial: optuna.Trial, *, state: str | None = None,
              values: Any = None) -> optuna.trial.FrozenTrial:
        from optuna.trial import TrialState

        self.heartbeats.discard(trial_id(trial))
        self.reports.flush()  # its writes (queued in order) are stored before it ends
        frozen = self.study.tell(trial, values, state=None if state is None
                                 else TrialState[state], skip_if_finished=True)
        for callback in self.callbacks:
            callback(self.study, frozen)
        return frozen

    def _drop(self, slot: int) -> None:
        """Free ``slot`` here; its trial is no longer beaten for (see :meth:`fail_running`)."""
        run = self.slots[slot]
        assert run is not None
        self.slots[slot] = None
        self.trainers.free(slot)
        self.heartbeats.discard(trial_id(run.trial))

    def fail_running(self, reason: str) -> None:
        """Fail every running trial (an interruption, a lost connection, an error), recording
        ``reason``.

        A trial whose failure cannot be stored (the database is still down) is dropped here
        and left RUNNING without heartbeats: it goes stale and is failed and retried by the
        next stale-trial check (any worker's, or the proxy's).
        """
        from optuna.exceptions import UpdateFinishedTrialError

        faults = storage_faults()
        with contextlib.suppress(*faults):
            self.reports.flush()  # what can still be stored; a failed write is forgotten
        for slot, run in enumerate(self.slots):
            if run is None:
                continue
            try:
                with contextlib.suppress(UpdateFinishedTrialError):  # failed as stale already
                    run.trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
                self._end(slot, state="FAIL")
            except faults:
                if self.slots[slot] is not None:
                    self._drop(slot)
        self.unstarted_reason = reason
        self._fail_unstarted()

    def _fail_unstarted(self) -> None:
        """Fail the trials asked for just before a fault that never reached a slot.

        One that cannot be stored yet (the database is still down) is tried again at each
        :meth:`fill`: it holds a place in the budget, and this worker may be the one waiting on
        it. A worker that stops first leaves it to the stale-trial check (its heartbeats
        stopped at the fault, or it never had one:
        :class:`~vae_search.storage.heartbeat.StaleTrials`).
        """
        from optuna.exceptions import UpdateFinishedTrialError

        for trial in list(self.unstarted):
            with contextlib.suppress(*storage_faults()):
                with contextlib.suppress(UpdateFinishedTrialError):
                    trial.set_user_attr(keys.ATTR_FAIL_REASON, self.unstarted_reason)
                self._tell(trial, state="FAIL")
                self.unstarted.remove(trial)

    def drop_taken_over(self) -> bool:
        """Drop the trials another worker failed as stale (their heartbeats were late);
        returns whether there were any."""
        taken = [slot for slot, run in enumerate(self.slots)
                 if run is not None and fresh_trial(run.trial).state.is_finished()]
        for slot in taken:
            self._drop(slot)
        return bool(taken)


def run_trials(study: optuna.Study, objective: Objective, slots: Slots, gate: Gate, *,
               signals: SignalState, progress: Progress, callbacks: list[Any]) -> None:
    """Train the study's trials in ``slots`` until the gate says no more (or too many fail).

    Args:
        study: The study (this worker's sampler).
        objective: Plans, starts and finishes each trial.
        slots: One slot, or a population.
        gate: The budget, or confirm's queue.
        signals: Where SIGINT/SIGTERM are recorded (held while the slots train).
        progress: The progress bar (its ``warn`` prints; closed on return).
        callbacks: Called after each trial, e.g. the progress bar and the figure refresher.

    Raises:
        Interrupted: SIGINT/SIGTERM (every running trial is failed as interrupted).
        DatabaseLost: the database failed ``STORAGE_RETRIES`` times in a row.
        FailureStreak: :data:`MAX_CONSECUTIVE_FAILURES` trials in a row failed.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    from vae_search.storage.heartbeat import Heartbeats
    from vae_search.storage.report_writer import ReportWriter

    heartbeats = Heartbeats(study_storage(study), objective.config.run.heartbeat_interval)
    reports = ReportWriter(name="reports")
    loop = TrialLoop(study, objective, slots, gate, signals=signals, callbacks=callbacks,
                     heartbeats=heartbeats, reports=reports, warn=progress.warn)
    retries = LostConnections(progress.warn)
    signals.training = True  # held until an epoch boundary: a trial is never half-written
    try:
        with reports:
            try:
                while True:
                    try:
                        loop.fill()  # starts nothing once a signal is held
                        # One that arrived during start-up, or while a trial was asked or
                        # loaded: the new trial is failed before it trains an epoch.
                        signals.raise_pending()
                        if not loop.running:
                            if not loop.refill:
                                break
                            signals.training = False  # waiting on other workers: a signal
                            signals.raise_pending()  # ends it now
                            if not gate.slot_free(study):
                                break
                            signals.training = True
                            continue  # another worker's trial ended: a slot opened
                        loop.epoch()
                        signals.raise_pending()
                    except (ValueError, UpdateFinishedTrialError):
                        if not loop.drop_taken_over():
                            raise
                        progress.warn(TAKEN_OVER)
                    except Exception as exc:
                        if not is_storage_fault(exc):
                            raise
                        try:  # waits before the retry; raises DatabaseLost after too many
                            retries.lost_connection(exc, loop.finished)
                        finally:
                            loop.fail_running(f"database connection lost: {error_reason(exc)}")
            except Interrupted:
                loop.fail_running(FAIL_INTERRUPTED)
                raise
            except Exception as exc:  # a bug or a user's model: no trial is left RUNNING
                with contextlib.suppress(Exception):
                    loop.fail_running(f"error: {error_reason(exc)}")
                raise
    finally:
        signals.training = False
        heartbeats.close()
        progress.close()
    if loop.streak is not None:
        raise FailureStreak(f"stopped: {loop.streak}")
