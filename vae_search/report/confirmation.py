"""Collapse as a probability: confirmation runs per schedule, Wilson intervals, one figure.

Collapse is a per-seed outcome, so a schedule has a collapse *probability*. ``vae-search
confirm`` re-trains chosen schedules with new seeds (trials with user attr ``confirms``); this
module turns those runs into the confirmation table (one row per schedule: the collapse rate
with a 95% Wilson interval, active units, ELBO, IWAE) and draws "collapse probability by
schedule", which also shows the search's own trials by warm-up region with the same intervals.
Nothing here imports TensorFlow; plotly is imported when the figure is built.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vae_search.report.plotting import REDUCTION_COLORS, layout, message_figure
from vae_search.report.rows import (
    COMPLETE,
    WARMUP_BINS,
    TrialRow,
    by_family,
    diagnosed_rows,
    study_config,
    trial_rows,
)

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

    from vae_search.config.schema import StudyConfig

__all__ = [
    "CONFIRMATION_HEADER",
    "Z95",
    "ConfirmationRow",
    "collapse_probability_figure",
    "confirmation_rows",
    "confirmation_table",
    "wilson_interval",
]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
CONFIRMATION_HEADER = ("schedule", "klstart", "annealtime", "latent", "reduction", "runs",
                       "collapsed", "rate [95% CI]", "active median [min, max]",
                       "I(x;z) median", "ELBO mean ± sd", "IWAE mean")
CONFIRM_COLOR = "#9467bd"
FAMILY_COLOR = "#2ca02c"  # the search by remedy family


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0/n or
    n/n, which is where collapse rates usually sit. ``n = 0`` gives ``(0, 1)``.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ConfirmationRow:
    """One schedule's confirmation runs (complete runs with diagnostics only)."""

    schedule: str  # the source trial ("#12") or the reference's name
    klstart: int
    annealtime: int
    latent_dim: int
    reduction: str
    runs: int
    collapsed: int
    rate_low: float  # 95% Wilson interval of the collapse rate
    rate_high: float
    active_median: float
    active_min: int
    active_max: int
    elbo_mean: float
    elbo_sd: float  # 0 for a single run
    iwae_mean: float | None
    mi_median: float | None = None  # I(x;z), nats (None: a table stored before it was kept)
    family: str | None = None  # the remedy family the schedule trains with

    @property
    def rate(self) -> float:
        return self.collapsed / self.runs

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the study attr ``confirmation`` holds), with the rate."""
        return {**asdict(self), "rate": self.rate}

    def cells(self) -> tuple[str, ...]:
        """The row of :data:`CONFIRMATION_HEADER`, as strings."""
        return (
            self.schedule, str(self.klstart), str(self.annealtime), str(self.latent_dim),
            self.reduction, str(self.runs), str(self.collapsed),
            f"{self.rate:.0%} [{self.rate_low:.0%}, {self.rate_high:.0%}]",
            f"{self.active_median:g} [{self.active_min}, {self.active_max}]",
            f"{self.mi_median:.2f}" if self.mi_median is not None else "-",
            f"{self.elbo_mean:.2f} ± {self.elbo_sd:.2f}",
            f"{self.iwae_mean:.2f}" if self.iwae_mean is not None else "-",
        )


def _summarize(label: str, runs: Sequence[TrialRow]) -> ConfirmationRow:
    p = runs[0].p
    collapsed = sum(1 for r in runs if r.collapsed)
    active = [r.active_units or 0 for r in runs]
    elbos = [r.value for r in runs if r.value is not None]
    iwaes = [r.iwae for r in runs if r.iwae is not None]
    infos = [r.mutual_info for r in runs if r.mutual_info is not None]
    low, high = wilson_interval(collapsed, len(runs))
    return ConfirmationRow(
        schedule=label, klstart=p.klstart, annealtime=p.annealtime, latent_dim=p.latent_dim,
        reduction=p.reduction, runs=len(runs), collapsed=collapsed, rate_low=low,
        rate_high=high, active_median=statistics.median(active), active_min=min(active),
        active_max=max(active), elbo_mean=statistics.fmean(elbos),
        elbo_sd=statistics.stdev(elbos) if len(elbos) > 1 else 0.0,
        iwae_mean=statistics.fmean(iwaes) if iwaes else None,
        mi_median=statistics.median(infos) if infos else None, family=runs[0].family,
    )


def confirmation_rows(rows: Sequence[TrialRow]) -> list[ConfirmationRow]:
    """One row per confirmed schedule, in the order the schedules were first run.

    Args:
        rows: Confirmation runs (``trial_rows(study, confirms=True)``); failed runs and runs
            without diagnostics are left out (a run is never pruned).
    """
    groups: dict[str, list[TrialRow]] = {}
    for r in rows:
        if r.confirms and r.state == COMPLETE and r.diagnosed and r.params is not None:
            groups.setdefault(r.confirms, []).append(r)
    return [_summarize(label, runs) for label, runs in groups.items()]


def confirmation_table(
    rows: Sequence[ConfirmationRow],
) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The confirmation table as (header, rows) of strings; with schedules of several remedy
    families, each row names its family."""
    if len({r.family for r in rows}) < 2:
        return CONFIRMATION_HEADER, [r.cells() for r in rows]
    return (CONFIRMATION_HEADER[:1] + ("family",) + CONFIRMATION_HEADER[1:],
            [(c[0], r.family or "-", *c[1:]) for r, c in ((r, r.cells()) for r in rows)])


