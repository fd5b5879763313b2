"""The search space: the only module that calls ``trial.suggest_*``.

The box ``search.klstart x search.annealtime`` is validated in :mod:`vae_search.config` so that
``klstart + annealtime <= epochs`` holds everywhere in it: every trial ends at beta = 1, and the
space is fixed, which multivariate TPE needs to model the parameters jointly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from vae_search.config import SearchConfig
from vae_search.schedule import CyclicalSchedule, LinearSchedule, Schedule

if TYPE_CHECKING:
    import optuna

__all__ = ["PARAM_NAMES", "TrialParams", "params_from_mapping", "suggest"]

# Parameter names as stored in the study (also the dashboard's axis names).
KLSTART = "klstart"
ANNEALTIME = "annealtime"
LATENT_DIM = "latent_dim"
REDUCTION = "reduction"
SCHEDULE = "schedule"
CYCLES = "cycles"
RATIO = "ratio"
PARAM_NAMES = (KLSTART, ANNEALTIME, LATENT_DIM, REDUCTION, SCHEDULE, CYCLES, RATIO)


@dataclass(frozen=True)
class TrialParams:
    """Everything a trial samples. ``annealtime`` is the ramp length for both schedule kinds."""

    klstart: int
    annealtime: int
    latent_dim: int
    reduction: str
    schedule: str = "linear"
    cycles: int = 1
    ratio: float = 1.0

    def make_schedule(self, epochs: int) -> Schedule:
        """The trial's beta(epoch) function for a run of ``epochs`` epochs."""
        if self.schedule == "cyclical":
            return CyclicalSchedule(self.klstart, self.cycles, self.ratio, epochs)
        return LinearSchedule(self.klstart, self.annealtime)


def suggest(trial: optuna.trial.BaseTrial, space: SearchConfig, epochs: int) -> TrialParams:
    """Sample one point of the search space.

    Args:
        trial: The Optuna trial (or ``FixedTrial``).
        space: The validated search section of the study configuration.
        epochs: Training epochs (a cyclical schedule's cycle length depends on it).

    Returns:
        The sampled parameters. Single-choice dimensions are not suggested (they would only add
        noise to the dashboard); they take their one value.
    """
    schedule = space.schedule[0]
    if len(space.schedule) > 1:
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
    reduction = space.reduction[0]
    if len(space.reduction) > 1:
        reduction = trial.suggest_categorical(REDUCTION, list(space.reduction))
    return TrialParams(
        klstart=klstart,
        annealtime=annealtime,
        latent_dim=int(latent_dim),
        reduction=str(reduction),
        schedule=str(schedule),
        cycles=cycles,
        ratio=ratio,
    )


def params_from_mapping(
    params: Mapping[str, Any], space: SearchConfig, epochs: int
) -> TrialParams:
    """Rebuild :class:`TrialParams` from a finished trial's ``params`` (for reports)."""
    schedule = str(params.get(SCHEDULE, space.schedule[0]))
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
    )
