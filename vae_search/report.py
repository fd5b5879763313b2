"""Figures and findings built from a study alone; saved into the study and as one HTML page.

``python -m vae_search.report [--storage URL] [--study-name NAME] --out report.html`` writes a
self-contained page (plotly.js inlined: it works offline) with the five figures and the findings
tables, and prints the tables. :func:`save_figures` stores the same figures in the study under
stable ids (``keys.FIG_*``) so ``optuna-dashboard`` shows them on the study page and a refresh
replaces them. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import html
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.cli import EXIT_USAGE, OneLineParser
from vae_search.config import ConfigError, StudyConfig, parse_config
from vae_search.schedule import betas, full_beta_epoch
from vae_search.space import TrialParams, params_from_mapping
from vae_search.storage import DEFAULT_STORAGE, error_reason, mask_url

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = [
    "FigureRefresher",
    "Findings",
    "TrialRow",
    "build_figures",
    "collapse_map",
    "active_units_figure",
    "findings",
    "findings_text",
    "kl_per_dim_figure",
    "load_study",
    "open_storage",
    "main",
    "report_html",
    "save_figures",
    "schedules_figure",
    "training_curves_figure",
    "trial_rows",
    "write_figure_pages",
    "write_report",
]

BEST_ROWS = 10  # rows of the best-trials table
KL_STRIP_TRIALS = 5  # trials in the KL-per-dim heat strip
ELBO_CLIP_QUANTILE = 0.05  # training-curve ELBO axis starts here: warm-up ELBOs go far lower
FIG_HEIGHT = 450  # px: optuna-dashboard draws user figures in 450 px boxes (taller is cut off)
COLORSCALE = "Viridis"
STATE_SYMBOLS = {"COMPLETE": "circle", "PRUNED": "x", "FAIL": "diamond-open"}
REDUCTION_COLORS = {"sum": "#1f77b4", "mean": "#d62728"}
FAILED_COLOR = "#7f7f7f"
# Schedule regions by warm-up length: the epochs before beta stays at 1 (full_beta_epoch).
WARMUP_BINS = ((0, 0, "none (beta = 1 from epoch 0)"), (1, 5, "short (1-5 epochs)"),
               (6, 15, "medium (6-15 epochs)"), (16, 10**9, "long (16+ epochs)"))


# ---------------------------------------------------------------------------------------------
# Data: one row per trial, read once from the study.


@dataclass(frozen=True)
class TrialRow:
    """What the figures need from one trial (diagnostics are ``None`` when not recorded)."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None
    params: TrialParams | None
    full_beta_epoch: int | None
    active_units: int | None
    mutual_info: float | None
    kl_total: float | None
    kl_per_dim: tuple[float, ...] | None
    collapsed: bool | None
    history: dict[str, list[Any]] = field(default_factory=dict)
    fail_reason: str = ""

    @property
    def p(self) -> TrialParams:
        """The params, for rows already filtered to trials that have them."""
        assert self.params is not None
        return self.params

    @property
    def diagnosed(self) -> bool:
        return self.active_units is not None

    def hover(self) -> str:
        """Hover text: the trial number, its params and its outcome."""
        lines = [f"trial #{self.number} ({self.state.lower()})"]
        if self.params is not None:
            p = self.params
            lines.append(f"klstart={p.klstart}, annealtime={p.annealtime}, "
                         f"latent_dim={p.latent_dim}, reduction={p.reduction}")
            if p.schedule != "linear":
                lines.append(f"schedule={p.schedule}, cycles={p.cycles}, ratio={p.ratio:.2f}")
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


