"""Theory's reference drawn into the figures: the pPCA lines of a fixed-variance Gaussian study.

The references themselves are computed once per study (:mod:`vae_search.trial.reference`) and
stored as a study attr; here they become a horizontal line per ``sigma^2`` in the training
curves (the linear optimum's validation ``log p(x)``, beside the decoder-only baseline) and a
"pPCA predicts" marker per latent dim in the active-units figure. A study without references
(any other likelihood, or a learned variance) draws nothing extra. plotly is imported by the
figures that call these, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vae_search.trial.reference import PpcaReference

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["REFERENCE_COLOR", "REFERENCE_OPTION", "add_ppca_lines", "add_predicted_active",
           "widest"]

REFERENCE_OPTION = "ppca"  # the figure keyword that receives the study's pPCA references
REFERENCE_COLOR = "#9467bd"


def widest(references: Sequence[PpcaReference]) -> list[PpcaReference]:
    """One reference per ``sigma^2``: the one at the largest latent dim (the best linear model
    the search space holds), in ``sigma^2`` order."""
    best: dict[float, PpcaReference] = {}
    for r in references:
        if r.sigma2 not in best or (r.latent_dim or 0) > (best[r.sigma2].latent_dim or 0):
            best[r.sigma2] = r
    return [best[s2] for s2 in sorted(best)]


def add_ppca_lines(fig: go.Figure, references: Sequence[PpcaReference], *, row: int = 1,
                   col: int = 1) -> list[float]:
    """A dotted line at each ``sigma^2``'s pPCA log-likelihood; returns the values drawn (for
    the axis range)."""
    drawn = []
    for r in widest(references):
        fig.add_hline(
            y=round(r.log_likelihood, 3), line={"dash": "dot", "color": REFERENCE_COLOR},
            annotation_text=(f"pPCA (linear optimum), sigma2 = {r.sigma2:g}: "
                             f"{r.log_likelihood:.2f} nats, {r.active} active "
                             f"(all collapsed: {r.collapsed:.2f})"),
            annotation_position="top left", row=row, col=col,
        )
        drawn.append(r.log_likelihood)
    return drawn


def add_predicted_active(fig: go.Figure, references: Sequence[PpcaReference],
                         dims: Sequence[int]) -> None:
    """Markers at the active directions pPCA predicts for each latent dim, one trace per
    ``sigma^2`` (eigenvalues of the training covariance above it, at most the latent dim)."""
    import plotly.graph_objects as go

    for s2 in sorted({r.sigma2 for r in references}):
        at = {r.latent_dim: r.active for r in references if r.sigma2 == s2}
        shown = [d for d in dims if d in at]
        if not shown:
            continue
        fig.add_trace(go.Scatter(
            x=[str(d) for d in shown], y=[at[d] for d in shown], mode="markers",
            name=f"pPCA predicts (sigma2 = {s2:g})",
            marker={"symbol": "star-diamond-open", "size": 14, "color": REFERENCE_COLOR},
            hovertemplate="latent dim %{x}: pPCA keeps %{y} direction(s)<extra>eigenvalues "
                          f"above sigma2 = {s2:g}</extra>",
        ))
