"""The search space: the only module that calls ``trial.suggest_*``.

The box ``search.klstart x search.annealtime`` is validated in :mod:`~vae_search.config.schema`
so that
``klstart + annealtime <= epochs`` holds everywhere in it: every trial ends at beta = 1, and the
space is fixed, which multivariate TPE needs to model the parameters jointly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vae_search.config.checks import LEGACY_FAMILIES, free_bits_range, word_dropout_range
from vae_search.config.schema import ModelConfig, SearchConfig
from vae_search.trial.schedule import CyclicalSchedule, LinearSchedule, Schedule

if TYPE_CHECKING:
    import optuna

__all__ = ["PARAM_NAMES", "TrialParams", "family_of", "params_from_mapping", "sigma2_of",
           "suggest"]

# Parameter names as stored in the study (also the dashboard's axis names).
KLSTART = "klstart"
ANNEALTIME = "annealtime"
LATENT_DIM = "latent_dim"
REDUCTION = "reduction"
SCHEDULE = "schedule"
CYCLES = "cycles"
RATIO = "ratio"
SIGMA2 = "sigma2"
FREE_BITS = "free_bits"
WORD_DROPOUT = "word_dropout"
FAMILY = "family"
KL_TARGET = "kl_target"
AGGRESSIVE_EPOCHS = "aggressive_epochs"
INNER_STEPS = "inner_steps"
PARAM_NAMES = (KLSTART, ANNEALTIME, LATENT_DIM, REDUCTION, SCHEDULE, CYCLES, RATIO, SIGMA2,
               FREE_BITS, WORD_DROPOUT, FAMILY, KL_TARGET, AGGRESSIVE_EPOCHS, INNER_STEPS)


@dataclass(frozen=True)
class TrialParams:
    """Everything a trial samples. ``annealtime`` is the ramp length for both schedule kinds.

    ``family`` is the trial's remedy (:data:`~vae_search.config.schema.FAMILIES`); the fields
    of the other families keep their neutral defaults.
    """

    klstart: int
    annealtime: int
    latent_dim: int
    reduction: str
    schedule: str = "linear"
    cycles: int = 1
    ratio: float = 1.0
    sigma2: float | None = None  # fixed-variance Gaussian: the trial's sigma^2 (None: learned)
    free_bits: float = 0.0  # lambda of sum_j max(lambda, KL_j); 0 = the plain KL
    word_dropout: float = 0.0  # gru: decoder-input dropout rate
    family: str = "warmup"
    kl_target: float = 0.0  # setpoint: the KL held after klstart, nats per example
    aggressive_epochs: int = 0  # aggressive: most epochs of encoder-first training
    inner_steps: int = 0  # aggressive: most encoder steps before each decoder step

    def make_schedule(self, epochs: int) -> Schedule:
        """The trial's beta(epoch) function for a run of ``epochs`` epochs."""
        if self.schedule == "cyclical":
            return CyclicalSchedule(self.klstart, self.cycles, self.ratio, epochs)
        return LinearSchedule(self.klstart, self.annealtime)


def sigma2_of(model: ModelConfig) -> float | None:
    """The model's fixed Gaussian variance (``None`` when the variance is learned or absent)."""
    return model.sigma2 if model.likelihood == "gaussian" and model.variance == "fixed" else None


