"""The dataset container and the seeded train/validation split every dataset shares.

Kept apart from :mod:`~vae_search.data.datasets` (flat datasets) and :mod:`~.tokens` (token
datasets) so both can use it without importing each other; the public names are re-exported by
:mod:`vae_search.data.datasets`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "Dataset", "min_examples_for_split", "split_sizes"]


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
