"""One trial: sample a schedule, train the annealed VAE epoch by epoch, report, prune, diagnose.

The value returned (and reported every epoch) is the validation ELBO at beta = 1 with ``sum``
reduction, in nats per example, whatever beta and reduction the trial trained with: that is what
makes trials comparable. Higher is better (the study maximizes it). With
``search.objective = "pareto"`` the trial returns ``(ELBO, I(x;z))``, both maximized; Optuna
cannot prune multi-objective studies, so such a trial neither reports nor asks to be pruned.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from vae_search import keys
from vae_search._tf import tf
from vae_search.config.schema import StudyConfig
from vae_search.data.datasets import Dataset, load_dataset
from vae_search.models import EpochResult, Trainer, TrainerSpec, get_trainer, spec_for
from vae_search.storage._optuna import set_user_attrs  # the batched user-attr write
from vae_search.storage.report_writer import ReportWriter
from vae_search.trial.baseline import decoder_only_nll, owes_baseline
from vae_search.trial.metrics import Diagnostics, diagnose, mutual_information
from vae_search.trial.pruning import should_prune
from vae_search.trial.reference import study_references, to_attr
from vae_search.trial.schedule import Schedule
from vae_search.trial.space import TrialParams, suggest
from vae_search.trial.steering import Steering

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

__all__ = ["CONFIRM_IWAE_SAMPLES", "Objective", "TrainingDiverged", "TrialPlan", "TrialRun",
           "set_user_attrs", "trial_seed"]

# k of the IWAE bound of a confirmation run (final numbers; the search uses
# collapse.iwae_samples, 100 by default): the bound tightens as k grows (Burda et al. 2016).
CONFIRM_IWAE_SAMPLES = 1000

# Diagnostics field -> user-attr key (the attrs written when a trial completes or is pruned).
_DIAGNOSTIC_ATTRS = (
    ("active_units", keys.ATTR_ACTIVE_UNITS),
    ("unit_variances", keys.ATTR_UNIT_VARIANCES),
    ("kl_per_dim", keys.ATTR_KL_PER_DIM),
    ("kl_total", keys.ATTR_KL_TOTAL),
    ("collapsed_dims", keys.ATTR_COLLAPSED_DIMS),
    ("mutual_info", keys.ATTR_MUTUAL_INFO),
    ("mutual_info_sd", keys.ATTR_MUTUAL_INFO_SD),
    ("recon", keys.ATTR_RECON),
    ("collapsed", keys.ATTR_COLLAPSED),
)


@dataclass(frozen=True)
class TrialPlan:
    """How one trial runs, settled when it starts (:meth:`Objective.plan`)."""

    params: TrialParams
    schedule: Schedule
    seed: int
    epochs: int  # train.epochs
    prune_from: int  # first epoch at which the pruner is asked
    reporting: bool  # reports every epoch and may be pruned (not pareto, not a confirm run)
    pareto: bool  # the value is (ELBO, I(x;z))
    iwae_samples: int | None  # the IWAE bound's k (None: collapse.iwae_samples)


@dataclass
class TrialRun:
    """One trial in training: its plan, its history so far, and the steps of an epoch.

    Whoever trains it (:meth:`Objective.__call__`, or the search's loop with many trials side
    by side) calls :meth:`after_epoch` with each epoch's result and ends it on the state that
    returns: ``"FAIL"`` (diverged, ``fail_reason`` stored), ``"PRUNED"`` or ``"COMPLETE"``.
    """

    trial: optuna.Trial
    plan: TrialPlan
    epoch: int = 0  # epochs trained
    elbo: float = float("nan")  # the last validation ELBO (beta = 1, sum), nats per example
    recon: float = float("nan")
    fail_reason: str = ""
    history: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in keys.HISTORY_FIELDS})
    steering: Steering = field(init=False)  # the family's beta and aggressive mode per epoch

    def __post_init__(self) -> None:
        self.steering = Steering.of(self.plan.params, self.plan.epochs)

    @property
    def beta(self) -> float:
        """The KL weight of the next epoch."""
        return self.steering.beta

    @property
    def inner_steps(self) -> int:
        """The next epoch's cap on encoder steps per decoder step (0: not aggressive); such an
        epoch's :meth:`after_epoch` needs the model's I(x;z) (:meth:`Objective.information`)."""
        return self.steering.inner

    def after_epoch(self, result: EpochResult, reports: ReportWriter, *,
                    read: Hashable | None = None,
                    information: float | None = None) -> str | None:
        """Record one trained epoch: divergence, history, report, the pruner, the end.

        Args:
            result: The epoch (trained at :attr:`beta`, aggressively if :attr:`inner_steps`).
            reports: The writer that stores the report off the training thread.
            read: Which read of the completed trials the pruner may share
                (:func:`~vae_search.trial.pruning.should_prune`).
            information: After an aggressive epoch, the model's I(x;z).

        Returns:
            ``None`` while the trial goes on, else the state to end it in.
        """
        epoch, beta = self.epoch, self.beta
        loss, elbo = result.train_loss, -result.neg_elbo
        if not (math.isfinite(loss) and math.isfinite(elbo)):
            self.fail_reason = (f"training diverged at epoch {epoch} (beta={beta:.3g}): "
                                f"train loss {loss}, validation ELBO {elbo}")
            reports.flush()
            set_user_attrs(self.trial, {keys.ATTR_FAIL_REASON: self.fail_reason,
                                        keys.ATTR_HISTORY: self.history})
            return "FAIL"
        self.elbo, self.recon = elbo, result.recon
        record = {"epoch": epoch, "beta": beta, "train_loss": loss, "val_elbo": elbo,
                  "val_kl": result.kl, "active_units": result.active_units}
        for name in keys.HISTORY_FIELDS:
            self.history[name].append(record[name])
        self.epoch += 1
        self.steering.observe(result.kl, information)
        if self.plan.reporting:
            reports.submit(self.trial.report, elbo, step=epoch)
            # The pruner refuses before prune_from anyway; not asking saves a storage read.
            if epoch >= self.plan.prune_from and should_prune(
                self.trial, dict(enumerate(self.history["val_elbo"])), self.plan.prune_from,
                read=read, store=reports.flush,
            ):
                return "PRUNED"
        return "COMPLETE" if self.epoch == self.plan.epochs else None

    def value(self, diag: Diagnostics) -> float | tuple[float, float]:
        """What the trial is told: its ELBO, or ``(ELBO, I(x;z))`` in a ``pareto`` study."""
        return (self.elbo, diag.mutual_info) if self.plan.pareto else self.elbo


class TrainingDiverged(RuntimeError):
    """The loss or the ELBO became NaN or infinite; the trial fails, the study goes on."""


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A per-trial seed: the same study seed and trial number give the same trial."""
    return (study_seed * 1_000_003 + trial_number) % (2**31 - 1)


