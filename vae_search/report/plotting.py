"""What every figure shares: the box size optuna-dashboard gives it, the colours, the layout,
and the figure shown instead of an empty plot. plotly is imported when a figure is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["COLORSCALE", "FIG_HEIGHT", "REDUCTION_COLORS", "layout", "message_figure"]

FIG_HEIGHT = 450  # px: optuna-dashboard draws user figures in 450 px boxes (taller is cut off)
COLORSCALE = "Viridis"
REDUCTION_COLORS = {"sum": "#1f77b4", "mean": "#d62728"}


def layout(fig: go.Figure, title: str, *, height: int = FIG_HEIGHT) -> go.Figure:
    """The house layout: title top left, white template, small legend."""
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
    return layout(fig, title)
