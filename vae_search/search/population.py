"""The population loop: P trials of one study trained side by side, each its own Optuna trial.

:func:`run_population` is :func:`~vae_search.search.worker.run_worker`'s loop for
``--population P > 1``.
It keeps P slots of one :class:`~vae_search.models.population.PopulationTrainer` busy through
Optuna's ask-and-tell interface:

* **Refill at epoch boundaries.** A free slot takes the next ``study.ask()`` (the sampler's
  constant liar sees the other members as running), behind the same budget gate as the worker
  loop: a slot is filled only while ``finished + running < --trials``, so ``--trials`` stays
  exact. The reservation check does not wait (this process's own running trials cannot finish
  while it waits): a trial that would have to is surplus.
* **Each member is its own trial.** It starts as :meth:`Objective.start` starts one (same seed,
  same initial weights), reports its validation ELBO every epoch, is pruned on its own by the
  study's pruner from its ``prune_from_epoch``, and ends with :meth:`Objective._finish` (the same
  diagnostics, user attrs, constraints and artifacts), run on a one-at-a-time trainer holding
  the member's weights. A pruned, finished or diverged member frees its slot.
* **Signals** are held while the population trains and raised at the next epoch boundary; every
  running member is then failed as ``interrupted``. **Heartbeats** are recorded for every running
  member (the optimize loop would do it for one trial); a killed worker's members go stale and
  are failed (and retried) like any other, so re-running the command resumes.

A ``pareto`` study works the same way, without reports or pruning (Optuna cannot prune it).
Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.search.budget import BudgetGate, BudgetReached
from vae_search.storage.heartbeat import Heartbeats
from vae_search.trial.pruning import should_prune

if TYPE_CHECKING:
    import optuna

    from vae_search.cli import RunOptions
    from vae_search.config.schema import StudyConfig
    from vae_search.search.signals import SignalState
    from vae_search.storage.report_writer import ReportWriter
    from vae_search.trial.objective import Objective, TrialPlan

__all__ = ["MAX_POPULATION", "MEMBERS_PER_CORE", "default_population", "population_size",
           "run_population"]

MEMBERS_PER_CORE = 8  # measured: per-member cost levels off around 16 members on 2 cores
MAX_POPULATION = 32  # more only adds sampler lag (constant-liar trials) for little speed
MEMORY_SHARE = 0.25  # of the available memory a population may take
MAX_CONSECUTIVE_FAILURES = 10  # as the worker loop: stop refilling after this many in a row


def _member_bytes(config: StudyConfig, n_features: int, rows: int) -> int:
    """A generous per-member memory estimate: weights x 4 (value, Adam's two moments, the
    gradient) and the activations of a training batch and of the validation split."""
    widths = (n_features, *config.model.hidden, 2 * max(config.search.latent_dim))
    weights = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if config.model.decoder == "made":
        latent = max(config.search.latent_dim)
        weights += n_features * n_features + sum(config.model.hidden) * latent
    activations = (config.train.batch_size + rows) * 4 * sum(widths)
    return 4 * (4 * weights + activations)


def default_population(config: StudyConfig, n_features: int, rows: int, *,
                       cpus: int | None = None, available: int | None = None) -> int:
    """``min(MAX_POPULATION, MEMBERS_PER_CORE x cores, MEMORY_SHARE x available memory /
    per-member memory)``, at least 1.

    Args:
        config: The study.
        n_features: Data dims.
        rows: Validation rows (evaluated for every member at once).
        cpus: CPU cores (default: this process's).
        available: Available memory in bytes (default: this machine's, via ``os.sysconf``).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 2**31
    by_memory = int(MEMORY_SHARE * available) // _member_bytes(config, n_features, rows)
    return max(1, min(MAX_POPULATION, MEMBERS_PER_CORE * cpus, by_memory))


def population_size(options: RunOptions, config: StudyConfig, dataset: Any,
                    trials_left: int) -> tuple[int, str]:
    """How many trials this worker trains side by side, and a note when it is not what was
    asked for (gru and user builders train one at a time)."""
    from vae_search.models.population import FAMILIES

    asked = options.population
    if config.model.builder or config.model.decoder not in FAMILIES:
        what = "model.builder" if config.model.builder else f"the {config.model.decoder} decoder"
        note = f"note: --population {asked}: {what} trains one trial at a time" if (
            asked and asked > 1) else ""
        return 1, note
    n_features = int(dataset.x_train.shape[1])
    # A --workers child runs with --threads = cores / workers: its share of the cores.
    size = asked or default_population(config, n_features, int(dataset.x_val.shape[0]),
                                       cpus=options.threads)
    return max(1, min(size, trials_left)), ""


@dataclass
class Member:
    """One running trial in a slot."""

    trial: optuna.Trial
    plan: TrialPlan  # parameters, schedule, seed, pruning: as the one-at-a-time objective plans
    epoch: int = 0
    recon: float = float("nan")
    history: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in keys.HISTORY_FIELDS})


