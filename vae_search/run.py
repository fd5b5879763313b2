"""``vae-search run`` (``python -m vae_search.run``): create or join a study, run trials, show
progress and a summary.

``--trials`` is the study's total budget of finished (complete + pruned) trials, shared by all
workers on the same storage: re-running the command resumes the study up to the budget, and
never wipes results. ``--help`` does not import TensorFlow.

This module is the facade: it parses the command line once into a frozen
:class:`~vae_search.cli.RunOptions`, resolves the configuration, and hands both to the worker
loop (:mod:`~vae_search.engine.worker`) or the local process pool (:mod:`~.search.pool`); errors
become one line and an exit status (:mod:`vae_search.cli`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from vae_search.cli import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    STORAGE_ENV,
    RunOptions,
)
from vae_search.cli import build_run_parser as build_parser
from vae_search.config.schema import ConfigError, StudyConfig, load_config, parse_assignment
from vae_search.engine.budget import FAIL_SURPLUS, BudgetGate, BudgetReached
from vae_search.engine.pool import run_pool
from vae_search.engine.signals import FAIL_INTERRUPTED, Interrupted, SignalState, run_command
from vae_search.engine.worker import open_worker_study, run_worker
from vae_search.report import summary_table
from vae_search.storage.connection import StorageError

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
    "summary_table",
]


def resolve_config(options: RunOptions) -> StudyConfig:
    """Load the config and apply the command-line overrides, then validate once: an error
    names the values in force (``--epochs 3``, not the TOML's ``train.epochs = 2``)."""
    overrides: dict[str, Any] = dict(parse_assignment(text) for text in options.set)
    if options.seed is not None:
        overrides["seed"] = options.seed
    last = options.epochs is None  # the last step validates
    config = load_config(options.study, validate=last and not overrides)
    if overrides:
        config = config.with_overrides(validate=last, **overrides)
    if options.epochs is not None:
        config, note = config.with_epochs(options.epochs)
        if note and not options.quiet:
            print(f"note: --epochs {options.epochs}: {note}", file=sys.stderr)
    return config


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command; returns the exit status (0, 1 database lost, 2 bad input, 130/143)."""
    options = RunOptions.parse(argv, prog=prog or "python -m vae_search.run")
    from vae_search.data.datasets import DataError
    from vae_search.engine.study import StudyMismatch

    def body(signals: SignalState) -> int:
        config = resolve_config(options)
        if options.workers > 1:
            return run_pool(options, config)
        return run_worker(options, config, signals)

    return run_command(body, label="vae_search", debug=options.debug,
                       quiet_interrupt=options.child,
                       usage_errors=(ConfigError, DataError, StorageError, StudyMismatch))


if __name__ == "__main__":
    sys.exit(main())
