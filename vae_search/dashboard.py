"""``python -m vae_search.dashboard``: refresh our figures, then start optuna-dashboard.

The server is the real ``optuna-dashboard`` (:func:`optuna_dashboard.run_server`) on the study
storage, with the per-trial artifact directory (reconstruction PNGs) attached. It binds to
127.0.0.1 unless ``--host`` says otherwise: the dashboard can edit studies and has no login.
Does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vae_search.cli import EXIT_USAGE, OneLineParser, bounded_int
from vae_search.report import (
    ReportError,
    load_study,
    open_storage,
    save_figures,
)
from vae_search.storage import DEFAULT_STORAGE, mask_url

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "build_parser", "main", "refresh_all"]

DEFAULT_HOST = "127.0.0.1"  # local only: optuna-dashboard has no authentication
DEFAULT_PORT = 8080  # optuna-dashboard's own default


_port = bounded_int(1, 65535, noun="a port number")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m vae_search.dashboard",
        description="Refresh the vae_search figures stored in the study (or every study in the "
        "storage), then serve optuna-dashboard on the same storage and artifact directory.",
    )
    parser.add_argument("--storage", default=DEFAULT_STORAGE,
                        help=f"SQLAlchemy URL of the study database (default {DEFAULT_STORAGE})")
    parser.add_argument("--study-name", default=None,
                        help="refresh only this study's figures (default: every study)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--artifact-dir", default=None,
                        help="artifact directory (default: beside the SQLite file, "
                        "e.g. vae_search-artifacts/, or ./vae_search-artifacts for servers)")
    return parser


def refresh_all(storage_url: str, study_name: str | None = None) -> list[str]:
    """Save the figures of ``study_name`` (or of every study in the storage).

    Returns:
        The names of the studies refreshed.

    Raises:
        ReportError: bad URL, missing database, or no such study.
    """
    names = [study_name] if study_name is not None else open_storage(storage_url)[1]
    for name in names:
        save_figures(load_study(storage_url, name))
    return names


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = refresh_all(args.storage, args.study_name)
    except ReportError as exc:
        print(f"vae_search.dashboard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from optuna_dashboard import run_server

    from vae_search.artifacts import default_artifact_dir, make_artifact_store

    artifact_dir = args.artifact_dir or default_artifact_dir(args.storage)
    store = make_artifact_store(args.storage, artifact_dir)
    print(f"figures refreshed for {len(names)} stud{'y' if len(names) == 1 else 'ies'}; "
          f"serving {mask_url(args.storage)} (artifacts in {artifact_dir}) at "
          f"http://{args.host}:{args.port}/dashboard/  (Ctrl-C to stop)", flush=True)
    try:
        run_server(args.storage, host=args.host, port=args.port, artifact_store=store)
    except OSError as exc:  # port in use, address not available
        print(f"vae_search.dashboard: error: cannot serve on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