def trial_rows(study: optuna.Study, config: StudyConfig | None = None) -> list[TrialRow]:
    """Finished trials (complete, pruned, failed) as :class:`TrialRow`, in trial order."""
    from optuna.trial import TrialState

    config = config or study_config(study)
    epochs = config.train.epochs
    rows = []
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in study.get_trials(deepcopy=False, states=states):
        u = t.user_attrs
        try:
            params = params_from_mapping(t.params, config.search, epochs)
        except (KeyError, ValueError, TypeError):
            params = None  # failed before sampling, or not a vae_search trial
        full = u.get(keys.ATTR_FULL_BETA_EPOCH)
        if full is None and params is not None:
            full = full_beta_epoch(params.make_schedule(epochs), epochs)
        kl = u.get(keys.ATTR_KL_PER_DIM)
        active = u.get(keys.ATTR_ACTIVE_UNITS)
        history = u.get(keys.ATTR_HISTORY)
        rows.append(TrialRow(
            number=t.number,
            state=t.state.name,
            value=t.value if t.state == TrialState.COMPLETE else None,
            params=params,
            full_beta_epoch=int(full) if full is not None else None,
            active_units=int(active) if isinstance(active, (int, float)) else None,
            mutual_info=_float(u.get(keys.ATTR_MUTUAL_INFO)),
            kl_total=_float(u.get(keys.ATTR_KL_TOTAL)),
            kl_per_dim=tuple(float(v) for v in kl) if isinstance(kl, list) else None,
            collapsed=u.get(keys.ATTR_COLLAPSED) if isinstance(u.get(keys.ATTR_COLLAPSED), bool)
            else None,
            history=history if isinstance(history, dict) else {},
            fail_reason=str(u.get(keys.ATTR_FAIL_REASON, "")),
        ))
    return rows


def _best(rows: Sequence[TrialRow], n: int) -> list[TrialRow]:
    complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    return sorted(complete, key=lambda r: -r.value)[:n]  # type: ignore[operator]


def _reductions(rows: Sequence[TrialRow], config: StudyConfig) -> list[str]:
    seen = {r.p.reduction for r in rows if r.params is not None}
    return [m for m in config.search.reduction if m in seen] + sorted(
        seen - set(config.search.reduction))


# ---------------------------------------------------------------------------------------------
# Figures.


def _layout(fig: go.Figure, title: str, *, height: int = FIG_HEIGHT) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        height=height, margin={"l": 60, "r": 20, "t": 60, "b": 50},
        template="plotly_white", legend={"font": {"size": 10}},
    )
    return fig


