"""``vae-search report`` (``python -m vae_search.report``): the HTML page and the findings."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from vae_search.cli import EXIT_USAGE, build_report_parser, error_line
from vae_search.storage.connection import StorageError, load_study

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Write the report (and optionally one page per figure), refresh the figures stored in
    the study, print the findings tables. Bad input is one line on stderr and exit status 2."""
    from vae_search.report.figures import save_figures
    from vae_search.report.findings import findings_text
    from vae_search.report.html import write_figure_pages, write_report

    args = build_report_parser(prog or "python -m vae_search.report").parse_args(argv)
    label = prog or "vae_search.report"
    out = Path(args.out)  # a writable file, and --figures-dir a writable directory: checked
    try:
        study = load_study(args.storage, args.study_name)
    except StorageError as exc:
        print(error_line(label, exc), file=sys.stderr)
        return EXIT_USAGE
    if not args.no_save:
        save_figures(study)
    write_report(study, out)
    if args.figures_dir:
        write_figure_pages(study, args.figures_dir)
    print(findings_text(study))
    print(f"\nwrote {out}")
    return 0