class Objective:
    """The Optuna objective of a vae_search study.

    Args:
        config: The study configuration.
        dataset: The loaded dataset (loaded from ``config`` when omitted).
        worker: An identity recorded in each trial's user attrs (host:pid by the runner).
        on_finish: Called once the diagnostics are stored (complete or pruned) with
            ``(trial, trainer, dataset)``; the trained model is still loaded (artifacts).
    """

    def __init__(
        self,
        config: StudyConfig,
        dataset: Dataset | None = None,
        *,
        worker: str = "",
        on_finish: Callable[[optuna.Trial, Trainer, Dataset], object] | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset if dataset is not None else load_dataset(config)
        self.worker = worker
        self.on_finish = on_finish
        self.x_train = tf.constant(self.dataset.x_train)
        self.x_val = tf.constant(self.dataset.x_val)

    def spec(self, params: TrialParams) -> TrainerSpec:
        return spec_for(self.config, self.dataset, params.latent_dim)

    def start(self, params: TrialParams, seed: int) -> Trainer:
        """The trial's trainer, freshly initialised from ``seed`` with its settings."""
        trainer = get_trainer(self.spec(params))
        trainer.reset(seed, reduction=params.reduction, free_bits=params.free_bits,
                      sigma2=params.sigma2, word_dropout=params.word_dropout)
        return trainer

    def run_epoch(self, trainer: Trainer, beta: float, inner_steps: int = 0) -> EpochResult:
        """One compiled call: train at ``beta`` (aggressively when ``inner_steps > 0``),
        validate at beta = 1, count active units.

        The validation noise draw is the study seed's, the same for every trial and epoch.
        """
        return trainer.run_epoch(self.x_train, self.x_val, beta=beta, eval_seed=self.config.seed,
                                 active_threshold=self.config.collapse.active_threshold,
                                 inner_steps=inner_steps)

    def information(self, trainer: Trainer, inner_steps: int) -> float | None:
        """I(x;z) on the validation split after an aggressive epoch (``None`` after others).

        One replicate with the study seed's draws: every epoch is measured with the same
        random numbers, so a change between epochs is the model's, not the estimator's noise.
        """
        if not inner_steps:
            return None
        mu, logvar = trainer.encode(self.x_val)
        return mutual_information(mu, logvar, batch_size=self.config.collapse.mi_batch_size,
                                  seed=self.config.seed)

    def step(self, run: TrialRun, trainer: Trainer, reports: ReportWriter) -> str | None:
        """Train ``run``'s next epoch in ``trainer``; record it (:meth:`TrialRun.after_epoch`)."""
        inner = run.inner_steps
        result = self.run_epoch(trainer, run.beta, inner)
        return run.after_epoch(result, reports, information=self.information(trainer, inner))

    def retrain(self, params: TrialParams, seed: int, epochs: int) -> tuple[Trainer, float]:
        """Train a stored trial again (same parameters and seed) for ``epochs`` epochs; returns
        the trainer and its last validation ELBO (what the trial reported, up to float noise)."""
        steering = Steering.of(params, self.config.train.epochs)
        trainer = self.start(params, seed)
        elbo = float("nan")
        for _ in range(epochs):
            inner = steering.inner
            result = self.run_epoch(trainer, steering.beta, inner)
            steering.observe(result.kl, self.information(trainer, inner))
            elbo = -result.neg_elbo
        return trainer, elbo

    def diagnostics(self, trainer: Trainer, recon: float, seed: int, *,
                    encoded: tuple[np.ndarray, np.ndarray] | None = None) -> Diagnostics:
        """The collapse diagnostics on the validation split (``encoded``: its ``(mu, logvar)``
        when already computed)."""
        k = self.config.collapse
        mu, logvar = encoded if encoded is not None else trainer.encode(self.x_val)
        return diagnose(
            mu,
            logvar,
            recon,
            active_threshold=k.active_threshold,
            kl_threshold=k.kl_threshold,
            min_active_units=k.min_active_units,
            min_mutual_info=k.min_mutual_info,
            mi_batch_size=k.mi_batch_size,
            mi_repeats=k.mi_repeats,
            mi_max_sd=k.mi_max_sd,
            seed=seed,
        )

    def iwae(self, trainer: Trainer, samples: int | None = None) -> dict[str, float]:
        """The IWAE bound on the validation split (``samples`` draws, by default
        ``collapse.iwae_samples``; the study seed's) and the ELBO on the same draws, nats per
        example, as the user attrs to store."""
        k = samples or self.config.collapse.iwae_samples
        iwae, elbo = trainer.bounds(self.x_val, k, seed=self.config.seed)
        return {keys.ATTR_IWAE: float(iwae.mean()), keys.ATTR_ELBO_K: float(elbo.mean())}

    def decoder_only_nll(self, *, between_epochs: Callable[[], None] | None = None) -> float:
        """Train the decoder without a latent code: see :mod:`vae_search.trial.baseline`."""
        return decoder_only_nll(self.config, self.dataset, self.x_train, self.x_val,
                                between_epochs=between_epochs)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """Run one trial on its own (``study.optimize(Objective(config))``); returns its ELBO,
        or ``(ELBO, I(x;z))`` in a ``pareto`` study. The search's loop runs the same steps
        (:meth:`begin`, :meth:`TrialRun.after_epoch`, :meth:`finish`) over its slots."""
        # Reports are stored by a second thread while the next epoch trains (report_writer).
        with ReportWriter(trial) as reports:
            run = self.begin(trial, reports)
            trainer = self.start(run.plan.params, run.plan.seed)
            while (state := self.step(run, trainer, reports)) is None:
                pass
            if state == "FAIL":
                raise TrainingDiverged(run.fail_reason)
            diag = self.finish(run, trainer, reports, pruned=state == "PRUNED")
            if state == "PRUNED":
                raise optuna.TrialPruned(f"pruned at epoch {run.epoch - 1} "
                                         f"(ELBO {run.elbo:.2f})")
            return run.value(diag)

    def plan(self, trial: optuna.Trial, *,
             between_epochs: Callable[[], None] | None = None) -> tuple[TrialPlan, dict[str, Any]]:
        """Sample the trial's parameters and settle how it runs; returns the plan and the start
        attrs to store.

        Computes the study's decoder-only baseline first if no trial has yet
        (``between_epochs`` is called after each of its epochs: a signal's safe point), and
        with it the pPCA reference where one applies (:mod:`vae_search.trial.reference`).
        """
        c = self.config
        if owes_baseline(trial):
            # Theory's reference (fixed-variance Gaussian only) first: one eigendecomposition,
            # so the report shows it while the baseline still trains.
            if references := study_references(c, self.dataset.x_train, self.dataset.x_val):
                trial.study.set_user_attr(keys.STUDY_ATTR_PPCA_REFERENCE, to_attr(references))
            nll = self.decoder_only_nll(between_epochs=between_epochs)
            trial.study.set_user_attr(keys.STUDY_ATTR_DECODER_ONLY_NLL, nll)
        epochs = c.train.epochs
        params = suggest(trial, c.search, epochs, c.model)
        steering = Steering.of(params, epochs)
        schedule = steering.schedule
        # A set-point trial's beta is the controller's: never planned to reach 1 (epochs).
        full_epoch = steering.prune_ready
        seed = trial_seed(c.seed, trial.number)
        # A confirmation run repeats a chosen schedule with a new seed: it is never pruned and
        # reports no intermediate values (the pruner's medians stay the search's own).
        confirming = keys.ATTR_CONFIRMS in trial.user_attrs
        plan = TrialPlan(
            params=params, schedule=schedule, seed=seed, epochs=epochs,
            # pruner.aware = false (the naive baseline): the pruner is asked from epoch 0.
            prune_from=full_epoch + c.pruner.patience if c.pruner.aware else 0,
            reporting=not (c.search.objective == "pareto" or confirming),
            pareto=c.search.objective == "pareto",
            iwae_samples=CONFIRM_IWAE_SAMPLES if confirming else None,
        )
        start_attrs: dict[str, Any] = {
            keys.ATTR_FULL_BETA_EPOCH: full_epoch,
            keys.ATTR_PRUNE_FROM_EPOCH: plan.prune_from,
            keys.ATTR_SEED: seed,
        }
        if self.worker:
            start_attrs[keys.ATTR_WORKER] = self.worker
        return plan, start_attrs

    def begin(self, trial: optuna.Trial, reports: ReportWriter, *,
              between_epochs: Callable[[], None] | None = None) -> TrialRun:
        """Plan ``trial`` (:meth:`plan`) and queue its start attrs; returns the running trial
        (its trainer comes from :meth:`start` with ``run.plan``'s parameters and seed)."""
        plan, start_attrs = self.plan(trial, between_epochs=between_epochs)
        reports.submit(set_user_attrs, trial, start_attrs)  # stored during the first epoch
        return TrialRun(trial, plan)

    def finish(self, run: TrialRun, trainer: Trainer, reports: ReportWriter, *,
               pruned: bool = False) -> Diagnostics:
        """The end of a complete or pruned trial: its diagnostics, IWAE bound, history and
        constraints stored (``trainer`` holds its trained weights), then ``on_finish``.

        A pruned trial keeps its diagnostics, history and constraints (the collapse figures
        and TPE read them) but pays for nothing only a complete trial is read for: the IWAE
        bound (the best-trials and confirmation tables) and ``on_finish`` (its artifact).
        """
        trial, recon, seed, history = run.trial, run.recon, run.plan.seed, run.history
        iwae_samples = run.plan.iwae_samples
        k = self.config.collapse
        # The IWAE bound (TensorFlow, which releases the GIL) computes on a second thread while
        # the diagnostics (NumPy) compute here, from the same trained weights, which neither
        # changes: the same numbers, ~7 ms sooner (of ~30; load 1.2). The encoder runs first,
        # so the two threads never trace a function at the same time.
        encoded = trainer.encode(self.x_val)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="iwae") as pool:
            iwae = None if pruned else pool.submit(self.iwae, trainer, iwae_samples)
            diag = self.diagnostics(trainer, recon, seed, encoded=encoded)
            d = asdict(diag)
            attrs = {attr: d[key] for key, attr in _DIAGNOSTIC_ATTRS}
            attrs[keys.ATTR_HISTORY] = history
            # Feasible (<= 0) exactly when the verdict is "not collapsed". TPE ranks infeasible
            # trials below every feasible one; sampler.constraint = false measures what that
            # buys.
            constraints = {
                keys.CONSTRAINT_ACTIVE_UNITS: float(k.min_active_units - diag.active_units),
                keys.CONSTRAINT_MUTUAL_INFO: float(k.min_mutual_info - diag.information),
            } if self.config.sampler.constraint else {}
            # Stored by the report thread (attrs and constraints in one transaction) while the
            # IWAE bound finishes: the same rows as writing them here, all stored before
            # on_finish runs.
            reports.submit(set_user_attrs, trial, attrs, constraints)
            if iwae is not None:
                reports.submit(set_user_attrs, trial, iwae.result())
        reports.flush()
        if self.on_finish is not None and not pruned:
            self.on_finish(trial, trainer, self.dataset)
        return diag