def message_figure(title: str, message: str) -> go.Figure:
    """A figure that says why there is nothing to plot (e.g. an empty study)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title)


def _empty_message(study_name: str, what: str) -> str:
    return (f"No {what} in study {study_name!r} yet.<br>"
            "Run <i>python -m vae_search.run</i> to add trials; this figure refreshes as they "
            "finish.")


def _inputs(study: optuna.Study, rows: Sequence[TrialRow] | None, config: StudyConfig | None,
            keep: Callable[[TrialRow], bool]) -> tuple[StudyConfig, list[TrialRow]]:
    """The config and the rows a figure draws (read from the study unless given)."""
    config = config or study_config(study)
    rows = trial_rows(study, config) if rows is None else rows
    return config, [r for r in rows if keep(r)]


def _has_params(r: TrialRow) -> bool:
    return r.params is not None


def _diagnosed(r: TrialRow) -> bool:
    return r.params is not None and r.diagnosed


def collapse_map(study: optuna.Study, rows: Sequence[TrialRow] | None = None,
                 config: StudyConfig | None = None) -> go.Figure:
    """klstart vs annealtime, one point per trial: colour = active units, symbol = state,
    size = latent dim, one panel per reduction mode."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Collapse map: which schedules keep latent units active"
    config, rows = _inputs(study, rows, config, _has_params)
    if not rows:
        return message_figure(title, _empty_message(study.study_name, "finished trials"))
    modes = _reductions(rows, config)
    fig = make_subplots(rows=1, cols=len(modes), shared_yaxes=True,
                        subplot_titles=[f"reduction = {m}" for m in modes],
                        horizontal_spacing=0.06)
    cmax = max([r.active_units for r in rows if r.active_units is not None] + [1])
    for col, mode in enumerate(modes, start=1):
        for state, symbol in STATE_SYMBOLS.items():
            sel = [r for r in rows if r.p.reduction == mode and r.state == state]
            if not sel:
                continue
            diagnosed = [r.active_units is not None for r in sel]
            fig.add_trace(go.Scatter(
                x=[r.p.klstart for r in sel],
                y=[r.p.annealtime for r in sel],
                mode="markers",
                name=f"{state.lower()}",
                legendgroup=state,
                showlegend=col == 1,
                text=[r.hover() for r in sel],
                hovertemplate="%{text}<extra></extra>",
                marker={
                    "symbol": symbol,
                    "size": [7 + 3 * math.log2(max(r.p.latent_dim, 1)) for r in sel],
                    "color": [r.active_units if d else FAILED_COLOR
                              for r, d in zip(sel, diagnosed)] if all(diagnosed)
                    else FAILED_COLOR,
                    "coloraxis": "coloraxis" if all(diagnosed) else None,
                    "line": {"width": [2 if r.collapsed else 0.5 for r in sel],
                             "color": ["black" if r.collapsed else "white" for r in sel]},
                    "opacity": 0.85,
                },
            ), row=1, col=col)
        fig.update_xaxes(title_text="klstart (epochs at beta = 0)", row=1, col=col)
    fig.update_yaxes(title_text="annealtime (epochs of ramp)", row=1, col=1)
    fig.update_layout(coloraxis={"colorscale": COLORSCALE, "cmin": 0, "cmax": cmax,
                                 "colorbar": {"title": {"text": "active<br>units"}}},
                      legend={"orientation": "h", "y": -0.18, "x": 0})
    _layout(fig, title + " (size = latent dim; black ring = collapsed)")
    return fig


def _sample_colors(values: Sequence[float], vmax: float) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale(COLORSCALE, [min(v / vmax, 1.0) if vmax > 0 else 0.0
                                          for v in values])


