"""``vae-search run`` (``python -m vae_search.run``): create or join a study, run trials, show
progress and a summary.

``--trials`` is the study's total budget of finished (complete + pruned) trials, shared by all
workers on the same storage: re-running the command resumes the study up to the budget, and
never wipes results. ``--help`` does not import TensorFlow.

This module is the facade: it parses the command line once into a frozen
:class:`~vae_search.cli.RunOptions`, resolves the configuration, and hands both to the worker
loop (:mod:`vae_search.worker`) or the local process pool (:mod:`vae_search.pool`); errors
become one line and an exit status (:mod:`vae_search.cli`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Any

from vae_search.cli import (
    EXIT_FAULT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    STORAGE_ENV,
    RunOptions,
)
from vae_search.cli import build_run_parser as build_parser
from vae_search.config import ConfigError, StudyConfig, load_config
from vae_search.pool import run_pool
from vae_search.report import summary_table
from vae_search.storage import StorageError
from vae_search.worker import (
    FAIL_INTERRUPTED,
    FAIL_SURPLUS,
    BudgetGate,
    BudgetReached,
    DatabaseLost,
    Interrupted,
    SignalState,
    open_worker_study,
    run_worker,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "FAIL_INTERRUPTED",
    "FAIL_SURPLUS",
    "STORAGE_ENV",
    "BudgetGate",
    "BudgetReached",
    "Interrupted",
    "RunOptions",
    "build_parser",
    "main",
    "open_worker_study",
    "resolve_config",
    "run_pool",
    "scale_schedule_box",
    "summary_table",
]


def scale_schedule_box(config: StudyConfig, epochs: int) -> dict[str, list[int]]:
    """The ``search.klstart`` / ``search.annealtime`` overrides that keep the schedule box
    inside a run of ``epochs`` epochs (empty when it already fits).

    The box is shrunk in proportion, each upper end to at most ``epochs // 2``, so every trial
    still ends at beta = 1 (``klstart + annealtime <= epochs``).
    """
    s, old = config.search, config.train.epochs
    if s.klstart[1] + s.annealtime[1] <= epochs and s.klstart[1] < epochs:
        return {}

    def scaled(lo_hi: tuple[int, int]) -> list[int]:
        hi = min(lo_hi[1] * epochs // old, epochs // 2)
        return [min(lo_hi[0], hi), hi]

    return {"search.klstart": scaled(s.klstart), "search.annealtime": scaled(s.annealtime)}


def resolve_config(options: RunOptions) -> StudyConfig:
    """Load the config and apply the command-line overrides (validated again)."""
    config = load_config(options.study)
    overrides: dict[str, Any] = {}
    if options.seed is not None:
        overrides["seed"] = options.seed
    if options.epochs is not None:
        overrides["train.epochs"] = options.epochs
        box = scale_schedule_box(config, options.epochs)
        if box and not options.quiet:
            print(f"note: --epochs {options.epochs}: schedule ranges scaled to klstart "
                  f"{box['search.klstart']}, annealtime {box['search.annealtime']}",
                  file=sys.stderr)
        overrides.update(box)
    return config.with_overrides(**overrides) if overrides else config


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command; returns the exit status (0, 1 database lost, 2 bad input, 130/143)."""
    options = RunOptions.parse(argv, prog=prog or "python -m vae_search.run")
    from vae_search.data import DataError
    from vae_search.study import StudyMismatch

    signals = SignalState()
    saved = signals.install()
    try:
        config = resolve_config(options)
        if options.workers > 1:
            return run_pool(options, config)
        return run_worker(options, config, signals)
    except KeyboardInterrupt as exc:
        if not options.child:
            print("interrupted: finished trials are kept; re-run the same command to resume",
                  file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
    except (ConfigError, DataError, StorageError, StudyMismatch) as exc:
        if options.debug:
            raise
        print(f"vae_search: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseLost as exc:
        if options.debug:
            raise
        print(f"vae_search: error: {exc}", file=sys.stderr)
        return EXIT_FAULT
    finally:
        for sig, previous in saved.items():  # main() may run inside another program (tests)
            signal.signal(sig, previous)


if __name__ == "__main__":
    sys.exit(main())
