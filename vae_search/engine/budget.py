"""The study-wide trial budget: ``--trials`` exact across any number of workers.

Used by the worker loop (:mod:`~vae_search.engine.worker`) before it asks for a trial and when
a trial
starts. Reads the shared storage only; imports Optuna only when called.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vae_search import keys
from vae_search.report.rows import StateCounts, is_confirmation
from vae_search.storage.heartbeat import StaleTrials

if TYPE_CHECKING:
    import optuna

__all__ = ["BUDGET_POLL", "FAIL_SURPLUS", "BudgetGate", "BudgetReached"]

BUDGET_POLL = 2.0  # seconds between budget checks while other workers' trials decide it
# Seconds a stale trial's failure may precede its re-queued copy: Optuna's stale check fails
# the trial, then queues the copy (a read and a write later, ms apart, seconds at worst).
REQUEUE_WAIT = 5.0
WAIT_NOTICE = 10.0  # seconds a wait on other workers' trials lasts before the run says why
FAIL_SURPLUS = "surplus"  # fail_reason prefix of a trial not run because the budget was met


class BudgetReached(Exception):
    """This worker's trial is surplus: the study's budget is met (or the timeout passed)."""


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
    have nothing left to start. Behind the gRPC proxy that check does nothing in the workers;
    the proxy process runs it (:mod:`vae_search.storage.heartbeat`).

    Args:
        budget: The study's total number of finished trials (``--trials``).
        deadline: ``time.monotonic()`` after which no new trial starts (``--timeout``).
        warn: Says once why a wait began (a dead worker's trial may hold the budget until it
            goes stale: the user should know, and for how long).
        grace_period: ``run.grace_period``, for that line.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(self, budget: int, *, deadline: float | None = None,
                 warn: Callable[[str], None] | None = None,
                 grace_period: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.deadline = deadline
        self.warn = warn
        self.grace_period = grace_period
        self.clock = clock
        self._told: set[int] = set()  # the running trials already named in a waiting line
        self._failed: dict[int, float] = {}  # unexplained failures: when this gate saw each
        self._looked = False  # the first look takes the failures already there as history
        self.stale = StaleTrials()

    def _waiting(self, study: optuna.Study) -> None:
        """One line per new set of trials this worker waits for."""
        from optuna.trial import TrialState

        if self.warn is None:
            return
        running = {t.number for t in study.get_trials(deepcopy=False,
                                                        states=(TrialState.RUNNING,))}
        if not running or running <= self._told:
            return
        self._told |= running
        numbers = ", ".join(f"#{n}" for n in sorted(running)[:5])
        more = f" and {len(running) - 5} more" if len(running) > 5 else ""
        stale = (f"; a trial whose worker died is failed after {self.grace_period:g} s without "
                 "a heartbeat (run.grace_period)" if self.grace_period else "")
        self.warn(f"waiting: the running trials ({numbers}{more}) may fill the budget of "
                  f"{self.budget}{stale}")

    @staticmethod
    def _counts(study: optuna.Study, below: int) -> StateCounts:
        """Finished trials, and the running ones numbered below ``below`` (the reservation)."""
        from optuna.trial import TrialState

        trials = study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        )
        return StateCounts.of_trials(
            t for t in trials
            if t.state != TrialState.RUNNING or t.number < below
        )

    def _timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def reap(self, study: optuna.Study) -> None:
        """Fail (and re-queue) stale trials of dead workers: Optuna's heartbeat check, plus
        the trials that never had a heartbeat
        (:class:`~vae_search.storage.heartbeat.StaleTrials`)."""
        self.stale.check(study)

    @staticmethod
    def ask(study: optuna.Study) -> optuna.Trial:
        """The sampler's next trial."""
        return study.ask()

    def _requeue_pending(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        """Trials failed by the stale check whose re-queued copy is not in the study yet, for
        ``REQUEUE_WAIT`` s after this gate first saw each (see the class)."""
        from optuna.trial import TrialState

        now = self.clock()
        # A copy lists every failed ancestor in retry_history (its failed_trial is the first).
        copied = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
        pending = 0
        for t in trials:
            if (t.state != TrialState.FAIL or keys.ATTR_FAIL_REASON in t.user_attrs
                    or t.number in copied or is_confirmation(t)):
                continue
            seen = self._failed.setdefault(t.number, now if self._looked else float("-inf"))
            pending += now - seen < REQUEUE_WAIT
        self._looked = True
        return pending

    def poll(self, study: optuna.Study) -> bool | None:
        """One look, no waiting: a new trial may be asked for (True), the budget is met or the
        timeout passed (False), or the trials in flight may still fill it (None)."""
        trials = study.get_trials(deepcopy=False)
        counts = StateCounts.of_trials(trials)
        if counts.finished >= self.budget or self._timed_out():
            return False
        in_flight = counts.running + self._requeue_pending(trials)
        return True if counts.finished + in_flight < self.budget else None

    def slot_free(self, study: optuna.Study) -> bool:
        """Wait until a new trial may be asked for (True) or the budget is met (False)."""
        began = time.monotonic()
        # A wait as long as a trial is the normal end of a run with several workers; say why
        # only once it lasts (sooner when a dead worker's trial would go stale sooner).
        notice = min(WAIT_NOTICE, self.grace_period / 2) if self.grace_period else WAIT_NOTICE
        while (free := self.poll(study)) is None:
            if time.monotonic() - began >= notice:
                self._waiting(study)
            self.reap(study)
            time.sleep(BUDGET_POLL)
        return free

    def admit(self, trial: optuna.Trial, *, wait: bool = True) -> None:
        """The reservation check at trial start; raises :class:`BudgetReached` if surplus.

        ``wait=False`` (a population, whose own running trials cannot finish while it waits)
        treats a trial that would have to wait as surplus. A confirmation run (``vae-search
        confirm`` enqueued it; any worker may pop it) is outside the budget and always
        admitted.
        """
        if keys.ATTR_CONFIRMS in trial.user_attrs:
            return
        while True:
            counts = self._counts(trial.study, below=trial.number)
            if counts.finished >= self.budget:
                why = (f"the study's budget of {self.budget} finished trials was met by other "
                       "workers")
            elif self._timed_out():
                why = "--timeout passed"
            elif counts.finished + counts.running < self.budget:
                return
            elif not wait:
                why = "the trials already running may fill the study's budget"
            else:
                self._waiting(trial.study)
                self.reap(trial.study)
                time.sleep(BUDGET_POLL)
                continue
            reason = f"{FAIL_SURPLUS}: {why} before this trial started; it was not run"
            trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
            raise BudgetReached(reason)
