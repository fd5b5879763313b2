"""What a study shows: trial rows and state counts, five figures, findings tables, an HTML page.

* :mod:`~vae_search.report.rows`: the read model (one :class:`TrialRow` per finished trial)
  and :class:`StateCounts`, the one counter of trial states.
* :mod:`~vae_search.report.figures`: one function per figure; :func:`save_figures` stores
  them in the study for optuna-dashboard.
* :mod:`~vae_search.report.findings`: the findings tables and the run summary.
* :mod:`~vae_search.report.html`: the self-contained page.
* :mod:`~vae_search.report.callbacks`: the progress bar and the figure refresher a worker runs.

``vae-search report`` (``python -m vae_search.report``) writes the page and prints the tables.
Nothing here imports TensorFlow; plotly is imported when a figure is built.
"""

from __future__ import annotations

from vae_search.cli import build_report_parser as build_parser
from vae_search.report.callbacks import FigureRefresher, Progress
from vae_search.report.command import main
from vae_search.report.figures import (
    FIGURE_BUILDERS,
    active_units_figure,
    build_figures,
    collapse_map,
    kl_per_dim_figure,
    message_figure,
    save_figures,
    schedules_figure,
    training_curves_figure,
)
from vae_search.report.findings import (
    WARMUP_BINS,
    Findings,
    findings,
    findings_text,
    summary_table,
)
from vae_search.report.html import report_html, write_figure_pages, write_report
from vae_search.report.rows import StateCounts, TrialRow, study_config, trial_rows

__all__ = [
    "FIGURE_BUILDERS",
    "WARMUP_BINS",
    "FigureRefresher",
    "Findings",
    "Progress",
    "StateCounts",
    "TrialRow",
    "active_units_figure",
    "build_figures",
    "build_parser",
    "collapse_map",
    "findings",
    "findings_text",
    "kl_per_dim_figure",
    "main",
    "message_figure",
    "report_html",
    "save_figures",
    "schedules_figure",
    "study_config",
    "summary_table",
    "training_curves_figure",
    "trial_rows",
    "write_figure_pages",
    "write_report",
]
