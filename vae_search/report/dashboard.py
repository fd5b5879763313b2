"""``vae-search dashboard`` (``python -m vae_search.report.dashboard``): refresh our figures, then
start optuna-dashboard.

The server is the real ``optuna-dashboard`` (:func:`optuna_dashboard.run_server`) on the study
storage, with the study's artifact store (reconstruction PNGs: a shared directory or an S3
bucket, ``--artifacts``) attached. It binds to
127.0.0.1 unless ``--host`` says otherwise: the dashboard can edit studies and has no login.
Does not import TensorFlow.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from vae_search.cli import DEFAULT_HOST, DEFAULT_PORT, EXIT_USAGE, error_line, port_problem
from vae_search.cli import build_dashboard_parser as build_parser
from vae_search.storage.connection import StorageError, load_study, open_storage
from vae_search.storage.url import StorageURL

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "build_parser", "main", "refresh_all"]


def refresh_all(storage_url: str | StorageURL, study_name: str | None = None) -> list[str]:
    """Save the figures of ``study_name`` (or of every study in the storage).

    Returns:
        The names of the studies refreshed.

    Raises:
        StorageError: bad URL, missing database, or no such study.
    """
    from vae_search.report import save_figures

    url = StorageURL.of(storage_url)
    names = [study_name] if study_name is not None else open_storage(url)[1]
    for name in names:
        save_figures(load_study(url, name))
    return names


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    args = build_parser(prog or "vae-search dashboard").parse_args(argv)
    label = prog or "vae_search.report.dashboard"
    from vae_search.storage.artifacts import default_artifact_dir, make_artifact_store

    artifacts = args.artifacts or default_artifact_dir(args.storage)
    if problem := port_problem(args.host, args.port):  # before any work or announcement
        print(error_line(label, problem), file=sys.stderr)
        return EXIT_USAGE
    try:
        names = refresh_all(args.storage, args.study_name)
        store = make_artifact_store(args.storage, artifacts)  # the workers' store
        # a database URL is served as is; a proxy URL through its client
        target = open_storage(args.storage)[0] if args.storage.proxy else (
            args.storage.sqlalchemy_url)
    except StorageError as exc:
        print(error_line(label, exc), file=sys.stderr)
        return EXIT_USAGE
    from optuna_dashboard import run_server

    print(f"figures refreshed for {len(names)} stud{'y' if len(names) == 1 else 'ies'}; "
          f"serving {args.storage.masked} (artifacts in {artifacts}) at "
          f"http://{args.host}:{args.port}/dashboard/  (Ctrl-C to stop)", flush=True)
    try:
        run_server(target, host=args.host, port=args.port, artifact_store=store)
    except OSError as exc:  # port in use, address not available
        print(f"{label}: error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