class PopulationLoop:
    """The slots, the study and the per-epoch bookkeeping (see the module docstring)."""

    def __init__(self, study: optuna.Study, objective: Objective, size: int, gate: BudgetGate,
                 *, callbacks: list[Any], heartbeats: Heartbeats, reports: ReportWriter,
                 warn: Any = print) -> None:
        from vae_search.models import get_trainer, spec_for
        from vae_search.models.population import PopulationTrainer

        self.study = study
        self.objective = objective
        self.config = objective.config
        self.gate = gate
        self.callbacks = callbacks
        self.heartbeats = heartbeats
        self.reports = reports  # the members' storage writes, off the training thread
        self.warn = warn
        self.pareto = self.config.search.objective == "pareto"
        widest = spec_for(self.config, objective.dataset, max(self.config.search.latent_dim))
        self.trainer = PopulationTrainer(get_trainer(widest), size)
        self.slots: list[Member | None] = [None] * size
        self.refill = True  # False once the budget is met, the timeout passed or trials fail
        self.warmed_up = False  # the median pruner has its n_startup_trials completed trials
        self.failures = 0  # consecutive failed members
        self.finished = 0  # members this loop saw to the end (any state)
        self.completed = 0  # of which COMPLETE: the only ones the median rule reads
        self.unstarted: list[optuna.Trial] = []  # asked for, but never made it into a slot

    # -- members -----------------------------------------------------------------------------

    def fill(self) -> None:
        """Refill free slots from ``study.ask()`` while the budget has room.

        Stale trials of dead workers are failed first (and re-queued by the storage's retry
        callback), as the optimize loop does before each trial.
        """
        if self.refill and None in self.slots:
            self.gate.reap(self.study)
        room = self._warm_up_room()
        for slot, member in enumerate(self.slots):
            if member is not None or not self.refill:
                continue
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
                trial = self.study.ask()
            try:
                self.gate.admit(trial, wait=False)
                self.slots[slot] = self._start(slot, trial)
            except BudgetReached:  # another worker asked at the same instant
                self._tell(trial, state="FAIL")
                return
            except BaseException:  # a lost connection, a signal: failed by fail_running
                self.unstarted.append(trial)
                raise

    def _warm_up_room(self) -> int | None:
        """How many more members may start while the median pruner is still warming up.

        The median pruner judges nobody until ``pruner.n_startup_trials`` trials have
        completed. A full population started at once would train its whole first wave to the
        end unjudged (a one-at-a-time worker has its first pruning candidate at trial
        ``n_startup_trials + 1``), so until then the population holds that many members.
        ``None``: no limit (warmed up, or another pruner).
        """
        from optuna.trial import TrialState

        wanted = self.config.pruner.n_startup_trials
        if self.warmed_up or self.pareto or self.config.pruner.name != "median" or wanted <= 0:
            return None
        complete = len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if complete >= wanted:
            self.warmed_up = True
            return None
        return wanted - complete - self.running

    def _start(self, slot: int, trial: optuna.Trial) -> Member:
        from vae_search.storage._optuna import set_user_attrs, trial_id

        self.heartbeats.add(trial_id(trial))
        plan, attrs = self.objective.plan(trial)  # the same plan a one-at-a-time trial makes
        set_user_attrs(trial, attrs)
        self.trainer.load(slot, self.objective.start(plan.params, plan.seed))
        return Member(trial, plan)

    def betas(self) -> list[float]:
        return [0.0 if m is None else m.plan.schedule(m.epoch) for m in self.slots]

    def epoch(self) -> None:
        """Train every slot one epoch, then report, prune, finish or fail each member."""
        o = self.objective
        out = self.trainer.run_epoch(
            o.x_train, o.x_val, self.betas(), eval_seed=self.config.seed,
            active_threshold=self.config.collapse.active_threshold)
        for slot, member in enumerate(self.slots):
            if member is not None:
                self._after_epoch(slot, member, out[slot])

    def _after_epoch(self, slot: int, member: Member, row: Any) -> None:
        from vae_search.storage._optuna import set_user_attrs

        epoch, trial = member.epoch, member.trial
        beta = member.plan.schedule(epoch)
        loss, elbo, member.recon = float(row[0]), -float(row[3]), float(row[4])
        if not (math.isfinite(loss) and math.isfinite(elbo)):
            reason = (f"training diverged at epoch {epoch} (beta={beta:.3g}): "
                      f"train loss {loss}, validation ELBO {elbo}")
            set_user_attrs(trial, {keys.ATTR_FAIL_REASON: reason,
                                   keys.ATTR_HISTORY: member.history})
            self._end(slot, state="FAIL")
            return
        record = {"epoch": epoch, "beta": beta, "train_loss": loss, "val_elbo": elbo,
                  "val_kl": float(row[5]), "active_units": int(row[6])}
        for name in keys.HISTORY_FIELDS:
            member.history[name].append(record[name])
        member.epoch += 1
        if member.plan.reporting:  # not pareto, not a confirmation run
            self.reports.submit(trial.report, elbo, step=epoch)
            # The pruner refuses before prune_from anyway; not asking saves a storage read.
            # The members share one read of the completed trials until one of them completes
            # (other workers' trials join at the pruner's timed refresh), not one per member.
            if epoch >= member.plan.prune_from and should_prune(
                trial, dict(enumerate(member.history["val_elbo"])), member.plan.prune_from,
                read=("population", id(self), self.completed), store=self.reports.flush,
            ):
                self._diagnose(slot, member)
                self._end(slot, state="PRUNED")
                return
        if member.epoch == self.config.train.epochs:
            diag = self._diagnose(slot, member)
            self._end(slot, values=(elbo, diag.mutual_info) if self.pareto else elbo)

    def _diagnose(self, slot: int, member: Member) -> Any:
        """:meth:`Objective._finish` on a one-at-a-time trainer holding the member's weights."""
        from vae_search.models import get_trainer

        trainer = get_trainer(self.objective.spec(member.plan.params))
        self.trainer.unload(slot, trainer)
        return self.objective._finish(member.trial, trainer, member.recon, member.plan.seed,
                                      member.history, self.reports,
                                      iwae_samples=member.plan.iwae_samples)

    def _end(self, slot: int, *, state: str | None = None, values: Any = None) -> None:
        member = self.slots[slot]
        assert member is not None
        self._drop(slot)
        frozen = self._tell(member.trial, state=state, values=values)
        self.finished += 1
        self.completed += frozen.state.name == "COMPLETE"
        if frozen.state.name == "FAIL":
            self.failures += 1
            if self.failures >= MAX_CONSECUTIVE_FAILURES:
                last = frozen.user_attrs.get(keys.ATTR_FAIL_REASON, "see log")
                self.warn(f"stopping: {self.failures} trials in a row failed (last: {last})")
                self.refill = False
        else:
            self.failures = 0

    def _tell(self, trial: optuna.Trial, *, state: str | None = None,
              values: Any = None) -> optuna.trial.FrozenTrial:
        from optuna.trial import TrialState

        from vae_search.storage._optuna import trial_id

        self.heartbeats.discard(trial_id(trial))
        self.reports.flush()  # its reports (queued in order) are stored before it ends
        frozen = self.study.tell(trial, values, state=None if state is None
                                 else TrialState[state], skip_if_finished=True)
        for callback in self.callbacks:
            callback(self.study, frozen)
        return frozen

    def _drop(self, slot: int) -> None:
        """Free ``slot`` here; its trial is no longer beaten for (see :meth:`fail_running`)."""
        from vae_search.storage._optuna import trial_id

        member = self.slots[slot]
        assert member is not None
        self.slots[slot] = None
        self.trainer.free(slot)
        self.heartbeats.discard(trial_id(member.trial))

    def fail_running(self, reason: str) -> None:
        """Fail every running member (an interruption, a lost connection), recording ``reason``.

        A member whose failure cannot be stored (the database is still down) is dropped here
        and left RUNNING without heartbeats: it goes stale and is failed and retried by the
        next stale-trial check (any worker's, or the proxy's).
        """
        from optuna.exceptions import UpdateFinishedTrialError

        from vae_search.storage.connection import storage_faults

        faults = storage_faults()
        with contextlib.suppress(*faults):
            self.reports.flush()  # what can still be stored; a failed write is forgotten
        for slot, member in enumerate(self.slots):
            if member is None:
                continue
            try:
                with contextlib.suppress(UpdateFinishedTrialError):  # failed as stale already
                    member.trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
                self._end(slot, state="FAIL")
            except faults:
                if self.slots[slot] is not None:
                    self._drop(slot)
        # A trial asked for just before the fault may have no heartbeat yet: no stale-trial
        # check would ever find it, so it is failed here (or at the next fault's retry).
        for trial in list(self.unstarted):
            with contextlib.suppress(*faults):
                with contextlib.suppress(UpdateFinishedTrialError):
                    trial.set_user_attr(keys.ATTR_FAIL_REASON, reason)
                self._tell(trial, state="FAIL")
                self.unstarted.remove(trial)

    def drop_taken_over(self) -> bool:
        """Drop the members another worker failed as stale (their heartbeats were late);
        returns whether there were any."""
        from vae_search.storage._optuna import fresh_trial

        taken = [slot for slot, m in enumerate(self.slots)
                 if m is not None and fresh_trial(m.trial).state.is_finished()]
        for slot in taken:
            self._drop(slot)
        return bool(taken)

    @property
    def running(self) -> int:
        return sum(m is not None for m in self.slots)