def schedules_figure(study: optuna.Study, rows: Sequence[TrialRow] | None = None,
                     config: StudyConfig | None = None) -> go.Figure:
    """Each diagnosed trial's beta(epoch), coloured by its final active units, per reduction."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Schedules by outcome: beta(epoch) coloured by final active units"
    config, rows = _inputs(study, rows, config, _diagnosed)
    if not rows:
        return message_figure(title, _empty_message(study.study_name, "diagnosed trials"))
    epochs = config.train.epochs
    modes = _reductions(rows, config)
    fig = make_subplots(rows=1, cols=len(modes), shared_yaxes=True,
                        subplot_titles=[f"reduction = {m}" for m in modes],
                        horizontal_spacing=0.06)
    vmax = float(max(r.active_units for r in rows) or 1)  # type: ignore[type-var]
    for col, mode in enumerate(modes, start=1):
        # One trace per (active units, state), trials separated by None (the figure is stored
        # in the study); healthy trials drawn last so they are on top.
        groups: dict[tuple[int, str], list[TrialRow]] = {}
        for r in sorted((r for r in rows if r.p.reduction == mode),
                        key=lambda r: (r.active_units, r.number)):
            groups.setdefault((r.active_units, r.state), []).append(r)  # type: ignore[arg-type]
        for (active, state), sel in groups.items():
            x: list[int | None] = []
            y: list[float | None] = []
            trial: list[int | None] = []
            for r in sel:
                beta = betas(r.p.make_schedule(epochs), epochs)
                x += [*range(epochs), None]
                y += [*(round(b, 3) for b in beta), None]
                trial += [r.number] * epochs + [None]
            (color,) = _sample_colors([float(active)], vmax)
            fig.add_trace(go.Scatter(
                x=x, y=y, customdata=trial, mode="lines", showlegend=False,
                name=f"{active} active, {state.lower()}",
                line={"color": color, "width": 1.5,
                      "dash": "dot" if state == "PRUNED" else "solid"},
                opacity=0.7,
                hovertemplate="trial #%{customdata}<br>epoch %{x}: beta=%{y:.2f}"
                f"<extra>{active} active units ({state.lower()})</extra>",
            ), row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    # An invisible trace carries the colour bar.
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False,
                             hoverinfo="skip",
                             marker={"colorscale": COLORSCALE, "cmin": 0, "cmax": vmax,
                                     "color": [0], "showscale": True,
                                     "colorbar": {"title": {"text": "active<br>units"}}}))
    fig.update_yaxes(title_text="beta (KL weight)", range=[-0.05, 1.05], row=1, col=1)
    return _layout(fig, title + " (dotted = pruned)")


def training_curves_figure(study: optuna.Study, rows: Sequence[TrialRow] | None = None,
                           config: StudyConfig | None = None) -> go.Figure:
    """Per-epoch validation ELBO and KL of every trial; pruned trials dashed and marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "Training curves: validation ELBO and KL per epoch"
    config, rows = _inputs(study, rows, config, lambda r: bool(r.history.get("val_elbo")))
    if not rows:
        return message_figure(title, _empty_message(study.study_name, "trials with history"))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    # One trace per (reduction, state) and panel, trials separated by None: the figure is
    # stored in the study and re-saved as trials finish, so it is kept small.
    groups: dict[tuple[str, str], dict[str, list[Any]]] = {}
    all_elbo: list[float] = []
    for r in rows:
        h = r.history
        mode = r.p.reduction if r.params is not None else "?"
        g = groups.setdefault((mode, r.state), {k: [] for k in ("x", "elbo", "kl", "trial",
                                                               "end_x", "end_y", "end_text")})
        elbo = [round(v, 3) if v is not None and math.isfinite(v) else None
                for v in h["val_elbo"]]
        kl = [round(v, 3) if v is not None and math.isfinite(v) else None
              for v in h.get("val_kl", [])]
        kl += [None] * (len(elbo) - len(kl))
        epochs = list(h.get("epoch", range(len(elbo))))
        all_elbo.extend(v for v in elbo if v is not None)
        g["x"] += [*epochs, None]
        g["elbo"] += [*elbo, None]
        g["kl"] += [*kl[: len(elbo)], None]
        g["trial"] += [r.number] * len(elbo) + [None]
        if r.state == "PRUNED" and elbo:
            g["end_x"].append(epochs[-1])
            g["end_y"].append(elbo[-1])
            g["end_text"].append(r.hover())
    for (mode, state), g in groups.items():
        color = FAILED_COLOR if state == "FAIL" else REDUCTION_COLORS.get(mode, FAILED_COLOR)
        name = f"{mode}, {state.lower()}"
        dash = {"PRUNED": "dash", "FAIL": "dot"}.get(state, "solid")
        for row_i, ys in ((1, g["elbo"]), (2, g["kl"])):
            fig.add_trace(go.Scatter(
                x=g["x"], y=ys, customdata=g["trial"], mode="lines", name=name,
                legendgroup=name, showlegend=row_i == 1,
                line={"color": color, "width": 1, "dash": dash}, opacity=0.55,
                hovertemplate="trial #%{customdata}<br>epoch %{x}: %{y:.2f} nats"
                f"<extra>{name}</extra>",
            ), row=row_i, col=1)
        if g["end_x"]:
            fig.add_trace(go.Scatter(
                x=g["end_x"], y=g["end_y"], mode="markers", showlegend=False,
                marker={"symbol": "x", "color": color, "size": 7}, legendgroup=name,
                text=g["end_text"], hovertemplate="%{text}<br>pruned here<extra></extra>",
            ), row=1, col=1)
    best = _best(rows, 1)
    if best and best[0].params is not None and best[0].full_beta_epoch:
        b = best[0]
        for row_i in (1, 2):
            fig.add_vrect(x0=b.p.klstart - 0.5, x1=b.full_beta_epoch - 0.5,
                          fillcolor="orange", opacity=0.15, line_width=0, row=row_i, col=1)
        fig.add_annotation(text=f"annealing window of the best trial #{b.number}",
                           x=(b.p.klstart + b.full_beta_epoch) / 2 - 0.5,
                           y=1.0, yref="y domain", showarrow=False, font={"size": 10},
                           row=1, col=1)
    if all_elbo:
        lo = sorted(all_elbo)[int(ELBO_CLIP_QUANTILE * (len(all_elbo) - 1))]
        hi = max(all_elbo)
        pad = 0.05 * (hi - lo or 1.0)
        fig.update_yaxes(range=[lo - pad, hi + pad], row=1, col=1)
    fig.update_yaxes(title_text=f"val ELBO (nats; axis from {int(ELBO_CLIP_QUANTILE * 100)}th pct)",
                     row=1, col=1)
    fig.update_yaxes(title_text="val KL (nats)", row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    return _layout(fig, title + " (dashed = pruned, dotted = failed)")


def active_units_figure(study: optuna.Study, rows: Sequence[TrialRow] | None = None,
                        config: StudyConfig | None = None) -> go.Figure:
    """Active units vs latent dim, one box + points per reduction mode, collapse line drawn."""
    import plotly.graph_objects as go

    title = "Active units vs latent dimension, per reduction mode"
    config, rows = _inputs(study, rows, config, _diagnosed)
    if not rows:
        return message_figure(title, _empty_message(study.study_name, "diagnosed trials"))
    fig = go.Figure()
    for mode in _reductions(rows, config):
        sel = [r for r in rows if r.p.reduction == mode]
        fig.add_trace(go.Box(
            x=[str(r.p.latent_dim) for r in sel],
            y=[r.active_units for r in sel], name=f"reduction = {mode}",
            marker={"color": REDUCTION_COLORS.get(mode)}, boxpoints="all", jitter=0.4,
            pointpos=0, text=[r.hover() for r in sel],
            hovertemplate="%{text}<extra></extra>",
        ))
    dims = sorted({r.p.latent_dim for r in rows})
    fig.add_trace(go.Scatter(x=[str(d) for d in dims], y=dims, mode="markers",
                             name="upper bound (= latent dim)",
                             marker={"symbol": "line-ew-open", "size": 30, "color": "grey"}))
    threshold = config.collapse.min_active_units
    fig.add_hline(y=threshold - 0.5, line={"dash": "dash", "color": "black"},
                  annotation_text=f"collapse: fewer than {threshold} active unit(s) "
                  f"(Var_x E[z_u|x] > {config.collapse.active_threshold})",
                  annotation_position="top left")
    fig.update_layout(boxmode="group")
    fig.update_xaxes(title_text="latent dimension", type="category",
                     categoryorder="array", categoryarray=[str(d) for d in dims])
    fig.update_yaxes(title_text="active units (count)", rangemode="tozero")
    return _layout(fig, title)


def kl_per_dim_figure(study: optuna.Study, rows: Sequence[TrialRow] | None = None,
                      config: StudyConfig | None = None, *, n: int = KL_STRIP_TRIALS) -> go.Figure:
    """Heat strip of the KL per latent dim (nats) of the best ``n`` complete trials."""
    import plotly.graph_objects as go

    title = f"KL per latent dimension of the best {n} trials (nats, dims sorted by KL)"
    config, rows = _inputs(study, rows, config, lambda r: bool(r.kl_per_dim))
    best = _best(rows, n)
    if not best:
        return message_figure(title, _empty_message(study.study_name, "complete trials"))
    width = max(len(r.kl_per_dim) for r in best)  # type: ignore[arg-type]
    z, text, labels = [], [], []
    for r in best:
        kl = sorted(r.kl_per_dim, reverse=True)  # type: ignore[arg-type]
        z.append(kl + [None] * (width - len(kl)))
        text.append([f"{v:.2f}" for v in kl] + [""] * (width - len(kl)))
        p = r.params
        labels.append(f"#{r.number} {p.reduction} d={p.latent_dim} ELBO {r.value:.1f}"
                      if p is not None else f"#{r.number}")
    fig = go.Figure(go.Heatmap(
        z=z, y=labels, x=[str(i + 1) for i in range(width)], text=text,
        texttemplate="%{text}" if width <= 16 else None, colorscale=COLORSCALE, zmin=0,
        colorbar={"title": {"text": "KL<br>(nats)"}}, xgap=1, ygap=2,
        hovertemplate="%{y}<br>dim rank %{x}: KL=%{z:.3f} nats<extra></extra>",
    ))
    fig.update_xaxes(title_text=f"latent dims, sorted by KL (collapsed: < "
                                f"{config.collapse.kl_threshold} nats)")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=min(FIG_HEIGHT, 120 + 60 * len(best)))


