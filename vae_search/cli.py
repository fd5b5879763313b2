"""Shared command-line pieces (no TensorFlow, no Optuna): one-line argument errors."""

from __future__ import annotations

import argparse

__all__ = ["EXIT_USAGE", "OneLineParser"]

EXIT_USAGE = 2  # bad input: flags, config, storage, data, study mismatch


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")