def run_population(study: optuna.Study, config: StudyConfig, dataset: Any, options: RunOptions,
                   signals: SignalState, deadline: float | None, size: int) -> None:
    """Train the study's trials ``size`` at a time until the budget is met (or the timeout).

    A lost database connection fails the running members (they are recovered through their
    stale heartbeats if even that cannot be stored) and the loop goes on, as the one-at-a-time
    loop does (:class:`~vae_search.search.signals.LostConnections`).

    Raises:
        Interrupted: SIGINT/SIGTERM (every running member is failed as interrupted).
        DatabaseLost: the database failed ``STORAGE_RETRIES`` times in a row.
    """
    from vae_search.models import configure_threads

    configure_threads(options.threads)  # before any TensorFlow op
    from optuna.exceptions import UpdateFinishedTrialError

    from vae_search.report import FigureRefresher, Progress
    from vae_search.search.signals import (
        FAIL_INTERRUPTED,
        TAKEN_OVER,
        Interrupted,
        LostConnections,
        worker_identity,
    )
    from vae_search.storage._optuna import study_storage
    from vae_search.storage.artifacts import artifact_hook
    from vae_search.storage.connection import error_reason, is_storage_fault
    from vae_search.storage.report_writer import ReportWriter
    from vae_search.trial.objective import Objective

    save_artifacts = artifact_hook(options.storage, options.artifacts)

    def on_finish(trial: optuna.Trial, trainer: Any, data: Any) -> None:
        save_artifacts(trial, trainer, data)

    objective = Objective(config, dataset, worker=worker_identity(), on_finish=on_finish)
    gate = BudgetGate(options.trials, deadline=deadline)
    progress = Progress(study, options.trials, enabled=not options.quiet)
    heartbeats = Heartbeats(study_storage(study), config.run.heartbeat_interval)
    reports = ReportWriter(name="population-reports")
    loop = PopulationLoop(
        study, objective, size, gate, heartbeats=heartbeats, reports=reports,
        warn=progress.warn, callbacks=[progress, FigureRefresher(
            config.run.refresh_every, seconds=config.run.refresh_seconds)],
    )
    retries = LostConnections(progress.warn)
    signals.training = True  # held until an epoch boundary: a member is never half-written
    try:
        with reports:
            try:
                while True:
                    try:
                        loop.fill()
                        if not loop.running:
                            if not loop.refill:
                                break
                            signals.training = False  # waiting on other workers: a signal
                            signals.raise_pending()  # ends it now
                            if not gate.slot_free(study):
                                break
                            signals.training = True
                            continue  # another worker's trial failed: a slot opened
                        loop.epoch()
                        signals.raise_pending()
                    except UpdateFinishedTrialError:
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
    finally:
        signals.training = False
        heartbeats.close()
        progress.close()