PROBABILITY_TITLE = "Collapse probability by schedule (95% Wilson intervals)"


def _error_bars(points: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """plotly's asymmetric error bars around k/n for each (k, n)."""
    lows, highs = zip(*(wilson_interval(k, n) for k, n in points), strict=True)
    rates = [k / n for k, n in points]
    return {"type": "data", "symmetric": False,
            "array": [h - r for h, r in zip(highs, rates, strict=True)],
            "arrayminus": [r - lo for r, lo in zip(rates, lows, strict=True)]}


def _family_trace(fig: go.Figure, diag: Sequence[TrialRow]) -> None:
    """The search's collapse rate per remedy family (``search.families``), when it ran more
    than one, with the family's median I(x;z) and IWAE (complete trials) in the hover."""
    import plotly.graph_objects as go

    families = by_family(diag)
    if not families:
        return
    points, texts = [], []
    for name, sel in families.items():
        k = sum(1 for r in sel if r.collapsed)
        points.append((k, len(sel)))
        iwaes = [r.iwae for r in sel if r.iwae is not None]
        texts.append(f"family {name}: {k}/{len(sel)} collapsed; median I(x;z) "
                     f"{statistics.median(r.mutual_info or 0.0 for r in sel):.2f} nats"
                     + (f", median IWAE {statistics.median(iwaes):.2f}" if iwaes else ""))
    fig.add_trace(go.Scatter(
        x=[f"family: {name}" for name in families], y=[k / n for k, n in points],
        error_y=_error_bars(points), mode="markers", name="search trials by remedy family",
        text=texts, hovertemplate="%{text}<br>rate %{y:.0%}<extra></extra>",
        marker={"color": FAMILY_COLOR, "size": 10, "symbol": "square"},
    ))


def collapse_probability_figure(
    study: optuna.Study, rows: Sequence[TrialRow] | None = None,
    config: StudyConfig | None = None,
) -> go.Figure:
    """The collapse rate with its 95% Wilson interval: of the search's diagnosed trials by
    reduction and warm-up region (and by remedy family when it ran several), and of each
    confirmed schedule (``vae-search confirm``)."""
    import plotly.graph_objects as go

    config = config or study_config(study)
    rows = trial_rows(study, config) if rows is None else rows
    confirmed = confirmation_rows(trial_rows(study, config, confirms=True))
    diag = diagnosed_rows(rows)
    if not diag and not confirmed:
        return message_figure(
            PROBABILITY_TITLE,
            f"No diagnosed trials in study {study.study_name!r} yet.<br>Run <i>vae-search run"
            "</i>, then <i>vae-search confirm</i> to repeat the best schedules with new seeds.")
    fig = go.Figure()
    for mode, color in REDUCTION_COLORS.items():
        points, labels, texts = [], [], []
        for _, _, region in WARMUP_BINS:
            sel = [r for r in diag if r.p.reduction == mode and r.warmup_region == region]
            if sel:
                k = sum(1 for r in sel if r.collapsed)
                points.append((k, len(sel)))
                labels.append(f"search: {region.split(' (')[0]} warm-up")
                texts.append(f"search trials, reduction={mode}, warm-up {region}: "
                             f"{k}/{len(sel)} collapsed")
        if points:
            fig.add_trace(go.Scatter(
                x=labels, y=[k / n for k, n in points], error_y=_error_bars(points),
                mode="markers", name=f"search trials ({mode})", text=texts,
                hovertemplate="%{text}<br>rate %{y:.0%}<extra></extra>",
                marker={"color": color, "size": 9},
            ))
    _family_trace(fig, diag)
    if confirmed:
        fig.add_trace(go.Scatter(
            x=[f"confirm: {c.schedule} ({c.klstart}+{c.annealtime})" for c in confirmed],
            y=[c.rate for c in confirmed],
            error_y=_error_bars([(c.collapsed, c.runs) for c in confirmed]),
            mode="markers", name="confirmation runs (new seeds)",
            text=[f"schedule {c.schedule}: klstart={c.klstart}, annealtime={c.annealtime}, "
                  f"latent_dim={c.latent_dim}, {c.reduction}<br>{c.collapsed}/{c.runs} "
                  f"collapsed; ELBO {c.elbo_mean:.2f} ± {c.elbo_sd:.2f}" for c in confirmed],
            hovertemplate="%{text}<br>rate %{y:.0%}<extra></extra>",
            marker={"color": CONFIRM_COLOR, "size": 11, "symbol": "diamond"},
        ))
    fig.update_yaxes(title_text="collapse rate", range=[-0.05, 1.05], tickformat=".0%")
    fig.update_xaxes(title_text="schedule (confirm: klstart+annealtime)", tickangle=-25)
    layout(fig, PROBABILITY_TITLE)
    fig.update_layout(legend={"orientation": "h", "y": -0.45, "x": 0}, margin={"b": 130})
    return fig
