"""The ELBO's terms and the collapse diagnostics, in NumPy.

These are the reference definitions: the Keras model computes the same quantities in compiled
code (tests compare the two), and the diagnostics below are computed from the encoder's outputs
``(mu, logvar)`` on the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Diagnostics",
    "LOG_2PI",
    "active_units",
    "bernoulli_log_likelihood",
    "diagnose",
    "gaussian_kl",
    "gaussian_log_likelihood",
    "mutual_information",
    "negative_elbo",
]

LOG_2PI = float(np.log(2.0 * np.pi))


def gaussian_kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and latent dim, in nats: shape (B, D)."""
    return 0.5 * (mu**2 + np.exp(logvar) - logvar - 1.0)


def bernoulli_log_likelihood(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log p(x|z) of a Bernoulli decoder per example and data dim: shape (B, N)."""
    # log sigmoid(l) = -softplus(-l); log(1 - sigmoid(l)) = -softplus(l)
    return -(x * np.logaddexp(0.0, -logits) + (1.0 - x) * np.logaddexp(0.0, logits))


def gaussian_log_likelihood(x: np.ndarray, mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log N(x; mean, exp(logvar)) per example and data dim, constant included: shape (B, N)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * np.exp(-logvar))


def negative_elbo(log_likelihood: np.ndarray, kl: np.ndarray) -> np.ndarray:
    """-ELBO per example at beta = 1 with ``sum`` reduction: ``-sum_N log p + sum_D KL``."""
    return -log_likelihood.sum(axis=1) + kl.sum(axis=1)


def active_units(mu: np.ndarray, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Active units (Burda et al. 2016): ``Var_x(E_q[z_u|x]) > threshold``.

    Returns:
        The number of active units and the per-unit variances, shape (D,).
    """
    variances = np.var(mu, axis=0)
    return int(np.sum(variances > threshold)), variances


def mutual_information(
    mu: np.ndarray, logvar: np.ndarray, *, batch_size: int = 256, seed: int = 0
) -> float:
    """I(x; z) under q, with the minibatch aggregate-posterior estimator of He et al. (2019).

    For each batch of B examples: ``I = E_x E_q(z|x)[log q(z|x)] - E_z[log q(z)]`` with
    ``q(z) ~ (1/B) sum_i q(z|x_i)``. The estimate is bounded by ``log B``, so B is fixed; batches
    are averaged (a trailing partial batch is dropped unless it is the only one).
    """
    n, d = mu.shape
    rng = np.random.default_rng(seed)
    b = min(batch_size, n)
    estimates = []
    for start in range(0, n - b + 1, b):
        m, lv = mu[start : start + b], logvar[start : start + b]
        neg_entropy = np.mean(-0.5 * d * LOG_2PI - 0.5 * np.sum(1.0 + lv, axis=1))
        z = m + np.exp(0.5 * lv) * rng.standard_normal(m.shape)
        dev = z[:, None, :] - m[None, :, :]  # (B_z, B_x, D)
        log_density = -0.5 * np.sum(dev**2 * np.exp(-lv)[None], axis=2) - 0.5 * (
            d * LOG_2PI + np.sum(lv, axis=1)[None, :]
        )
        peak = log_density.max(axis=1, keepdims=True)
        log_qz = (peak[:, 0] + np.log(np.exp(log_density - peak).sum(axis=1))) - np.log(b)
        estimates.append(neg_entropy - np.mean(log_qz))
    return float(np.mean(estimates))


@dataclass(frozen=True)
class Diagnostics:
    """Posterior-collapse diagnostics of one model on the validation split."""

    active_units: int
    unit_variances: list[float]  # Var_x(mu_u), per latent dim
    kl_per_dim: list[float]  # mean over x of KL_u, nats
    kl_total: float  # sum of kl_per_dim, nats per example
    collapsed_dims: int  # dims whose mean KL is below the KL threshold
    mutual_info: float  # I(x; z) estimate, nats
    recon: float  # E_q[-log p(x|z)], nats per example (sum over data dims)
    collapsed: bool  # (almost) no active units or I(x; z) ~ 0


def diagnose(
    mu: np.ndarray,
    logvar: np.ndarray,
    recon: float,
    *,
    active_threshold: float = 0.01,
    kl_threshold: float = 0.01,
    min_active_units: int = 1,
    min_mutual_info: float = 0.05,
    mi_batch_size: int = 256,
    seed: int = 0,
) -> Diagnostics:
    """Compute the collapse diagnostics from the encoder's outputs on the validation split."""
    n_active, variances = active_units(mu, active_threshold)
    kl_dims = gaussian_kl(mu, logvar).mean(axis=0)
    mi = mutual_information(mu, logvar, batch_size=mi_batch_size, seed=seed)
    return Diagnostics(
        active_units=n_active,
        unit_variances=[float(v) for v in variances],
        kl_per_dim=[float(k) for k in kl_dims],
        kl_total=float(kl_dims.sum()),
        collapsed_dims=int(np.sum(kl_dims < kl_threshold)),
        mutual_info=mi,
        recon=float(recon),
        collapsed=bool(n_active < min_active_units or mi < min_mutual_info),
    )
