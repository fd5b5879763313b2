"""Per-trial artifacts: validation reconstructions and prior samples, as a PNG or as text.

Stored with Optuna's artifact API so the optuna-dashboard trial page shows what a collapsed
posterior looks like (every reconstruction the same blurry average) next to a healthy one. The
store (``--artifacts``, default ``$VAE_SEARCH_ARTIFACTS``) is one of:

* a directory (:class:`optuna.artifacts.FileSystemArtifactStore`): by default beside the SQLite
  file (``vae_search.db`` -> ``vae_search-artifacts/``), or ``./vae_search-artifacts`` for a
  database server or the proxy. With many machines, every worker and the dashboard mount the
  same directory (a shared volume) and name it;
* ``s3://BUCKET`` (:class:`optuna.artifacts.Boto3ArtifactStore`, with the ``[s3]`` extra):
  any S3-compatible store, credentials and endpoint from boto3's usual environment
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO and such).

The store is built and checked once per process (:func:`artifact_store`), when a run opens its
study (one line if it cannot be used); the run's trials then upload to that same store, and a
failed upload costs a warning, never the trial. Token sequences get a text file instead: 8
validation sequences, their greedy reconstructions and 8 prior samples, one per line. The
rendering is NumPy + Pillow only (no TensorFlow).
"""

from __future__ import annotations

import functools
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vae_search.storage.url import StorageError, StorageURL

if TYPE_CHECKING:
    import optuna

    from vae_search.storage._optuna import ArtifactStore

__all__ = [
    "ARTIFACT_DIR_SUFFIX",
    "DEFAULT_ARTIFACT_DIR",
    "S3_SCHEME",
    "ReconstructionArtifacts",
    "artifact_hook",
    "artifact_store",
    "default_artifact_dir",
    "make_artifact_store",
    "sample_grid",
]

S3_SCHEME = "s3"  # s3://BUCKET: an S3-compatible artifact store (the [s3] extra)
ARTIFACT_DIR_SUFFIX = "-artifacts"  # vae_search.db -> vae_search-artifacts/
DEFAULT_ARTIFACT_DIR = Path("vae_search-artifacts")  # for server URLs (PostgreSQL...)
N_EXAMPLES = 8  # columns: validation examples reconstructed, and prior samples drawn
CELL_PIXELS = 64  # each image (or bar strip) is scaled to about this many pixels high
STRIP_HEIGHT = 12  # pixels of a non-square example drawn as a one-row strip
PAD = 2  # pixels between cells
ARTIFACT_FILENAME = "trial-{number:05d}-reconstructions.png"
TEXT_ARTIFACT_FILENAME = "trial-{number:05d}-reconstructions.txt"


def default_artifact_dir(storage_url: str | StorageURL) -> Path:
    """The artifact directory for a storage URL: beside a SQLite file, else the default."""
    path = StorageURL.of(storage_url).sqlite_path
    if path is None:
        return DEFAULT_ARTIFACT_DIR
    return path.with_name(path.stem + ARTIFACT_DIR_SUFFIX)


def make_artifact_store(
    storage_url: str | StorageURL, artifacts: str | Path | None = None
) -> ArtifactStore:
    """A new artifact store named by ``artifacts``, checked to be usable.

    Args:
        storage_url: The study storage (locates the default directory).
        artifacts: A directory (created if needed), ``s3://BUCKET``, or ``None`` for the
            default directory of ``storage_url``.

    Raises:
        StorageError: the directory cannot be created or written; the bucket is missing or
            unreachable, or the ``[s3]`` extra (boto3) is not installed.
    """
    return _build_store(_location(storage_url, artifacts))


def artifact_store(
    storage_url: str | StorageURL, artifacts: str | Path | None = None
) -> ArtifactStore:
    """This process's artifact store for ``artifacts``: :func:`make_artifact_store` the first
    time (a run calls it before its study exists, so a bad store is an error before anything
    is written), the same store after (the run's trials upload to it).

    Raises:
        StorageError: as :func:`make_artifact_store` (a failure is not remembered).
    """
    return _process_store(_location(storage_url, artifacts))


