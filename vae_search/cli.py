"""Shared command-line pieces (no TensorFlow, no Optuna): one-line argument errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["EXIT_USAGE", "OneLineParser", "bounded_int"]

EXIT_USAGE = 2  # bad input: flags, config, storage, data, study mismatch


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def bounded_int(
    minimum: int, maximum: int | None = None, *, noun: str = "a whole number"
) -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers in ``[minimum, maximum]``.

    Args:
        minimum: The smallest accepted value.
        maximum: The largest accepted value (``None``: no upper bound).
        noun: What the value is, for the message when the text is not a number.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if maximum is None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in {minimum}..{maximum}, got {value}")
        return value

    return parse
