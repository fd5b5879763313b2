"""The report's read model: one row per finished trial, and one counter of trial states.

:func:`trial_rows` reads a study once into :class:`TrialRow` values that the figures and the
findings share. :class:`StateCounts` is the single place where trials are counted by state
(the progress bar, the run summary, the findings and the worker's budget all use it).
Nothing here imports TensorFlow, plotly or (at import time) Optuna.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.config.schema import ConfigError, StudyConfig, parse_config
from vae_search.trial.schedule import full_beta_epoch
from vae_search.trial.space import TrialParams, params_from_mapping

if TYPE_CHECKING:
    import optuna

__all__ = ["WARMUP_BINS", "StateCounts", "TrialRow", "best_rows", "by_family", "confirms_label",
           "diagnosed_rows", "elbo_value", "is_confirmation", "study_config", "trial_rows"]

COMPLETE, PRUNED, FAIL, RUNNING = "COMPLETE", "PRUNED", "FAIL", "RUNNING"
FINISHED_STATES = (COMPLETE, PRUNED, FAIL)  # the trials a report shows
# Schedule regions by warm-up length: the epochs before beta stays at 1 (full_beta_epoch).
WARMUP_BINS = ((0, 0, "none (beta = 1 from epoch 0)"), (1, 5, "short (1-5 epochs)"),
               (6, 15, "medium (6-15 epochs)"), (16, 10**9, "long (16+ epochs)"))


def is_confirmation(t: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial is a ``vae-search confirm`` run rather than one of the search's."""
    return keys.ATTR_CONFIRMS in t.user_attrs


def elbo_value(t: optuna.trial.FrozenTrial) -> float | None:
    """A complete trial's validation ELBO: its value, or its first value in a two-objective
    (``pareto``) study, where ``t.value`` raises. ``None`` for other states."""
    if t.state.name != COMPLETE or not t.values:
        return None
    return float(t.values[0])


@dataclass(frozen=True)
class StateCounts:
    """Trials by state, how many are marked collapsed, and the best complete value.

    Build it with :meth:`of_trials` (Optuna trials) or :meth:`of_rows` (:class:`TrialRow`).
    """

    complete: int = 0
    pruned: int = 0
    fail: int = 0
    running: int = 0
    collapsed: int = 0  # trials whose ``collapsed`` diagnostic is True
    best: float | None = None  # the highest value of a complete trial
    total: int = 0  # every trial counted, whatever its state

    @property
    def finished(self) -> int:
        """Complete + pruned: the trials that count towards ``--trials``."""
        return self.complete + self.pruned

    @classmethod
    def _tally(cls, items: Iterable[tuple[str, bool, float | None]]) -> StateCounts:
        counts = dict.fromkeys((COMPLETE, PRUNED, FAIL, RUNNING), 0)
        collapsed = total = 0
        best: float | None = None
        for state, is_collapsed, value in items:
            total += 1
            if state in counts:
                counts[state] += 1
            collapsed += is_collapsed
            if state == COMPLETE and value is not None and (best is None or value > best):
                best = value
        return cls(complete=counts[COMPLETE], pruned=counts[PRUNED], fail=counts[FAIL],
                   running=counts[RUNNING], collapsed=collapsed, best=best, total=total)

    @classmethod
    def of_trials(
        cls, trials: Iterable[optuna.trial.FrozenTrial], *, confirms: bool = False
    ) -> StateCounts:
        """Count Optuna trials (e.g. ``study.get_trials(deepcopy=False)``): the search's trials,
        or with ``confirms=True`` only the confirmation runs (which never count toward the
        search's ``--trials`` budget)."""
        return cls._tally(
            (t.state.name, t.user_attrs.get(keys.ATTR_COLLAPSED) is True, elbo_value(t))
            for t in trials if is_confirmation(t) == confirms
        )

    @classmethod
    def of_rows(cls, rows: Iterable[TrialRow]) -> StateCounts:
        """Count report rows."""
        return cls._tally((r.state, r.collapsed is True, r.value) for r in rows)


