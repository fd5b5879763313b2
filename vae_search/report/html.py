"""The standalone report: one self-contained HTML page (plotly.js inlined, works offline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from vae_search.report.figures import build_figures
from vae_search.report.findings import REFERENCE_TITLE, counts_line, findings
from vae_search.report.rows import study_config, trial_rows

if TYPE_CHECKING:
    import optuna

__all__ = ["report_html", "write_figure_pages", "write_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}.fig{margin:1em 0 2em}"""


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    if not rows:
        return "<p><i>none yet</i></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(study: optuna.Study) -> str:
    """The standalone report: one HTML document, plotly.js inlined, no network resources."""
    from plotly.offline import get_plotlyjs

    config = study_config(study)
    k = config.collapse
    rows = trial_rows(study, config)
    figs = build_figures(study, rows, config)
    f = findings(study, rows)
    name = html.escape(study.study_name)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>vae_search report: {name}</title><style>{_CSS}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>vae_search report: study {name}</h1>",
        f"<p>{html.escape(counts_line(study.study_name, f))}. Objective: validation ELBO at "
        "beta = 1, sum reduction, nats per example (higher is better); IWAE: the bound with "
        f"{k.iwae_samples} importance samples; gap to decoder-only: ELBO minus the ELBO of the "
        "same decoder trained without a latent code (what the code buys; about 0 when collapsed). "
        f"Collapsed: fewer than {k.min_active_units} active unit(s), or less than "
        f"{k.min_mutual_info} nats of information (the total KL, or I(x;z) when its standard "
        f"error is below {k.mi_max_sd}).</p>",
        "<h2>Findings</h2><h3>Best trials</h3>", _html_table(*f.best),
        *([f"<h3>{html.escape(REFERENCE_TITLE[:1].upper() + REFERENCE_TITLE[1:])}</h3>",
           _html_table(*f.reference)] if f.reference[1] else []),
        "<h3>Collapse rate by reduction mode</h3>", _html_table(*f.by_reduction),
        "<h3>Collapse rate by schedule region</h3>", _html_table(*f.by_region),
        *(["<h3>Collapse rate by remedy family</h3>", _html_table(*f.by_family)]
          if f.by_family[1] else []),
        "<h3>Confirmation: new seeds per schedule (collapse rate with its 95% Wilson "
        "interval)</h3>", _html_table(*f.confirmation),
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
