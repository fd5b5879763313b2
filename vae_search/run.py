"""``vae-search run`` (``python -m vae_search.run``): create or join a study, run trials, show
progress and a summary.

``--trials`` is the study's total budget of finished (complete + pruned) trials, shared by all
workers on the same storage: re-running the command resumes the study up to the budget, and
never wipes results. ``--help`` does not import TensorFlow.

This module is the facade: it parses the command line once into a frozen
:class:`~vae_search.cli.RunOptions`, resolves the configuration, and hands both to the worker
loop (:mod:`~vae_search.search.worker`) or the local process pool (:mod:`~.search.pool`); errors
become one line and an exit status (:mod:`vae_search.cli`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
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
from vae_search.report import summary_table
from vae_search.search.pool import run_pool
from vae_search.search.signals import run_command
from vae_search.search.worker import (
    FAIL_INTERRUPTED,
    FAIL_SURPLUS,
    BudgetGate,
    BudgetReached,
    Interrupted,
    SignalState,
    open_worker_study,
    run_worker,
)
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


def resolve_config(
    options: RunOptions, overrides: Mapping[str, Any] | None = None
) -> StudyConfig:
    """Load ``options.study`` and apply the overrides: the one way ``vae-search run`` and
    :func:`vae_search.search` build a study's configuration.

    Args:
        options: ``--set`` (in order), ``--seed``, then ``--epochs``, which trains that many
            epochs and scales the schedule box to fit when needed (a note says so unless
            ``quiet``), where ``--set train.epochs=N`` leaves the box as it is.
        overrides: ``{"section.key": value}`` already typed (the API's), after ``--set``.

    Raises:
        ConfigError: a bad study file or override (every override is validated).
    """
    config = load_config(options.study)
    merged: dict[str, Any] = dict(parse_assignment(text) for text in options.set)
    merged.update(overrides or {})
    if options.seed is not None:
        merged["seed"] = options.seed
    if merged:
        config = config.with_overrides(**merged)
    if options.epochs is not None:
        config, note = config.with_epochs(options.epochs)
        if note and not options.quiet:
            print(f"note: --epochs {options.epochs}: {note}", file=sys.stderr)
    return config


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command; returns the exit status (0, 1 database lost, 2 bad input, 130/143)."""
    options = RunOptions.parse(argv, prog=prog or "python -m vae_search.run")
    from vae_search.data.datasets import DataError
    from vae_search.storage.studies import StudyMismatch

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
