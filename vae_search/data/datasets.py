"""Datasets, all available offline, with a fixed seeded train/validation split.

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 x 64), scaled to [0, 1].
* ``synthetic``: ``k`` true factors ``z ~ N(0, I_k)`` pushed through a fixed random two-layer map
  to N dims: the ground truth for collapse experiments (at most ``k`` units can carry signal).
* ``file``: a user's own ``.npz``/``.npy``/``.csv`` array, validated (2-D, numeric, finite).
* ``mnist``: Keras' cached ``mnist.npz`` (``~/.keras/datasets/``), read without TensorFlow;
  never downloaded (vae_search works offline): a clear error when it is not there.
* ``sequences``, ``text`` and ``file`` with the categorical likelihood: token ids, see
  :mod:`vae_search.data.tokens` (its public names are importable from here too).

A relative ``data.path`` is looked up in the current directory, then next to the shipped studies
(:func:`resolve_data_path`), so ``studies/*.toml`` can name files that sit beside them.

For the Bernoulli likelihood the data are binarized: ``fixed`` samples each pixel once (seeded),
``dynamic`` keeps the intensities for training (the trainer resamples every epoch) while the
validation split is always a fixed sample, so the objective is comparable across trials.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from vae_search.config.schema import STUDIES_DIR, StudyConfig
from vae_search.data.split import DataError, Dataset, split_rows
from vae_search.data.tokens import (
    SEQUENCE_SYMBOLS,
    UNKNOWN_SYMBOL,
    SequenceModel,
    make_sequences,
    read_text,
    sequences_dataset,
    text_dataset,
    token_file_dataset,
)

__all__ = [
    "SEQUENCE_SYMBOLS",
    "UNKNOWN_SYMBOL",
    "DataError",
    "Dataset",
    "SequenceModel",
    "load_array",
    "load_digits",
    "load_dataset",
    "make_sequences",
    "make_synthetic",
    "mnist_cache_paths",
    "read_text",
    "resolve_data_path",
    "sequences_dataset",
    "text_dataset",
    "token_file_dataset",
]

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"  # Keras' own


def resolve_data_path(path: str | Path) -> Path:
    """Where a ``data.path`` points: as given, else relative to the shipped studies.

    An absolute path, or a relative one that exists from the current directory, is used as is;
    a relative one that does not is looked up in :data:`~vae_search.config.schema.STUDIES_DIR`. When
    neither exists the path is returned as given, so the error names what the user wrote.
    """
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    beside_studies = STUDIES_DIR / path
    return beside_studies if beside_studies.exists() else path


def _data_file(config: StudyConfig) -> Path:
    """The resolved ``data.path``, which must be a file."""
    try:
        path = resolve_data_path(config.data.path)
        kind = "directory" if path.is_dir() else "file" if path.is_file() else None
    except OSError as exc:  # e.g. a name too long for the file system
        raise DataError(f"data.path {config.data.path[:80]!r}: {exc.strerror}") from None
    if kind == "directory":
        raise DataError(f"data.path: {path} is a directory; name the data file in it")
    if kind is None:
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()} and {STUDIES_DIR})"
        raise DataError(f"data.path: data file not found: {path}{where}")
    return path


def make_synthetic(
    n_samples: int, n_features: int, true_latent_dim: int, *, seed: int, hidden: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic data with a known number of latent factors.

    Returns:
        ``(probs, z)``: per-dimension means in (0, 1), shape ``(n_samples, n_features)``, and the
        true factors, shape ``(n_samples, true_latent_dim)``.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_samples, true_latent_dim))
    w1 = rng.standard_normal((true_latent_dim, hidden)) * 1.5
    b1 = rng.standard_normal(hidden) * 0.5
    w2 = rng.standard_normal((hidden, n_features)) * (2.0 / np.sqrt(hidden))
    b2 = rng.standard_normal(n_features) * 0.5
    logits = np.tanh(z @ w1 + b1) @ w2 + b2
    return 1.0 / (1.0 + np.exp(-logits)), z


def load_array(path: str | Path) -> np.ndarray:
    """Load a 2-D numeric array from ``.npz``, ``.npy`` or ``.csv`` (never unpickles).

    A ``.npz`` must hold one array, or name it ``x``. A ``.csv`` may have one header row.

    Raises:
        DataError: missing file (or a directory), unknown format, empty, not 2-D, no
            columns, fewer than 2 rows, non-numeric or non-finite values.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if not keys:
                    raise DataError(f"{path}: holds no array")
                if "x" in keys:
                    array = archive["x"]
                elif len(keys) == 1:
                    array = archive[keys[0]]
                else:
                    raise DataError(
                        f"{path}: holds arrays {keys}; name the data array 'x' or keep just one"
                    )
        elif suffix == ".csv":
            array = _load_csv(path)
        else:
            raise DataError(f"{path}: unknown data format {suffix!r} (use .npz, .npy or .csv)")
    except DataError:
        raise
    except ValueError as exc:  # e.g. object arrays refused without pickle
        raise DataError(f"{path}: cannot read array: {exc}") from None
    except EOFError:  # an empty or cut-off .npy
        raise DataError(f"{path}: empty or truncated file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (examples x features), got shape "
                        f"{array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise DataError(f"{path}: expected numeric data, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise DataError(f"{path}: non-finite value (NaN or inf) at row {bad[0]}, column {bad[1]}")
    if array.shape[1] < 1:
        raise DataError(f"{path}: no columns (shape {array.shape}); each row needs at least "
                        "one feature")
    if array.shape[0] < 2:
        raise DataError(f"{path}: {array.shape[0]} rows are too few for a train/validation "
                        "split (at least 2: one to train, one to validate)")
    return array


def _load_csv(path: Path) -> np.ndarray:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.strip()]
    if not rows:
        raise DataError(f"{path}: empty file")

    def parse(line_no: int, line: str) -> list[float]:
        values = []
        for col, cell in enumerate(line.split(",")):
            try:
                values.append(float(cell))
            except ValueError:
                raise DataError(
                    f"{path}: line {line_no}, column {col + 1}: not a number: {cell.strip()!r}"
                ) from None
        return values

    start = 0
    try:
        parse(1, rows[0])
    except DataError:
        start = 1  # a header row
    data = [parse(i + 1, line) for i, line in enumerate(rows) if i >= start]
    if not data:
        raise DataError(f"{path}: no data rows")
    widths = {len(r) for r in data}
    if len(widths) != 1:
        raise DataError(f"{path}: rows have different numbers of columns {sorted(widths)}")
    return np.asarray(data, dtype=np.float64)