FIGURE_BUILDERS: dict[str, Callable[..., go.Figure]] = {
    keys.FIG_COLLAPSE_MAP: collapse_map,
    keys.FIG_SCHEDULES: schedules_figure,
    keys.FIG_TRAINING_CURVES: training_curves_figure,
    keys.FIG_ACTIVE_UNITS: active_units_figure,
    keys.FIG_KL_PER_DIM: kl_per_dim_figure,
}


def build_figures(study: optuna.Study) -> dict[str, go.Figure]:
    """All figures of the study, keyed by their stable id (``keys.FIG_IDS`` order)."""
    config = study_config(study)
    rows = trial_rows(study, config)
    return {fid: FIGURE_BUILDERS[fid](study, rows, config) for fid in keys.FIG_IDS}


def save_figures(study: optuna.Study) -> list[str]:
    """Save (or replace) the figures in the study for optuna-dashboard; returns their ids."""
    from optuna_dashboard import save_plotly_graph_object

    return [save_plotly_graph_object(study, fig, graph_object_id=fid)
            for fid, fig in build_figures(study).items()]


class FigureRefresher:
    """Optuna callback: re-save the figures every ``every`` trials this worker finishes.

    A failure to save (a locked database, say) is reported once and never stops the study.

    Args:
        every: Finished (complete or pruned) trials between refreshes; 0 = never (end only).
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.finished = 0
        self.warned = False

    def refresh(self, study: optuna.Study) -> None:
        """Save the figures now, warning (once) instead of raising on failure."""
        try:
            save_figures(study)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost a trial
            if not self.warned:
                print(f"warning: could not refresh the study figures: {exc}", file=sys.stderr)
                self.warned = True

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state.name not in ("COMPLETE", "PRUNED") or self.every <= 0:
            return
        self.finished += 1
        if self.finished % self.every == 0:
            self.refresh(study)


# ---------------------------------------------------------------------------------------------
# Findings: best trials; collapse rate by reduction and by schedule region.


@dataclass(frozen=True)
class Findings:
    """Tables as (header, rows) pairs of strings, plus the counts they are based on."""

    counts: dict[str, int]
    best: tuple[tuple[str, ...], list[tuple[str, ...]]]
    by_reduction: tuple[tuple[str, ...], list[tuple[str, ...]]]
    by_region: tuple[tuple[str, ...], list[tuple[str, ...]]]


def _rate_row(label: tuple[str, ...], sel: Sequence[TrialRow]) -> tuple[str, ...]:
    n = len(sel)
    collapsed = sum(1 for r in sel if r.collapsed)
    values = [r.value for r in sel if r.value is not None]
    return (*label, str(n), str(collapsed), f"{collapsed / n:.0%}" if n else "-",
            f"{statistics.median(r.active_units or 0 for r in sel):g}" if n else "-",
            f"{statistics.median(r.mutual_info or 0.0 for r in sel):.2f}" if n else "-",
            f"{max(values):.2f}" if values else "-")


def _warmup_label(full_beta: int) -> str:
    return next(label for lo, hi, label in WARMUP_BINS if lo <= full_beta <= hi)


def findings(study: optuna.Study, rows: Sequence[TrialRow] | None = None) -> Findings:
    """The findings tables. Collapse rates count complete and pruned trials with diagnostics
    (a pruned trial is diagnosed at the point of pruning, after beta reached 1)."""
    rows = trial_rows(study) if rows is None else rows
    diag = [r for r in rows if r.diagnosed and r.params is not None]
    counts = {s.lower(): sum(1 for r in rows if r.state == s) for s in STATE_SYMBOLS}
    counts["diagnosed"] = len(diag)
    counts["collapsed"] = sum(1 for r in diag if r.collapsed)
    best_header = ("trial", "klstart", "annealtime", "latent", "reduction", "val ELBO",
                   "active", "KL", "I(x;z)", "collapsed")
    best_rows = [(
        str(r.number), str(r.p.klstart), str(r.p.annealtime),
        str(r.p.latent_dim), r.p.reduction, f"{r.value:.2f}",
        str(r.active_units), f"{r.kl_total:.2f}" if r.kl_total is not None else "-",
        f"{r.mutual_info:.2f}" if r.mutual_info is not None else "-",
        "yes" if r.collapsed else "no",
    ) for r in _best(rows, BEST_ROWS) if r.params is not None]
    rate_cols = ("trials", "collapsed", "rate", "median active", "median I(x;z)", "best ELBO")
    modes = sorted({r.p.reduction for r in diag}, key=lambda m: (m != "sum", m))
    by_reduction = [_rate_row((m,), [r for r in diag if r.p.reduction == m])
                    for m in modes]
    by_region = []
    for m in modes:
        for _, _, label in WARMUP_BINS:
            sel = [r for r in diag if r.p.reduction == m
                   and r.full_beta_epoch is not None and _warmup_label(r.full_beta_epoch) == label]
            if sel:
                by_region.append(_rate_row((m, label), sel))
    return Findings(
        counts=counts,
        best=(best_header, best_rows),
        by_reduction=(("reduction", *rate_cols), by_reduction),
        by_region=(("reduction", "KL warm-up before beta = 1", *rate_cols), by_region),
    )


def _text_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return "  (none)"
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  " + "  ".join(c.rjust(w) for c, w in zip(header, widths)),
             "  " + "  ".join("-" * w for w in widths)]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _counts_line(study_name: str, f: Findings) -> str:
    c = f.counts
    return (f"study {study_name!r}: {c['complete']} complete, {c['pruned']} pruned, "
            f"{c['fail']} failed; {c['diagnosed']} diagnosed, {c['collapsed']} collapsed")


def findings_text(study: optuna.Study, f: Findings | None = None) -> str:
    """The findings tables as plain text (what the CLI prints)."""
    f = f or findings(study)
    return "\n\n".join([
        _counts_line(study.study_name, f),
        "best trials by validation ELBO (nats/example, higher is better):\n"
        + _text_table(*f.best),
        "collapse rate by reduction mode:\n" + _text_table(*f.by_reduction),
        "collapse rate by schedule region:\n" + _text_table(*f.by_region),
    ])


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return "<p><i>none yet</i></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}.fig{margin:1em 0 2em}"""


