"""Theory's reference for a Gaussian likelihood with a fixed variance: probabilistic PCA.

A linear VAE with ``p(x|z) = N(Wz + b, sigma^2 I)`` has probabilistic PCA as its optimum
(Tipping and Bishop 1999; Lucas et al. 2019): with ``L_1 >= L_2 >= ...`` the eigenvalues of
the training covariance and ``U`` their eigenvectors, the directions whose eigenvalue exceeds
``sigma^2`` stay active (at most ``latent_dim`` of them), the rest collapse, and the marginal
likelihood is in closed form::

    log p(x) = log N(x; mu, sigma^2 I + U_k (L_k - sigma^2 I) U_k^T)

In the eigenbasis that covariance is diagonal (``L_i`` for the ``k`` active directions,
``sigma^2`` for the others), so the log-density is a sum of one-dimensional Gaussians and
needs no matrix inverse. ``k = 0`` is the all-collapsed model ``N(x; mu, sigma^2 I)``.

The values are in nats per example on the validation split, the Gaussian constant included,
exactly as the trials' validation ELBO (beta = 1, ``sum``): a nonlinear VAE should beat the
pPCA value, and a collapsed one sits near the ``k = 0`` value. Pure NumPy: the report reads
the stored reference without TensorFlow, and computing it costs one eigendecomposition of an
``N x N`` covariance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vae_search import keys

if TYPE_CHECKING:
    import optuna

    from vae_search.config.schema import StudyConfig

__all__ = ["PpcaReference", "Spectrum", "applies", "find_reference", "from_attr",
           "ppca_reference", "reference_sigma2s", "spectrum", "stored_references",
           "study_references", "to_attr"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Spectrum:
    """The training split's mean and covariance eigendecomposition, largest eigenvalue first."""

    mean: np.ndarray  # (N,)
    eigenvalues: np.ndarray  # (N,), descending
    eigenvectors: np.ndarray  # (N, N), column i belongs to eigenvalue i

    def active(self, sigma2: float, latent_dim: int | None = None) -> int:
        """Directions pPCA keeps: eigenvalues above ``sigma2``, at most ``latent_dim``."""
        k = int(np.sum(self.eigenvalues > sigma2))
        return k if latent_dim is None else min(k, latent_dim)

    def log_likelihood(self, x: np.ndarray, sigma2: float, k: int) -> np.ndarray:
        """``log N(x; mu, sigma^2 I + U_k (L_k - sigma^2) U_k^T)`` per row of ``x``, nats."""
        y = (np.asarray(x, dtype=np.float64) - self.mean) @ self.eigenvectors
        variances = np.full(self.eigenvalues.shape, float(sigma2))
        variances[:k] = self.eigenvalues[:k]
        return -0.5 * np.sum(_LOG_2PI + np.log(variances) + y**2 / variances, axis=1)


def spectrum(x_train: np.ndarray) -> Spectrum:
    """The mean and the eigendecomposition of the training covariance.

    The covariance is the maximum-likelihood one (divided by ``n``, not ``n - 1``): pPCA's
    closed-form optimum is stated for it.
    """
    x = np.asarray(x_train, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / x.shape[0])
    order = np.argsort(values)[::-1]
    return Spectrum(mean=mean, eigenvalues=np.clip(values[order], 0.0, None),
                    eigenvectors=vectors[:, order])


@dataclass(frozen=True)
class PpcaReference:
    """The pPCA reference at one ``sigma^2`` (and latent dim), validation nats per example."""

    sigma2: float
    latent_dim: int | None  # the cap on the active directions (None: no cap)
    active: int  # predicted active directions: eigenvalues above sigma^2, capped
    log_likelihood: float  # the pPCA optimum's mean log p(x)
    collapsed: float  # everything collapsed (k = 0): mean log N(x; mu, sigma^2 I)

    @property
    def collapse_cost(self) -> float:
        """Nats per example that collapsing every direction costs at the optimum."""
        return self.log_likelihood - self.collapsed


def ppca_reference(x_train: np.ndarray, x_val: np.ndarray, sigma2: float, *,
                   latent_dim: int | None = None, fitted: Spectrum | None = None
                   ) -> PpcaReference:
    """pPCA fitted on ``x_train`` at a fixed ``sigma2``, scored on ``x_val``.

    Args:
        x_train: ``(n_train, N)`` training examples (mean and covariance come from them).
        x_val: ``(n_val, N)`` validation examples.
        sigma2: The Gaussian likelihood's fixed variance.
        latent_dim: At most this many active directions (``None``: no cap).
        fitted: ``spectrum(x_train)`` when already computed.

    Returns:
        The reference: predicted active directions and mean validation log-likelihoods.
    """
    s = fitted if fitted is not None else spectrum(x_train)
    k = s.active(sigma2, latent_dim)
    return PpcaReference(
        sigma2=float(sigma2), latent_dim=latent_dim, active=k,
        log_likelihood=float(s.log_likelihood(x_val, sigma2, k).mean()),
        collapsed=float(s.log_likelihood(x_val, sigma2, 0).mean()),
    )


def applies(config: StudyConfig) -> bool:
    """Whether the study has a pPCA reference: a flat Gaussian likelihood, fixed variance."""
    m = config.model
    return m.likelihood == "gaussian" and m.variance == "fixed"


def reference_sigma2s(config: StudyConfig) -> tuple[float, ...]:
    """The study's fixed variances: each ``search.sigma2`` choice, else ``model.sigma2``."""
    if not applies(config):
        return ()
    return tuple(config.search.sigma2) if config.search.sigma2 else (config.model.sigma2,)


def study_references(config: StudyConfig, x_train: np.ndarray,
                     x_val: np.ndarray) -> list[PpcaReference]:
    """One reference per (searched) ``sigma^2`` and latent dim; ``[]`` when none applies."""
    sigma2s = reference_sigma2s(config)
    if not sigma2s:
        return []
    fitted = spectrum(x_train)
    return [ppca_reference(x_train, x_val, s2, latent_dim=d, fitted=fitted)
            for s2 in sigma2s for d in sorted(config.search.latent_dim)]


def to_attr(references: Iterable[PpcaReference]) -> list[dict[str, Any]]:
    """The references as the study attr ``keys.STUDY_ATTR_PPCA_REFERENCE`` stores them."""
    return [asdict(r) for r in references]


def stored_references(study: optuna.Study) -> list[PpcaReference]:
    """The study's stored pPCA references (``[]``: none applies, or not computed yet)."""
    raw = study.user_attrs.get(keys.STUDY_ATTR_PPCA_REFERENCE)
    return from_attr(raw)


def from_attr(raw: Any) -> list[PpcaReference]:
    """Read the stored attr back; anything malformed reads as no reference."""
    if not isinstance(raw, list):
        return []
    try:
        return [PpcaReference(**item) for item in raw if isinstance(item, Mapping)]
    except TypeError:
        return []


def find_reference(references: Sequence[PpcaReference], sigma2: float | None,
                   latent_dim: int) -> PpcaReference | None:
    """The reference of a trial with this ``sigma^2`` and latent dim (``None``: none)."""
    if sigma2 is None:
        return None
    return next((r for r in references if math.isclose(r.sigma2, sigma2)
                 and r.latent_dim == latent_dim), None)
