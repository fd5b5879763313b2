"""The ELBO's terms and the collapse diagnostics, in NumPy.

These are the reference definitions: the Keras model computes the same quantities in compiled
code (tests compare the two), and the diagnostics below are computed from the encoder's outputs
``(mu, logvar)`` on the validation split.
"""

from __future__ import annotations

import functools
import math
from contextlib import AbstractContextManager
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
    "mutual_information_replicates",
    "negative_elbo",
    "verdict_information",
]

LOG_2PI = float(np.log(2.0 * np.pi))


@functools.cache
def _blas_controller():  # noqa: ANN202 - threadpoolctl's ThreadpoolController
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # scans the loaded libraries once (~0.3 ms)


def _one_blas_thread() -> AbstractContextManager[object]:
    """NumPy's BLAS on one thread for the duration (about 8 us to enter and leave).

    The estimator's matrix products are small (256 x 2D by 2D x 256): a threaded OpenBLAS
    split them across cores that two training workers already keep busy, and one product took
    10.7 ms instead of 0.1 ms (load 1.3, D = 16); einsum, which avoids BLAS, takes 0.6-0.9 ms.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


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


def mutual_information_replicates(
    mu: np.ndarray, logvar: np.ndarray, *, batch_size: int = 256, seed: int = 0,
    repeats: int = 1,
) -> np.ndarray:
    """Replicate estimates of I(x; z) under q: the minibatch aggregate-posterior estimator of
    He et al. (2019), with common random numbers.

    For each batch of B examples and one draw ``z_i ~ q(z|x_i)`` per example:
    ``I ~ mean_i [log q(z_i|x_i) - log q_B(z_i)]`` with ``q_B(z) = (1/B) sum_j q(z|x_j)``.
    He et al. take ``E_q[log q(z|x)]`` in closed form (minus the entropy); here it is evaluated
    at the same draws as ``log q_B``, an equally unbiased choice whose errors cancel: where every
    posterior is the same (collapse) each term is exactly 0, while the closed form leaves the
    Monte Carlo noise of ``log q_B`` (sd ~ sqrt(D/2B) nats). The estimate is bounded by
    ``log B``, so B is fixed. A replicate is one random partition of the rows into batches (a
    trailing partial batch is dropped unless it is the only one) with fresh draws, averaged
    over its batches.

    Returns:
        The ``repeats`` replicate estimates, nats, shape (repeats,).
    """
    n, d = mu.shape
    rng = np.random.default_rng(seed)
    b = min(batch_size, n)
    var_inv = np.exp(-logvar)
    estimates = np.empty(repeats)
    with _one_blas_thread():
        for r in range(repeats):
            order = rng.permutation(n) if repeats > 1 else np.arange(n)
            per_batch = []
            for start in range(0, n - b + 1, b):
                rows = order[start : start + b]
                m, lv, vi = mu[rows], logvar[rows], var_inv[rows]
                z = m + np.exp(0.5 * lv) * rng.standard_normal(m.shape)
                # log N(z_i; m_j, v_j) for all (i, j), -0.5 (sum_d (z_id - m_jd)^2 / v_jd + c_j):
                # the squares expanded into one matrix product, [z^2, z] [1/v, -2 m/v]^T, and
                # c_j = sum_d (m_jd^2 / v_jd + log v_jd) + D log 2 pi; in place (the B x B
                # temporaries were half of the time)
                log_density = (np.concatenate([z**2, z], axis=1)
                               @ np.concatenate([vi, -2.0 * m * vi], axis=1).T)
                log_density += np.sum(m**2 * vi + lv, axis=1)[None, :] + d * LOG_2PI
                log_density *= -0.5
                peak = log_density.max(axis=1, keepdims=True)
                weights = np.exp(log_density - peak)
                log_qz = peak[:, 0] + np.log(weights.sum(axis=1)) - np.log(b)
                per_batch.append(np.mean(np.diag(log_density) - log_qz))
            estimates[r] = np.mean(per_batch)
    return estimates


def mutual_information(
    mu: np.ndarray, logvar: np.ndarray, *, batch_size: int = 256, seed: int = 0,
    repeats: int = 1,
) -> float:
    """I(x; z) under q, nats: the mean of :func:`mutual_information_replicates`."""
    return float(np.mean(mutual_information_replicates(
        mu, logvar, batch_size=batch_size, seed=seed, repeats=repeats)))


@dataclass(frozen=True)
class Diagnostics:
    """Posterior-collapse diagnostics of one model on the validation split."""

    active_units: int
    unit_variances: list[float]  # Var_x(mu_u), per latent dim
    kl_per_dim: list[float]  # mean over x of KL_u, nats
    kl_total: float  # sum of kl_per_dim, nats per example
    collapsed_dims: int  # dims whose mean KL is below the KL threshold
    mutual_info: float  # I(x; z) estimate, nats (mean of the replicates)
    mutual_info_sd: float  # its standard error over the replicates (inf with one replicate)
    information: float  # what the verdict compares with min_mutual_info (see diagnose)
    recon: float  # E_q[-log p(x|z)], nats per example (sum over data dims)
    collapsed: bool  # (almost) no active units or (almost) no information about x


def verdict_information(kl_total: float, mutual_info: float, mutual_info_sd: float, *,
                        max_sd: float) -> float:
    """The information measure the collapse verdict trusts, nats.

    ``KL_total = E_x KL(q(z|x) || p(z)) >= I(x; z)`` holds exactly and the KL is deterministic
    given the encoder, so a total KL below the threshold is collapse whatever the estimate says.
    The MI estimate tightens this only when its standard error is at most ``max_sd``.
    """
    if mutual_info_sd <= max_sd:
        return min(kl_total, mutual_info)
    return kl_total


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
    mi_repeats: int = 10,
    mi_max_sd: float = 0.01,
    seed: int = 0,
) -> Diagnostics:
    """Compute the collapse diagnostics from the encoder's outputs on the validation split.

    The verdict uses only quantities whose noise is below their threshold: ``collapsed`` when
    fewer than ``min_active_units`` units are active (deterministic given the encoder) or when
    :func:`verdict_information` (the total KL, or the MI estimate when its standard error is at
    most ``mi_max_sd``) is below ``min_mutual_info``.
    """
    n_active, variances = active_units(mu, active_threshold)
    kl_dims = gaussian_kl(mu, logvar).mean(axis=0)
    kl_total = float(kl_dims.sum())
    reps = mutual_information_replicates(mu, logvar, batch_size=mi_batch_size, seed=seed,
                                         repeats=mi_repeats)
    mi = float(np.mean(reps))
    mi_sd = float(np.std(reps, ddof=1) / np.sqrt(len(reps))) if len(reps) > 1 else math.inf
    info = verdict_information(kl_total, mi, mi_sd, max_sd=mi_max_sd)
    return Diagnostics(
        active_units=n_active,
        unit_variances=[float(v) for v in variances],
        kl_per_dim=[float(k) for k in kl_dims],
        kl_total=kl_total,
        collapsed_dims=int(np.sum(kl_dims < kl_threshold)),
        mutual_info=mi,
        mutual_info_sd=mi_sd,
        information=info,
        recon=float(recon),
        collapsed=bool(n_active < min_active_units or info < min_mutual_info),
    )
