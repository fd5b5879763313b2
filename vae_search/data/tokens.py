"""Token-sequence datasets: the ground truth and the real text for collapse in strong decoders.

* ``sequences``: synthetic sequences from a first-order Markov chain whose transition logits
  move with a continuous latent ``z ~ N(0, I_k)`` per sequence. A decoder that sees ``z`` can
  predict the tokens better than one that has only the history, by a known number of nats, so
  a collapsed VAE (KL ~ 0) is measurably worse than a healthy one. Symbols are ``0-9a-zA-Z``
  (hence at most 62).
* ``text``: a UTF-8 text file read character by character. Every run of whitespace (newlines
  included) becomes one space, so line wrapping does not leak into the model; the text is then
  cut into non-overlapping windows of ``length`` characters (the tail is dropped). The
  vocabulary is the sorted set of characters in the *training* windows plus id 0, the unknown
  character ``"\\ufffd"``, which stands for any validation character never seen in training.
* ``file`` with ``model.likelihood = "categorical"``: a 2-D array of integer token ids,
  ``0 <= id < data.vocab``; the symbols are ``"0"``, ``"1"``, ... (``data.vocab`` of them, so
  the vocabulary does not depend on which ids happen to occur in one split).

Every dataset is split by :func:`~vae_search.data.split.split_rows`, as the flat data are.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_search.config.schema import StudyConfig
from vae_search.data.split import DataError, Dataset, split_rows

__all__ = [
    "SEQUENCE_SYMBOLS",
    "UNKNOWN_SYMBOL",
    "SequenceModel",
    "make_sequences",
    "read_text",
    "sequences_dataset",
    "text_dataset",
    "token_file_dataset",
]

SEQUENCE_SYMBOLS = string.digits + string.ascii_lowercase + string.ascii_uppercase
UNKNOWN_SYMBOL = "\ufffd"  # text: id 0, any character not seen in the training windows
DEFAULT_BASE_SCALE = 1.5  # std of the transition logits at z = 0: peaked but not deterministic
DEFAULT_Z_SCALE = 2.0  # std of the logit shift z adds (summed over the k factors)


@dataclass(frozen=True)
class SequenceModel:
    """The generative model of ``sequences``, ``p(x | z) = p(x_0 | z) prod_t p(x_t | x_t-1, z)``.

    ``p(x_0 | z) = softmax(first + z @ first_z)`` and
    ``p(x_t | x_t-1 = a, z) = softmax(base[a] + sum_k z_k w[k, a])``.
    """

    first: np.ndarray  # (V,) first-token logits at z = 0
    first_z: np.ndarray  # (k, V) how each factor moves them
    base: np.ndarray  # (V, V) transition logits at z = 0; row = previous token
    w: np.ndarray  # (k, V, V) how each factor moves them

    @classmethod
    def from_seed(
        cls,
        vocab: int,
        true_latent_dim: int,
        *,
        seed: int,
        base_scale: float = DEFAULT_BASE_SCALE,
        z_scale: float = DEFAULT_Z_SCALE,
    ) -> SequenceModel:
        """Fixed random parameters: the same seed gives the same model whatever ``n_samples``."""
        rng = np.random.default_rng([seed, vocab, true_latent_dim])
        per_factor = z_scale / np.sqrt(true_latent_dim)  # the total shift does not grow with k
        return cls(
            first=rng.standard_normal(vocab) * base_scale,
            first_z=rng.standard_normal((true_latent_dim, vocab)) * per_factor,
            base=rng.standard_normal((vocab, vocab)) * base_scale,
            w=rng.standard_normal((true_latent_dim, vocab, vocab)) * per_factor,
        )

    def _logits(self, prev: np.ndarray | None, z: np.ndarray) -> np.ndarray:
        if prev is None:
            return self.first + z @ self.first_z
        return self.base[prev] + np.einsum("nk,knv->nv", z, self.w[:, prev, :])

    def sample(self, z: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        """One sequence of ``length`` tokens per row of ``z`` (shape ``(n, k)``), as int32."""
        tokens = np.empty((z.shape[0], length), dtype=np.int32)
        prev = None
        for t in range(length):
            logits = self._logits(prev, z)
            # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
            prev = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
            tokens[:, t] = prev
        return tokens

    def log_prob(self, tokens: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``log p(x | z)`` in nats per sequence.

        Args:
            tokens: Shape ``(n, L)`` token ids.
            z: Shape ``(n, k)`` (one latent per sequence) or ``(k,)`` (the same for all).

        Returns:
            Shape ``(n,)``.
        """
        tokens = np.asarray(tokens)
        z = np.broadcast_to(z, (tokens.shape[0], self.w.shape[0]))
        rows = np.arange(tokens.shape[0])
        total = np.zeros(tokens.shape[0])
        prev = None
        for t in range(tokens.shape[1]):
            logits = self._logits(prev, z)
            peak = logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
            total += logits[rows, tokens[:, t]] - log_norm
            prev = tokens[:, t]
        return total