def report_html(study: optuna.Study) -> str:
    """The standalone report: one HTML document, plotly.js inlined, no network resources."""
    from plotly.offline import get_plotlyjs

    config = study_config(study)
    rows = trial_rows(study, config)
    figs = {fid: FIGURE_BUILDERS[fid](study, rows, config) for fid in keys.FIG_IDS}
    f = findings(study, rows)
    name = html.escape(study.study_name)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>vae_search report: {name}</title><style>{_CSS}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>vae_search report: study {name}</h1>",
        f"<p>{html.escape(_counts_line(study.study_name, f))}. Objective: validation ELBO at "
        "beta = 1, sum reduction, nats per example (higher is better). Collapsed: fewer than "
        f"{config.collapse.min_active_units} active unit(s) or I(x;z) &lt; "
        f"{config.collapse.min_mutual_info} nats.</p>",
        "<h2>Findings</h2><h3>Best trials</h3>", _html_table(*f.best),
        "<h3>Collapse rate by reduction mode</h3>", _html_table(*f.by_reduction),
        "<h3>Collapse rate by schedule region</h3>", _html_table(*f.by_region),
        "<h2>Figures</h2>",
    ]
    for fid, fig in figs.items():
        body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=fid)
        parts.append(f"<div class='fig'>{body}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_figure_pages(study: optuna.Study, directory: str | Path) -> list[Path]:
    """Write each figure as its own self-contained page ``<figure id>.html`` (for screenshots
    and embedding); returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fid, fig in build_figures(study).items():
        path = directory / f"{fid}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True, div_id=fid)
        paths.append(path)
    return paths


def write_report(study: optuna.Study, out: str | Path) -> Path:
    """Write :func:`report_html` to ``out`` (parent directories must exist)."""
    path = Path(out)
    path.write_text(report_html(study), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Command line.


class ReportError(RuntimeError):
    """Bad input for the report or dashboard commands (one line, exit 2)."""


def open_storage(storage_url: str) -> tuple[optuna.storages.BaseStorage, list[str]]:
    """Open an existing storage (never creates a database or tables) and list its studies.

    Raises:
        ReportError: bad URL, missing SQLite file, or a database Optuna cannot read.
    """
    import optuna

    from vae_search.storage import sqlite_path

    shown = mask_url(storage_url)
    try:
        path = sqlite_path(storage_url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError and friends
        raise ReportError(f"invalid storage URL {shown!r}: {exc}") from None
    if path is not None and not path.is_file():
        raise ReportError(f"no database at {shown} (file {path} does not exist)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(storage_url, skip_table_creation=True)
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as exc:  # unknown driver, refused connection, not an Optuna database...
        raise ReportError(f"cannot open storage {shown}: {error_reason(exc)}") from None
    return storage, names


def load_study(storage_url: str, study_name: str | None) -> optuna.Study:
    """Load an existing study (never creates one).

    Args:
        storage_url: SQLAlchemy URL. A SQLite file must exist.
        study_name: The study; may be omitted when the storage holds exactly one.

    Raises:
        ReportError: bad URL, missing file, missing or ambiguous study.
    """
    import optuna

    storage, names = open_storage(storage_url)
    shown = mask_url(storage_url)
    if study_name is None:
        if len(names) != 1:
            raise ReportError(f"storage {shown} holds {len(names)} studies "
                              f"({', '.join(sorted(names)) or 'none'}); pass --study-name")
        study_name = names[0]
    if study_name not in names:
        raise ReportError(f"no study {study_name!r} in {shown} (studies: "
                          f"{', '.join(sorted(names)) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m vae_search.report",
        description="Write a self-contained HTML report (figures + findings tables) of a "
        "vae_search study, print the findings tables, and refresh the figures stored in the "
        "study for optuna-dashboard.",
    )
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"SQLAlchemy URL of the study database (default {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", default=None,
                        help="the study (default: the only study in the storage)")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--figures-dir", default=None,
                        help="also write each figure as a standalone page DIR/<figure id>.html")
    parser.add_argument("--no-save", action="store_true",
                        help="do not refresh the figures stored in the study")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"vae_search.report: error: directory {out.parent} does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        study = load_study(args.storage, args.study_name)
    except ReportError as exc:
        print(f"vae_search.report: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_save:
        save_figures(study)
    write_report(study, out)
    if args.figures_dir:
        write_figure_pages(study, args.figures_dir)
    print(findings_text(study))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