@dataclass(frozen=True)
class TrialRow:
    """What the figures need from one trial (diagnostics are ``None`` when not recorded)."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None  # the validation ELBO of a complete trial
    params: TrialParams | None
    full_beta_epoch: int | None
    active_units: int | None
    mutual_info: float | None
    kl_total: float | None
    kl_per_dim: tuple[float, ...] | None
    collapsed: bool | None
    history: dict[str, list[Any]] = field(default_factory=dict)
    iwae: float | None = None
    elbo_k: float | None = None  # the ELBO on the IWAE bound's draws (never above ``iwae``)
    fail_reason: str = ""
    confirms: str | None = None  # a confirmation run: its source trial ("#12") or reference

    @property
    def p(self) -> TrialParams:
        """The params, for rows already filtered to trials that have them."""
        assert self.params is not None
        return self.params

    @property
    def family(self) -> str | None:
        """The trial's remedy family (``None`` when its params are unknown)."""
        return None if self.params is None else self.params.family

    @property
    def diagnosed(self) -> bool:
        return self.active_units is not None

    @property
    def warmup_region(self) -> str | None:
        """The :data:`WARMUP_BINS` label of the trial's warm-up length (``None`` if unknown)."""
        full = self.full_beta_epoch
        if full is None:
            return None
        return next(label for lo, hi, label in WARMUP_BINS if lo <= full <= hi)

    def hover(self) -> str:
        """Hover text: the trial number, its params and its outcome."""
        lines = [f"trial #{self.number} ({self.state.lower()})"]
        if self.params is not None:
            p = self.params
            lines.append(f"klstart={p.klstart}, annealtime={p.annealtime}, "
                         f"latent_dim={p.latent_dim}, reduction={p.reduction}")
            if p.schedule != "linear":
                lines.append(f"schedule={p.schedule}, cycles={p.cycles}, ratio={p.ratio:.2f}")
            if p.family not in ("warmup", "cyclical"):
                lines.append(f"family={p.family}, " + {
                    "free_bits": f"free_bits={p.free_bits:.2f}",
                    "word_dropout": f"word_dropout={p.word_dropout:.2f}",
                    "setpoint": f"kl_target={p.kl_target:.2f} nats",
                    "aggressive": f"aggressive_epochs={p.aggressive_epochs}, "
                                  f"inner_steps={p.inner_steps}",
                }.get(p.family, ""))
        if self.value is not None:
            lines.append(f"val ELBO={self.value:.2f} nats")
        if self.diagnosed:
            lines.append(f"active units={self.active_units}, I(x;z)={self.mutual_info:.3f} nats, "
                         f"KL={self.kl_total:.2f} nats"
                         + (", COLLAPSED" if self.collapsed else ""))
        if self.fail_reason:
            lines.append(self.fail_reason[:120])
        return "<br>".join(lines)


def study_config(study: optuna.Study) -> StudyConfig:
    """The study's stored configuration (defaults when the study was not made by vae_search)."""
    raw = study.user_attrs.get(keys.STUDY_ATTR_CONFIG)
    if not isinstance(raw, dict):
        return StudyConfig()
    try:
        return parse_config(dict(raw))
    except ConfigError:
        return StudyConfig()


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _row(t: optuna.trial.FrozenTrial, config: StudyConfig) -> TrialRow:
    epochs = config.train.epochs
    u = t.user_attrs
    try:
        params: TrialParams | None = params_from_mapping(t.params, config.search, epochs,
                                                           config.model)
    except (KeyError, ValueError, TypeError):
        params = None  # failed before sampling, or not a vae_search trial
    full = u.get(keys.ATTR_FULL_BETA_EPOCH)
    if full is None and params is not None:
        full = full_beta_epoch(params.make_schedule(epochs), epochs)
    kl = u.get(keys.ATTR_KL_PER_DIM)
    active = u.get(keys.ATTR_ACTIVE_UNITS)
    history = u.get(keys.ATTR_HISTORY)
    collapsed = u.get(keys.ATTR_COLLAPSED)
    return TrialRow(
        number=t.number,
        state=t.state.name,
        value=elbo_value(t),
        params=params,
        full_beta_epoch=int(full) if full is not None else None,
        active_units=int(active) if isinstance(active, (int, float)) else None,
        mutual_info=_float(u.get(keys.ATTR_MUTUAL_INFO)),
        kl_total=_float(u.get(keys.ATTR_KL_TOTAL)),
        kl_per_dim=tuple(float(v) for v in kl) if isinstance(kl, list) else None,
        collapsed=collapsed if isinstance(collapsed, bool) else None,
        history=history if isinstance(history, dict) else {},
        iwae=_float(u.get(keys.ATTR_IWAE)),
        elbo_k=_float(u.get(keys.ATTR_ELBO_K)),
        fail_reason=str(u.get(keys.ATTR_FAIL_REASON, "")),
        confirms=confirms_label(u.get(keys.ATTR_CONFIRMS)),
    )


def confirms_label(value: Any) -> str | None:
    """How a confirmation run's ``confirms`` attr is shown: ``#N`` for a source trial number,
    the reference schedule's name otherwise (``None``: not a confirmation run)."""
    if value is None:
        return None
    return f"#{value}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def trial_rows(
    study: optuna.Study, config: StudyConfig | None = None, *, confirms: bool = False
) -> list[TrialRow]:
    """Finished trials (complete, pruned, failed) as :class:`TrialRow`, in trial order: the
    search's trials, or with ``confirms=True`` only the confirmation runs (repeats of chosen
    schedules; they would weigh those schedules many times in the search's figures)."""
    from optuna.trial import TrialState

    config = config or study_config(study)
    states = tuple(TrialState[name] for name in FINISHED_STATES)
    return [_row(t, config) for t in study.get_trials(deepcopy=False, states=states)
            if is_confirmation(t) == confirms]


def best_rows(rows: Sequence[TrialRow], n: int) -> list[TrialRow]:
    """The ``n`` complete trials with the highest value, best first."""
    complete = [r for r in rows if r.state == COMPLETE and r.value is not None]
    return sorted(complete, key=lambda r: -r.value)[:n]  # type: ignore[operator]


def diagnosed_rows(rows: Sequence[TrialRow]) -> list[TrialRow]:
    """The trials with diagnostics and known parameters: what the collapse rates count."""
    return [r for r in rows if r.diagnosed and r.params is not None]


def by_family(rows: Sequence[TrialRow]) -> dict[str, list[TrialRow]]:
    """``rows`` by remedy family, in the order first seen; empty unless the trials ran more
    than one family (``search.families``): a one-family study has nothing to compare."""
    families: dict[str, list[TrialRow]] = {}
    for r in rows:
        families.setdefault(r.family or "warmup", []).append(r)
    return families if len(families) > 1 else {}
