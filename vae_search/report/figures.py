"""The six figures of a study, one function each, and saving them for optuna-dashboard.

Every figure function takes ``(study, rows=None, config=None)`` and shares one preamble
(:func:`_figure`): read the rows once unless given, keep the trials the figure draws, and show
a message instead of an empty plot when there are none. :func:`save_figures` stores the figures
in the study under stable ids (``keys.FIG_*``) so optuna-dashboard shows them on the study page
and a refresh replaces them. plotly is imported when a figure is built, not before.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vae_search import keys
from vae_search.config.schema import StudyConfig
from vae_search.report.confirmation import collapse_probability_figure
from vae_search.report.plotting import COLORSCALE, FIG_HEIGHT, REDUCTION_COLORS, message_figure
from vae_search.report.plotting import layout as _layout
from vae_search.report.rows import TrialRow, best_rows, study_config, trial_rows
from vae_search.report.theory import REFERENCE_OPTION, add_ppca_lines, add_predicted_active
from vae_search.trial.baseline import stored_baseline
from vae_search.trial.reference import PpcaReference, stored_references
from vae_search.trial.schedule import betas

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = [
    "FIGURE_BUILDERS",
    "active_units_figure",
    "build_figures",
    "collapse_map",
    "collapse_probability_figure",
    "kl_per_dim_figure",
    "message_figure",
    "save_figures",
    "schedules_figure",
    "training_curves_figure",
]

KL_STRIP_TRIALS = 5  # trials in the KL-per-dim heat strip
ELBO_CLIP_QUANTILE = 0.05  # training-curve ELBO axis starts here: warm-up ELBOs go far lower
STATE_SYMBOLS = {"COMPLETE": "circle", "PRUNED": "x", "FAIL": "diamond-open"}
FAILED_COLOR = "#7f7f7f"

FigureBuilder = Callable[..., "go.Figure"]
BASELINE_OPTION = "decoder_only_nll"  # the figure keyword that receives the study's baseline
BASELINE_COLOR = "#2ca02c"


def _figure(
    title: str, *, needs: str, keep: Callable[[TrialRow], bool]
) -> Callable[[FigureBuilder], FigureBuilder]:
    """The preamble every figure shares.

    The decorated ``draw(rows, config, **options)`` only draws: the figure function reads the
    config and rows from the study when they are not given, keeps the rows for which ``keep``
    holds, and returns a :func:`message_figure` when none are left. A ``draw`` with the
    keyword ``decoder_only_nll`` gets the study's decoder-only baseline, one with the keyword
    ``ppca`` its pPCA references (:mod:`vae_search.trial.reference`), unless they are given.

    Args:
        title: The figure title (``str.format``-ed with the figure's keyword options).
        needs: What the figure needs, for the message ("diagnosed trials").
        keep: Which rows the figure draws.
    """

    def decorate(draw: FigureBuilder) -> FigureBuilder:
        defaults = {name: p.default for name, p in inspect.signature(draw).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}

        @functools.wraps(draw)
        def build(study: optuna.Study, rows: Sequence[TrialRow] | None = None,
                  config: StudyConfig | None = None, **options: Any) -> go.Figure:
            config = config or study_config(study)
            rows = trial_rows(study, config) if rows is None else rows
            if BASELINE_OPTION in defaults and BASELINE_OPTION not in options:
                options[BASELINE_OPTION] = stored_baseline(study)  # a study attr, not a row
            if REFERENCE_OPTION in defaults and REFERENCE_OPTION not in options:
                options[REFERENCE_OPTION] = stored_references(study)
            kept = [r for r in rows if keep(r)]
            if not kept:
                return message_figure(
                    title.format(**{**defaults, **options}),
                    f"No {needs} in study {study.study_name!r} yet.<br>Run <i>vae-search run</i> "
                    "to add trials; this figure refreshes as they finish.",
                )
            return draw(kept, config, **options)

        return build

    return decorate


def _has_params(r: TrialRow) -> bool:
    return r.params is not None


def _diagnosed(r: TrialRow) -> bool:
    return r.params is not None and r.diagnosed


def _reductions(rows: Sequence[TrialRow], config: StudyConfig) -> list[str]:
    seen = {r.p.reduction for r in rows if r.params is not None}
    return [m for m in config.search.reduction if m in seen] + sorted(
        seen - set(config.search.reduction))


def _panels(modes: Sequence[str]) -> go.Figure:
    """One panel per reduction mode, side by side, sharing the y axis."""
    from plotly.subplots import make_subplots

    return make_subplots(rows=1, cols=len(modes), shared_yaxes=True,
                         subplot_titles=[f"reduction = {m}" for m in modes],
                         horizontal_spacing=0.06)


COLLAPSE_MAP_TITLE = "Collapse map: which schedules keep latent units active"


@_figure(COLLAPSE_MAP_TITLE, needs="finished trials", keep=_has_params)
def collapse_map(rows: list[TrialRow], config: StudyConfig) -> go.Figure:
    """klstart vs annealtime, one point per trial: colour = active units, symbol = state,
    size = latent dim, one panel per reduction mode."""
    import plotly.graph_objects as go

    modes = _reductions(rows, config)
    fig = _panels(modes)
    cmax = max([r.active_units for r in rows if r.active_units is not None] + [1])
    for col, mode in enumerate(modes, start=1):
        for state, symbol in STATE_SYMBOLS.items():
            sel = [r for r in rows if r.p.reduction == mode and r.state == state]
            if not sel:
                continue
            diagnosed = all(r.active_units is not None for r in sel)
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
                    "color": [r.active_units for r in sel] if diagnosed else FAILED_COLOR,
                    "coloraxis": "coloraxis" if diagnosed else None,
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
    return _layout(fig, COLLAPSE_MAP_TITLE + " (size = latent dim; black ring = collapsed)")


def _sample_colors(values: Sequence[float], vmax: float) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale(COLORSCALE, [min(v / vmax, 1.0) if vmax > 0 else 0.0
                                          for v in values])


SCHEDULES_TITLE = "Schedules by outcome: beta(epoch) coloured by final active units"


@_figure(SCHEDULES_TITLE, needs="diagnosed trials", keep=_diagnosed)
def schedules_figure(rows: list[TrialRow], config: StudyConfig) -> go.Figure:
    """Each diagnosed trial's beta(epoch), coloured by its final active units, per reduction."""
    import plotly.graph_objects as go

    epochs = config.train.epochs
    modes = _reductions(rows, config)
    fig = _panels(modes)
    vmax = float(max(r.active_units or 0 for r in rows) or 1)
    for col, mode in enumerate(modes, start=1):
        # One trace per (active units, state), trials separated by None (the figure is stored
        # in the study); healthy trials drawn last so they are on top.
        groups: dict[tuple[int, str], list[TrialRow]] = {}
        for r in sorted((r for r in rows if r.p.reduction == mode),
                        key=lambda r: (r.active_units, r.number)):
            groups.setdefault((r.active_units or 0, r.state), []).append(r)
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
    return _layout(fig, SCHEDULES_TITLE + " (dotted = pruned)")


def _finite(values: Sequence[float | None]) -> list[float | None]:
    return [round(v, 3) if v is not None and math.isfinite(v) else None for v in values]


def _curve_groups(rows: Sequence[TrialRow]) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """The training curves of ``rows`` joined per (reduction, state), trials separated by None:
    the figure is stored in the study and re-saved as trials finish, so it is kept small."""
    groups: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for r in rows:
        h = r.history
        mode = r.p.reduction if r.params is not None else "?"
        g = groups.setdefault((mode, r.state), {k: [] for k in ("x", "elbo", "kl", "trial",
                                                               "end_x", "end_y", "end_text")})
        elbo = _finite(h["val_elbo"])
        kl = _finite(h.get("val_kl", []))
        kl += [None] * (len(elbo) - len(kl))
        epochs = list(h.get("epoch", range(len(elbo))))
        g["x"] += [*epochs, None]
        g["elbo"] += [*elbo, None]
        g["kl"] += [*kl[: len(elbo)], None]
        g["trial"] += [r.number] * len(elbo) + [None]
        if r.state == "PRUNED" and elbo:
            g["end_x"].append(epochs[-1])
            g["end_y"].append(elbo[-1])
            g["end_text"].append(r.hover())
    return groups


CURVES_TITLE = "Training curves: validation ELBO and KL per epoch"


@_figure(CURVES_TITLE, needs="trials with history", keep=lambda r: bool(r.history.get("val_elbo")))
def training_curves_figure(rows: list[TrialRow], config: StudyConfig, *,
                           decoder_only_nll: float | None = None,
                           ppca: Sequence[PpcaReference] = ()) -> go.Figure:
    """Per-epoch validation ELBO and KL of every trial; pruned trials dashed and marked; a
    horizontal line at the ELBO of the decoder trained alone (``-decoder_only_nll``), where a
    collapsed trial ends, and (fixed-variance Gaussian) one at each ``sigma^2``'s pPCA
    log-likelihood, the linear VAE's optimum."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    groups = _curve_groups(rows)
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
    for b in best_rows(rows, 1):
        full = b.full_beta_epoch
        if b.params is None or not full:
            continue
        for row_i in (1, 2):
            fig.add_vrect(x0=b.p.klstart - 0.5, x1=full - 0.5,
                          fillcolor="orange", opacity=0.15, line_width=0, row=row_i, col=1)
        fig.add_annotation(text=f"annealing window of the best trial #{b.number}",
                           x=(b.p.klstart + full) / 2 - 0.5,
                           y=1.0, yref="y domain", showarrow=False, font={"size": 10},
                           row=1, col=1)
    all_elbo = sorted(v for g in groups.values() for v in g["elbo"] if v is not None)
    (baseline,) = _finite([None if decoder_only_nll is None else -decoder_only_nll])
    if baseline is not None:
        fig.add_hline(y=baseline, line={"dash": "dash", "color": BASELINE_COLOR},
                      annotation_text=f"decoder alone (no latent code): {baseline:.2f} nats",
                      annotation_position="bottom right", row=1, col=1)
    lines = [*([] if baseline is None else [baseline]), *add_ppca_lines(fig, ppca)]
    if all_elbo:
        lo = all_elbo[int(ELBO_CLIP_QUANTILE * (len(all_elbo) - 1))]
        hi = all_elbo[-1]
        lo, hi = min([lo, *lines]), max([hi, *lines])
        pad = 0.05 * (hi - lo or 1.0)
        fig.update_yaxes(range=[lo - pad, hi + pad], row=1, col=1)
    fig.update_yaxes(title_text=f"val ELBO (nats; axis from {int(ELBO_CLIP_QUANTILE * 100)}th pct)",
                     row=1, col=1)
    fig.update_yaxes(title_text="val KL (nats)", row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    return _layout(fig, CURVES_TITLE + " (dashed = pruned, dotted = failed)")


ACTIVE_UNITS_TITLE = "Active units vs latent dimension, per reduction mode"


@_figure(ACTIVE_UNITS_TITLE, needs="diagnosed trials", keep=_diagnosed)
def active_units_figure(rows: list[TrialRow], config: StudyConfig, *,
                        ppca: Sequence[PpcaReference] = ()) -> go.Figure:
    """Active units vs latent dim, one box + points per reduction mode, collapse line drawn,
    and (fixed-variance Gaussian) the active directions pPCA predicts per latent dim."""
    import plotly.graph_objects as go

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
    add_predicted_active(fig, ppca, dims)
    threshold = config.collapse.min_active_units
    fig.add_hline(y=threshold - 0.5, line={"dash": "dash", "color": "black"},
                  annotation_text=f"collapse: fewer than {threshold} active unit(s) "
                  f"(Var_x E[z_u|x] > {config.collapse.active_threshold})",
                  annotation_position="top left")
    fig.update_layout(boxmode="group")
    fig.update_xaxes(title_text="latent dimension", type="category",
                     categoryorder="array", categoryarray=[str(d) for d in dims])
    fig.update_yaxes(title_text="active units (count)", rangemode="tozero")
    return _layout(fig, ACTIVE_UNITS_TITLE)


KL_TITLE = "KL per latent dimension of the best {n} trials (nats, dims sorted by KL)"


@_figure(KL_TITLE, needs="complete trials",
         keep=lambda r: bool(r.kl_per_dim) and r.state == "COMPLETE" and r.value is not None)
def kl_per_dim_figure(rows: list[TrialRow], config: StudyConfig, *,
                      n: int = KL_STRIP_TRIALS) -> go.Figure:
    """Heat strip of the KL per latent dim (nats) of the best ``n`` complete trials."""
    import plotly.graph_objects as go

    best = best_rows(rows, n)
    width = max(len(r.kl_per_dim or ()) for r in best)
    z, text, labels = [], [], []
    for r in best:
        kl = sorted(r.kl_per_dim or (), reverse=True)
        pad = width - len(kl)
        z.append([*kl, *[None] * pad])
        text.append([f"{v:.2f}" for v in kl] + [""] * pad)
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
    return _layout(fig, KL_TITLE.format(n=n), height=min(FIG_HEIGHT, 120 + 60 * len(best)))


FIGURE_BUILDERS: dict[str, FigureBuilder] = {
    keys.FIG_COLLAPSE_MAP: collapse_map,
    keys.FIG_COLLAPSE_PROBABILITY: collapse_probability_figure,
    keys.FIG_SCHEDULES: schedules_figure,
    keys.FIG_TRAINING_CURVES: training_curves_figure,
    keys.FIG_ACTIVE_UNITS: active_units_figure,
    keys.FIG_KL_PER_DIM: kl_per_dim_figure,
}


def build_figures(
    study: optuna.Study, rows: Sequence[TrialRow] | None = None,
    config: StudyConfig | None = None,
) -> dict[str, go.Figure]:
    """All figures of the study, keyed by their stable id (``keys.FIG_IDS`` order)."""
    config = config or study_config(study)
    rows = trial_rows(study, config) if rows is None else rows
    return {fid: FIGURE_BUILDERS[fid](study, rows, config) for fid in keys.FIG_IDS}


def save_figures(study: optuna.Study) -> list[str]:
    """Save (or replace) the figures in the study for optuna-dashboard; returns their ids."""
    from optuna_dashboard import save_plotly_graph_object

    return [save_plotly_graph_object(study, fig, graph_object_id=fid)
            for fid, fig in build_figures(study).items()]