def suggest(trial: optuna.trial.BaseTrial, space: SearchConfig, epochs: int,
            model: ModelConfig | None = None) -> TrialParams:
    """Sample one point of the search space.

    Args:
        trial: The Optuna trial (or ``FixedTrial``).
        space: The validated search section of the study configuration.
        epochs: Training epochs (a cyclical schedule's cycle length depends on it).
        model: The model section (its fixed ``sigma2`` when that is not searched).

    Returns:
        The sampled parameters. Single-choice dimensions are not suggested (they would only add
        noise to the dashboard); they take their one value.
    """
    family: str = space.families[0]
    if len(space.families) > 1:
        family = trial.suggest_categorical(FAMILY, list(space.families))
    legacy = space.families == LEGACY_FAMILIES
    schedule: str = space.schedule[0] if legacy else (
        "cyclical" if family == "cyclical" else "linear")
    if legacy and len(space.schedule) > 1:
        schedule = trial.suggest_categorical(SCHEDULE, list(space.schedule))
    klstart = trial.suggest_int(KLSTART, *space.klstart)
    cycles, ratio = 1, 1.0
    if schedule == "cyclical":
        cycles = trial.suggest_int(CYCLES, *space.cycles)
        ratio = trial.suggest_float(RATIO, *space.ratio)
        annealtime = CyclicalSchedule(klstart, cycles, ratio, epochs).ramp
    else:
        annealtime = trial.suggest_int(ANNEALTIME, *space.annealtime)
    latent_dim = space.latent_dim[0]
    if len(space.latent_dim) > 1:
        latent_dim = trial.suggest_categorical(LATENT_DIM, list(space.latent_dim))
    reduction: str = space.reduction[0]
    if len(space.reduction) > 1:
        reduction = trial.suggest_categorical(REDUCTION, list(space.reduction))
    sigma2 = sigma2_of(model) if model is not None else None
    if space.sigma2 is not None:
        sigma2 = space.sigma2[0]
        if len(space.sigma2) > 1:
            sigma2 = trial.suggest_categorical(SIGMA2, list(space.sigma2))
    # A range applies to every trial (legacy) or to its family's trials only.
    free_bits = word_dropout = kl_target = 0.0
    aggressive_epochs = inner_steps = 0
    if (lam := free_bits_range(space)) is not None and (legacy or family == "free_bits"):
        free_bits = trial.suggest_float(FREE_BITS, *lam)
    if (rate := word_dropout_range(space)) is not None and (legacy or family == "word_dropout"):
        word_dropout = trial.suggest_float(WORD_DROPOUT, *rate)
    if family == "setpoint":
        kl_target = trial.suggest_float(KL_TARGET, *space.kl_target)
    if family == "aggressive":
        aggressive_epochs = trial.suggest_int(AGGRESSIVE_EPOCHS, *space.aggressive_epochs)
        inner_steps = trial.suggest_int(INNER_STEPS, *space.inner_steps)
    return TrialParams(
        klstart=klstart,
        annealtime=annealtime,
        latent_dim=int(latent_dim),
        reduction=str(reduction),
        schedule=str(schedule),
        cycles=cycles,
        ratio=ratio,
        sigma2=None if sigma2 is None else float(sigma2),
        free_bits=float(free_bits),
        word_dropout=float(word_dropout),
        family=family_of(str(family), str(schedule)),
        kl_target=float(kl_target),
        aggressive_epochs=int(aggressive_epochs),
        inner_steps=int(inner_steps),
    )


def family_of(family: str, schedule: str) -> str:
    """The trial's family label: a legacy ``schedule = "cyclical"`` trial is a cyclical one."""
    return "cyclical" if schedule == "cyclical" else family


def params_from_mapping(
    params: Mapping[str, Any], space: SearchConfig, epochs: int,
    model: ModelConfig | None = None,
) -> TrialParams:
    """Rebuild :class:`TrialParams` from a finished trial's ``params`` (for reports)."""
    family = str(params.get(FAMILY, space.families[0]))
    default_schedule = space.schedule[0] if space.families == LEGACY_FAMILIES else "linear"
    schedule = str(params.get(SCHEDULE, "cyclical" if family == "cyclical" else default_schedule))
    klstart = int(params[KLSTART])
    cycles = int(params.get(CYCLES, 1))
    ratio = float(params.get(RATIO, 1.0))
    if schedule == "cyclical":
        annealtime = CyclicalSchedule(klstart, cycles, ratio, epochs).ramp
    else:
        annealtime = int(params[ANNEALTIME])
    return TrialParams(
        klstart=klstart,
        annealtime=annealtime,
        latent_dim=int(params.get(LATENT_DIM, space.latent_dim[0])),
        reduction=str(params.get(REDUCTION, space.reduction[0])),
        schedule=schedule,
        cycles=cycles,
        ratio=ratio,
        sigma2=float(params[SIGMA2]) if SIGMA2 in params else (
            space.sigma2[0] if space.sigma2 else (sigma2_of(model) if model else None)),
        free_bits=float(params.get(FREE_BITS, 0.0)),
        word_dropout=float(params.get(WORD_DROPOUT, 0.0)),
        family=family_of(family, schedule),
        kl_target=float(params.get(KL_TARGET, 0.0)),
        aggressive_epochs=int(params.get(AGGRESSIVE_EPOCHS, 0)),
        inner_steps=int(params.get(INNER_STEPS, 0)),
    )