def mnist_cache_paths() -> list[Path]:
    """Where Keras keeps ``mnist.npz``: ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``
    (or ``/tmp/.keras/datasets``, Keras' fallback when the home directory is not writable)."""
    if os.environ.get("KERAS_HOME"):
        homes = [Path(os.environ["KERAS_HOME"])]
    else:
        homes = [Path.home() / ".keras", Path("/tmp/.keras")]
    return [home / "datasets" / "mnist.npz" for home in homes]


def _cached_mnist() -> np.ndarray:
    """Keras' cached copy of MNIST (70,000 x 784 in [0, 1]), read with NumPy: never a download
    (vae_search works offline) and no TensorFlow."""
    found = [path for path in mnist_cache_paths() if path.is_file()]
    if not found:
        raise DataError(
            f"mnist is not cached (no {mnist_cache_paths()[0]}) and vae_search does not "
            f"download: save {MNIST_URL} there, or set data.dataset = 'file' and data.path to "
            "your own .npz/.npy/.csv"
        )
    try:
        with np.load(found[0], allow_pickle=False) as archive:
            x = np.concatenate([archive["x_train"], archive["x_test"]])
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DataError(f"{found[0]}: not Keras' mnist.npz ({type(exc).__name__}: {exc}); "
                        f"save {MNIST_URL} there again") from None
    return x.reshape(len(x), -1) / 255.0


def load_digits() -> np.ndarray:
    """scikit-learn's bundled 8x8 digits, ``(1797, 64)`` in 0..16, read from the data file
    ``sklearn.datasets.load_digits`` reads, without importing scikit-learn: that import took
    0.74 s of every process's start (the ``--workers`` parent's before its children start).
    ``load_digits()`` itself if the file is not where scikit-learn keeps it."""
    found = importlib.util.find_spec("sklearn")
    for root in (found.submodule_search_locations or []) if found else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",")[:, :-1]  # the last column is the label
    from sklearn import datasets

    return datasets.load_digits().data


def _raw_data(config: StudyConfig) -> np.ndarray:
    d = config.data
    if d.dataset == "digits":
        return load_digits() / 16.0
    if d.dataset == "synthetic":
        probs, _ = make_synthetic(d.n_samples, d.n_features, d.true_latent_dim, seed=config.seed)
        if config.model.likelihood == "gaussian":
            rng = np.random.default_rng(config.seed + 1)
            return probs + d.noise * rng.standard_normal(probs.shape)
        return probs
    if d.dataset == "file":
        return load_array(_data_file(config))
    if d.dataset == "mnist":
        return _cached_mnist()
    raise DataError(f"unknown dataset {d.dataset!r}")  # pragma: no cover - config validates


def load_dataset(config: StudyConfig) -> Dataset:
    """Load, check, split and (for Bernoulli) binarize the configured dataset.

    Raises:
        DataError: the data cannot be read or do not fit the likelihood or the batch size.
    """
    d = config.data
    if d.dataset == "sequences":
        return sequences_dataset(config)
    if d.dataset == "text":
        return text_dataset(config, _data_file(config))
    if d.dataset == "file" and config.model.likelihood == "categorical":
        path = _data_file(config)
        return token_file_dataset(config, path, load_array(path))
    rng = np.random.default_rng(config.seed)  # the split's permutation, then the binarization
    x_train, x_val = split_rows(_raw_data(config), config, what=d.dataset, rng=rng)
    bernoulli = config.model.likelihood == "bernoulli"
    lo, hi = min(x_train.min(), x_val.min()), max(x_train.max(), x_val.max())
    if bernoulli and (lo < 0.0 or hi > 1.0):
        raise DataError(
            f"{d.dataset}: the Bernoulli likelihood needs values in [0, 1], got range "
            f"[{lo:.4g}, {hi:.4g}]; rescale the data or use likelihood = 'gaussian'"
        )
    dynamic = False
    if bernoulli:
        x_val = (rng.random(x_val.shape) < x_val).astype(np.float64)
        if d.binarize == "dynamic":
            dynamic = True
        else:
            x_train = (rng.random(x_train.shape) < x_train).astype(np.float64)
    return Dataset(
        name=d.dataset,
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        x_val=np.ascontiguousarray(x_val, dtype=np.float32),
        dynamic_binarization=dynamic,
    )
