"""The dataset container and the one seeded train/validation split every dataset uses.

Kept apart from :mod:`~vae_search.data.datasets` (flat datasets) and :mod:`~.tokens` (token
datasets) so both can use it without importing each other; the public names are re-exported by
:mod:`vae_search.data.datasets`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vae_search.config.schema import StudyConfig

__all__ = ["DataError", "Dataset", "min_examples_for_split", "split_rows", "split_sizes"]


class DataError(ValueError):
    """The dataset cannot be loaded or does not fit the configuration."""


@dataclass(frozen=True)
class Dataset:
    """A train/validation split of flat float32 examples or of int32 token sequences.

    Flat data have ``vocab == ()``. Token data have one symbol per id in ``vocab`` and every id
    in ``[0, len(vocab))``; all sequences of a dataset have the same length.
    """

    name: str
    x_train: np.ndarray  # flat: (n_train, N) float32, intensities in [0, 1] when dynamic
    #                      binarization is on; tokens: (n_train, L) int32 ids
    x_val: np.ndarray  # flat: (n_val, N), binary for the Bernoulli likelihood; tokens: (n_val, L)
    dynamic_binarization: bool = False
    vocab: tuple[str, ...] = ()  # tokens: the symbol of each id; () for flat data

    @property
    def n_features(self) -> int:
        """Data dimension N (flat) or sequence length L (tokens)."""
        return int(self.x_train.shape[1])

    @property
    def is_tokens(self) -> bool:
        """Whether the examples are token ids (categorical likelihood)."""
        return bool(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids (0 for flat data)."""
        return len(self.vocab)

    def decode(self, ids: Iterable[int]) -> str:
        """Turn one sequence of token ids back into text.

        Args:
            ids: A 1-D sequence of ids in ``[0, vocab_size)``.

        Returns:
            The symbols joined with ``""`` when every symbol is one character (characters,
            ``0-9a-zA-Z`` sequences), else with ``" "`` (e.g. numeric ids ``"12"``).

        Raises:
            ValueError: the dataset is not token data, or an id is out of range.
        """
        if not self.vocab:
            raise ValueError(f"{self.name}: flat data have no vocabulary to decode with")
        symbols = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"{self.name}: token id {i} is outside [0, {len(self.vocab)})")
            symbols.append(self.vocab[i])
        sep = "" if all(len(s) == 1 for s in self.vocab) else " "
        return sep.join(symbols)


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """``(n_train, n_val)`` for ``n`` examples: at least one held out, the share rounded."""
    n_val = max(1, round(n * val_fraction))
    return n - n_val, n_val


def min_examples_for_split(batch_size: int, val_fraction: float) -> int:
    """The fewest examples whose training split holds at least one full batch."""
    n = max(batch_size + 1, int(batch_size / (1.0 - val_fraction)) - 2)
    while split_sizes(n, val_fraction)[0] < batch_size:
        n += 1
    return n


def split_rows(
    rows: np.ndarray, config: StudyConfig, *, what: str, unit: str = "rows",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The seeded train/validation split of ``rows`` (after ``data.max_examples``).

    The validation rows are the first ``n_val`` of a permutation drawn from ``config.seed``,
    so datasets of the same size split the same way, whatever their kind.

    Args:
        rows: The examples, one per row.
        config: ``seed``, ``data.max_examples``, ``data.val_fraction``, ``train.batch_size``.
        what: The data, as named in an error (the dataset, or the file).
        unit: What a row is, as named in an error ("rows", "sequences", "windows of ...").
        rng: The generator to draw the permutation from (default: a new one seeded with
            ``config.seed``); flat data keep drawing their binarization from it.

    Returns:
        ``(train, val)``.

    Raises:
        DataError: too few rows for a validation split and one full training batch.
    """
    d, batch_size = config.data, config.train.batch_size
    if d.max_examples:
        rows = rows[: d.max_examples]
    n = rows.shape[0]
    n_train, n_val = split_sizes(n, d.val_fraction)
    if n < 2 or n_train < batch_size:
        need = min_examples_for_split(batch_size, d.val_fraction)
        raise DataError(
            f"{what}: {n} {unit} are too few for a train/validation split: "
            f"train.batch_size = {batch_size} is larger than the training split ({max(n_train, 0)} "
            f"of {n} with data.val_fraction = {d.val_fraction}); it needs at least {need}"
        )
    order = (rng or np.random.default_rng(config.seed)).permutation(n)
    return rows[order[n_val:]], rows[order[:n_val]]