def _location(storage_url: str | StorageURL, artifacts: str | Path | None) -> str:
    """``s3://BUCKET``, or the store's directory as an absolute path (a relative one names a
    different directory after a change of the working directory)."""
    if artifacts is not None and str(artifacts).lower().startswith(f"{S3_SCHEME}://"):
        return str(artifacts)
    directory = Path(artifacts) if artifacts is not None else default_artifact_dir(storage_url)
    return str(directory.absolute())


def _build_store(location: str) -> ArtifactStore:
    if location.lower().startswith(f"{S3_SCHEME}://"):
        return _s3_store(location)
    from optuna.artifacts import FileSystemArtifactStore

    directory = Path(location)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise StorageError(f"cannot write artifacts to {directory}: {exc.strerror or exc}"
                           ) from None
    return FileSystemArtifactStore(str(directory))


# One store per location and process: building one creates the directory and writes a probe
# file, or asks S3 for the bucket; a run needs that check once, not once per trial loop.
_process_store = functools.lru_cache(maxsize=None)(_build_store)


def _s3_store(url: str) -> ArtifactStore:
    """``s3://BUCKET`` as a Boto3 artifact store, once the bucket answers."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.netloc or parts.path.strip("/") or parts.query:
        raise StorageError(f"malformed artifact store {url!r} (expected s3://BUCKET; artifacts "
                           "are named by their ids inside the bucket)")
    try:
        import boto3
    except ImportError:
        raise StorageError(f"artifact store {url}: boto3 is not installed "
                           "(pip install 'vae_search[s3]')") from None
    from optuna.artifacts import Boto3ArtifactStore

    client = boto3.client("s3")
    try:
        client.head_bucket(Bucket=parts.netloc)
    except _s3_errors() as exc:
        raise StorageError(f"cannot use artifact store {url}: {exc}") from None
    return Boto3ArtifactStore(parts.netloc, client=client)


def _upload_errors() -> tuple[type[BaseException], ...]:
    return (OSError, *_s3_errors())


def _s3_errors() -> tuple[type[BaseException], ...]:
    """What boto3 raises for a missing bucket, bad credentials or an unreachable endpoint."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError)


def _image_shape(n_features: int) -> tuple[int, int]:
    side = math.isqrt(n_features)
    if side * side == n_features:
        return side, side
    return 1, n_features  # not square: draw each example as a strip