def make_sequences(
    n_samples: int, vocab: int, length: int, true_latent_dim: int, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences whose transitions depend on a known continuous latent.

    Args:
        n_samples: Number of sequences.
        vocab: Number of symbols V (ids ``0 .. V-1``).
        length: Tokens per sequence L.
        true_latent_dim: Number of true factors k.
        seed: Fixes the model (:meth:`SequenceModel.from_seed`), the factors and the tokens.

    Returns:
        ``(tokens, z)``: int32 ids of shape ``(n_samples, length)`` and the true factors
        ``z ~ N(0, I_k)``, shape ``(n_samples, true_latent_dim)``.
    """
    model = SequenceModel.from_seed(vocab, true_latent_dim, seed=seed)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_samples, true_latent_dim))
    return model.sample(z, length, rng), z


def read_text(path: Path) -> str:
    """The text of a UTF-8 file with every whitespace run turned into one space.

    Raises:
        DataError: missing, unreadable, not UTF-8, or holding no text (one line naming the file).
    """
    if not path.is_file():
        raise DataError(f"text file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {exc.start})"
        ) from None
    text = " ".join(text.split())
    if not text:
        raise DataError(f"{path}: empty file (no text to learn from)")
    return text


def sequences_dataset(config: StudyConfig) -> Dataset:
    """The configured ``sequences``: :func:`make_sequences` with the study seed, split.

    Raises:
        DataError: too few sequences for the split and the batch size.
    """
    d = config.data
    tokens, _ = make_sequences(d.n_samples, d.vocab, d.length, d.true_latent_dim,
                               seed=config.seed)
    train, val = split_rows(tokens, config, what="sequences", unit="sequences")
    return Dataset(name="sequences", x_train=train, x_val=val,
                   vocab=tuple(SEQUENCE_SYMBOLS[: d.vocab]))


def text_dataset(config: StudyConfig, path: Path) -> Dataset:
    """Windows of ``data.length`` characters of a text file, split, vocabulary from training.

    Args:
        config: The study configuration.
        path: The text file (already resolved: :func:`~vae_search.data.datasets.resolve_data_path`).

    Raises:
        DataError: a bad file (see :func:`read_text`) or too few windows for the split.
    """
    length = config.data.length
    text = read_text(path)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    n = codes.size // length
    windows = codes[: n * length].reshape(n, length)
    unit = f"windows of data.length = {length} characters ({codes.size} characters)"
    train, val = split_rows(windows, config, what=str(path), unit=unit)
    unknown = ord(UNKNOWN_SYMBOL)
    seen = np.unique(train)
    seen = seen[seen != unknown]  # a literal U+FFFD in the text is the unknown id too
    vocab = (UNKNOWN_SYMBOL, *(chr(c) for c in seen.tolist()))

    def encode(block: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(seen, block), max(seen.size - 1, 0))
        known = seen.size > 0 and seen[pos] == block
        return np.where(known, pos + 1, 0).astype(np.int32)

    return Dataset(name="text", x_train=encode(train), x_val=encode(val), vocab=vocab)


def token_file_dataset(config: StudyConfig, path: Path, array: np.ndarray) -> Dataset:
    """A user's array of token ids (``dataset = "file"``, ``likelihood = "categorical"``).

    Args:
        config: The study configuration; ``data.vocab`` bounds the ids.
        path: Where ``array`` came from (named in errors).
        array: The array as :func:`vae_search.data.datasets.load_array` returns it (2-D, finite).

    Raises:
        DataError: a fractional or negative id, an id >= ``data.vocab``, or too few rows.
    """
    vocab = config.data.vocab
    fractional = array != np.round(array)
    if fractional.any():
        r, c = np.argwhere(fractional)[0]
        raise DataError(
            f"{path}: model.likelihood = 'categorical' reads integer token ids, got "
            f"{array[r, c]:.6g} at row {r}, column {c}"
        )
    if array.min() < 0:
        r, c = np.argwhere(array < 0)[0]
        raise DataError(f"{path}: token ids must be >= 0, got {array[r, c]:.0f} at row {r}, "
                        f"column {c}")
    if array.max() >= vocab:
        raise DataError(
            f"{path}: the largest token id is {array.max():.0f} but data.vocab = {vocab} "
            f"(ids must be < data.vocab; set data.vocab = {array.max() + 1:.0f} or more)"
        )
    train, val = split_rows(array.astype(np.int32), config, what=str(path))
    return Dataset(name="file", x_train=np.ascontiguousarray(train),
                   x_val=np.ascontiguousarray(val), vocab=tuple(str(i) for i in range(vocab)))
