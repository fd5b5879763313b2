"""``vae-search run`` (``python -m vae_search.run``): create or join a study, run trials, show
progress and a summary.

``--trials`` is the study's total budget of finished (complete + pruned) trials, shared by all
workers on the same storage: re-running the command resumes the study up to the budget, and
never wipes results. ``--help`` does not import TensorFlow.

This module is the facade: it parses the command line once into a frozen
:class:`~vae_search.cli.RunOptions`, resolves the configuration, and hands both to the worker
(:mod:`~vae_search.engine.worker`) or the local process pool (:mod:`~vae_search.engine.pool`);
errors become one line and an exit status (:mod:`vae_search.cli`). It imports the rest only
when run, so that a signal during start-up is a clean exit from the first moment.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vae_search.cli import RunOptions, stop_quietly_on_signals
from vae_search.cli import build_run_parser as build_parser

if TYPE_CHECKING:
    from vae_search.config.schema import StudyConfig
    from vae_search.engine.signals import SignalState

__all__ = ["RunOptions", "build_parser", "main", "resolve_config"]


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
    from vae_search.config.schema import load_config, parse_assignment

    merged: dict[str, Any] = dict(parse_assignment(text) for text in options.set)
    merged.update(overrides or {})
    if options.seed is not None:
        merged["seed"] = options.seed
    # Validated once, by the last step: an error names the values in force (``--epochs 3``,
    # not the TOML's ``train.epochs = 2``).
    last = options.epochs is None
    config = load_config(options.study, validate=last and not merged)
    if merged:
        config = config.with_overrides(validate=last, **merged)
    if options.epochs is not None:
        config, note = config.with_epochs(options.epochs)
        if note and not options.quiet:
            print(f"note: --epochs {options.epochs}: {note}", file=sys.stderr)
    return config


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command; returns the exit status (0, 1 database lost, 2 bad input, 130/143)."""
    stop_quietly_on_signals()  # until run_command holds them: the imports below take seconds
    options = RunOptions.parse(argv, prog=prog or "python -m vae_search.run")
    from vae_search.config.schema import ConfigError
    from vae_search.data.datasets import DataError
    from vae_search.engine.pool import run_pool
    from vae_search.engine.signals import run_command
    from vae_search.engine.study import StudyMismatch
    from vae_search.engine.worker import run_worker
    from vae_search.storage.connection import StorageError

    def body(signals: SignalState) -> int:
        config = resolve_config(options)
        if options.workers == 1:  # so are a --workers parent's children (their argv)
            return run_worker(options, config, signals)
        return run_pool(options, config, signals)  # several, or auto

    return run_command(body, label="vae_search", debug=options.debug,
                       quiet_interrupt=options.child,
                       usage_errors=(ConfigError, DataError, StorageError, StudyMismatch))


if __name__ == "__main__":
    from vae_search.cli import exiting

    sys.exit(exiting(main()))