def sample_grid(rows: list[np.ndarray], *, lo: float | None = None,
                hi: float | None = None) -> Any:
    """A grayscale Pillow image: one row of cells per array in ``rows``.

    Args:
        rows: Arrays of shape ``(n, n_features)``; square feature counts become ``s x s``
            images, others a one-pixel-high strip scaled to a bar.
        lo: Value drawn black (default: the minimum over all rows).
        hi: Value drawn white (default: the maximum over all rows).

    Returns:
        A ``PIL.Image.Image`` in mode ``"L"``.
    """
    from PIL import Image

    arrays = [np.asarray(r, dtype=np.float64) for r in rows]
    n_features = arrays[0].shape[1]
    h, w = _image_shape(n_features)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays])
    if lo is None:
        lo = float(finite.min()) if finite.size else 0.0
    if hi is None:
        hi = float(finite.max()) if finite.size else 1.0
    span = hi - lo if hi > lo else 1.0
    if h == w:
        scale = max(1, CELL_PIXELS // h)
        cell_h, cell_w = h * scale, w * scale
    else:
        scale = max(1, (CELL_PIXELS * 4) // w)  # strips: about 4 cells' width
        cell_h, cell_w = STRIP_HEIGHT, w * scale
    n_cols = max(a.shape[0] for a in arrays)
    if h != w:  # strips stack vertically: one column, rows of strips
        width = cell_w + 2 * PAD
        height = len(arrays) * (n_cols * (cell_h + PAD) + PAD * 3) + PAD
    else:
        width = n_cols * (cell_w + PAD) + PAD
        height = len(arrays) * (cell_h + PAD) + PAD
    canvas = Image.new("L", (width, height), color=128)
    y = PAD
    for a in arrays:
        for i, example in enumerate(a):
            pixels = np.nan_to_num((example - lo) / span, nan=0.0).clip(0.0, 1.0)
            img = Image.fromarray((pixels.reshape(h, w) * 255).astype(np.uint8), mode="L")
            img = img.resize((cell_w, cell_h), Image.Resampling.NEAREST)
            if h == w:
                canvas.paste(img, (PAD + i * (cell_w + PAD), y))
            else:
                canvas.paste(img, (PAD, y))
                y += cell_h + PAD
        y += cell_h + PAD if h == w else PAD * 3
    return canvas


class ReconstructionArtifacts:
    """``Objective(on_finish=...)`` hook: upload a reconstructions + prior-samples PNG.

    Rows of the image: validation examples, their reconstructions (decoder mean at ``E[z|x]``),
    and decoded prior samples ``z ~ N(0, I)`` (seeded by the trial seed).

    Args:
        artifact_store: Where the PNGs go.
        n_examples: Examples per row.
    """

    def __init__(self, artifact_store: ArtifactStore, *, n_examples: int = N_EXAMPLES) -> None:
        self.artifact_store = artifact_store
        self.n_examples = n_examples

    def images(self, trainer: Any, x_val: np.ndarray, *, seed: int) -> list[np.ndarray]:
        """The three rows of the grid as arrays (for tests and the upload)."""
        x = np.asarray(x_val[: self.n_examples])
        mu, _ = trainer.encode(x)
        recon = trainer.decode(mu)
        z = np.random.default_rng(seed).standard_normal((len(x), mu.shape[1])).astype(np.float32)
        return [x, np.asarray(recon), np.asarray(trainer.decode(z))]

    def text(self, trainer: Any, dataset: Any, *, seed: int) -> str:
        """Token data: the three rows as decoded text, one sequence per line."""
        x, recon, prior = self.images(trainer, dataset.x_val, seed=seed)
        blocks = [("validation sequences", x), ("greedy reconstructions (z = E[z|x])", recon),
                  ("prior samples (z ~ N(0, I), greedy)", prior)]
        lines = []
        for title, rows in blocks:
            lines.append(f"# {title}")
            lines.extend(repr(dataset.decode(row)) for row in np.asarray(rows, dtype=np.int64))
        return "\n".join(lines) + "\n"

    def __call__(self, trial: optuna.Trial, trainer: Any, dataset: Any) -> str:
        """Render and upload the PNG (or the text); returns the artifact id."""
        from optuna.artifacts import upload_artifact

        try:
            with tempfile.TemporaryDirectory() as tmp:
                if getattr(dataset, "is_tokens", False):
                    path = Path(tmp) / TEXT_ARTIFACT_FILENAME.format(number=trial.number)
                    path.write_text(self.text(trainer, dataset, seed=trial.number),
                                    encoding="utf-8")
                    mimetype = "text/plain"
                else:
                    path = Path(tmp) / ARTIFACT_FILENAME.format(number=trial.number)
                    sample_grid(self.images(trainer, dataset.x_val, seed=trial.number)).save(
                        path, format="PNG")
                    mimetype = "image/png"
                return upload_artifact(artifact_store=self.artifact_store, file_path=str(path),
                                       study_or_trial=trial, mimetype=mimetype)
        except _upload_errors() as exc:  # a full disk or an S3 outage must not cost the trial
            print(f"warning: trial {trial.number}: artifact not saved: {exc}", file=sys.stderr)
            return ""


def artifact_hook(
    storage_url: str | StorageURL, artifacts: str | Path | None = None
) -> ReconstructionArtifacts:
    """The runner's ``Objective(on_finish=...)``: PNGs into this process's artifact store
    (:func:`artifact_store`; default: the storage's artifact directory)."""
    return ReconstructionArtifacts(artifact_store(storage_url, artifacts))
