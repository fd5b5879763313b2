from __future__ import annotations

import math

import numpy as np
import pytest

from vae_search.trial import metrics
from vae_search.trial.metrics import (
    LOG_2PI,
    active_units,
    bernoulli_log_likelihood,
    diagnose,
    gaussian_kl,
    gaussian_log_likelihood,
    mutual_information,
    mutual_information_replicates,
    negative_elbo,
    verdict_information,
)


def test_gaussian_kl_closed_form():
    mu = np.array([[0.0, 1.0, -2.0]])
    logvar = np.array([[0.0, 0.0, math.log(4.0)]])
    expected = [0.0, 0.5, 0.5 * (4 + 4 - math.log(4) - 1)]
    np.testing.assert_allclose(gaussian_kl(mu, logvar)[0], expected)


def test_bernoulli_log_likelihood_matches_definition():
    x = np.array([[1.0, 0.0, 1.0]])
    logits = np.array([[0.3, -1.2, 4.0]])
    p = 1 / (1 + np.exp(-logits))
    expected = x * np.log(p) + (1 - x) * np.log(1 - p)
    np.testing.assert_allclose(bernoulli_log_likelihood(x, logits), expected, rtol=1e-12)


def test_gaussian_log_likelihood_includes_constant():
    x = np.zeros((1, 4))
    assert gaussian_log_likelihood(x, x, np.zeros((1, 4))).sum() == pytest.approx(-2 * LOG_2PI)


def test_negative_elbo_sums_over_dims():
    log_px = np.full((2, 5), -0.1)
    kl = np.full((2, 3), 0.2)
    np.testing.assert_allclose(negative_elbo(log_px, kl), [0.5 + 0.6, 0.5 + 0.6])


def test_constant_encoder_has_no_active_units_and_no_information():
    mu = np.zeros((512, 6))
    logvar = np.zeros((512, 6))
    n, variances = active_units(mu)
    assert n == 0 and np.all(variances == 0)
    assert abs(mutual_information(mu, logvar, batch_size=256)) < 0.05
    diag = diagnose(mu, logvar, recon=10.0, mi_batch_size=256)
    assert diag.collapsed and diag.active_units == 0 and diag.collapsed_dims == 6
    assert diag.kl_total == pytest.approx(0.0)


def test_informative_encoder_is_active_and_bounded_by_log_b():
    rng = np.random.default_rng(0)
    mu = np.zeros((512, 4))
    mu[:, :2] = rng.standard_normal((512, 2)) * 3  # two informative units
    logvar = np.full((512, 4), math.log(0.01))
    logvar[:, 2:] = 0.0
    n, _ = active_units(mu)
    assert n == 2
    mi = mutual_information(mu, logvar, batch_size=256)
    assert 2.0 < mi <= math.log(256) + 1e-9
    assert not diagnose(mu, logvar, recon=1.0).collapsed


def test_collapsed_posteriors_give_zero_information_without_noise():
    # q(z|x) = N(0, I) for every x, D = 16: the closed-form-entropy estimator spread +-0.3 nats
    # here (sd ~ sqrt(D / 2B)); with common random numbers every term is exactly 0.
    mu, logvar = np.zeros((359, 16)), np.zeros((359, 16))
    for seed in range(20):
        reps = mutual_information_replicates(mu, logvar, batch_size=256, seed=seed, repeats=10)
        assert np.all(np.abs(reps) < 1e-9)


def test_replicates_spread_matches_the_reported_standard_error():
    rng = np.random.default_rng(1)
    mu = rng.standard_normal((400, 3)) * 0.5
    logvar = np.full((400, 3), math.log(0.5))
    means = [mutual_information(mu, logvar, batch_size=64, seed=s, repeats=10) for s in range(40)]
    diag = diagnose(mu, logvar, recon=0.0, mi_batch_size=64, mi_repeats=10, seed=0)
    assert diag.mutual_info_sd == pytest.approx(np.std(means, ddof=1), rel=0.5)


@pytest.mark.parametrize("seed", range(10))
def test_constant_encoder_is_always_collapsed(seed):
    mu, logvar = np.zeros((300, 8)), np.zeros((300, 8))
    diag = diagnose(mu, logvar, recon=5.0, mi_batch_size=64, seed=seed)
    assert diag.collapsed
    assert diag.active_units == 0 and diag.kl_total == 0.0
    assert abs(diag.mutual_info) < 1e-9 and diag.mutual_info_sd < 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_several_clearly_active_units_are_never_collapsed(seed):
    rng = np.random.default_rng(seed)
    mu = np.zeros((300, 8))
    mu[:, :4] = rng.standard_normal((300, 4))  # Var_x(mu_u) ~ 1: far above 0.01
    logvar = np.zeros((300, 8))
    logvar[:, :4] = math.log(0.1)
    diag = diagnose(mu, logvar, recon=5.0, mi_batch_size=64, seed=seed)
    assert diag.active_units == 4 and not diag.collapsed
    assert diag.mutual_info > 1.0


def test_verdict_trusts_the_mi_estimate_only_when_its_noise_is_small():
    # the total KL bounds I(x;z) from above and is exact: below the threshold is collapse
    assert verdict_information(0.02, 0.5, 0.001, max_sd=0.01) == 0.02
    # a precise MI below the KL tightens it; a noisy one is ignored
    assert verdict_information(0.3, 0.01, 0.001, max_sd=0.01) == 0.01
    assert verdict_information(0.3, -0.04, 0.1, max_sd=0.01) == 0.3


def test_noisy_mi_estimate_cannot_flag_an_informative_model():
    # 5 active units, KL 0.10: the case a single noisy estimate of -0.04 once flagged collapsed
    rng = np.random.default_rng(0)
    mu = np.zeros((359, 16))
    mu[:, :5] = rng.standard_normal((359, 5)) * 0.2  # Var_x(mu_u) ~ 0.04 > 0.01
    logvar = np.zeros((359, 16))
    diag = diagnose(mu, logvar, recon=5.0, min_mutual_info=0.05, mi_max_sd=0.0, seed=0)
    assert diag.active_units == 5 and diag.kl_total > 0.05
    assert diag.information == diag.kl_total and not diag.collapsed


def test_mutual_information_matches_the_direct_sum_over_pairs():
    """The matrix-product form equals ``mean_i [log q(z_i|x_i) - log (1/B) sum_j q(z_i|x_j)]``
    written out over every pair (one batch, one replicate: no permutation, one noise draw)."""
    rng = np.random.default_rng(3)
    n, d = 64, 5
    mu, logvar = rng.normal(size=(n, d)), rng.normal(scale=0.5, size=(n, d)) - 1.0
    z = mu + np.exp(0.5 * logvar) * np.random.default_rng(11).standard_normal((n, d))
    # log N(z_i; mu_j, diag exp(logvar_j)) for every (i, j), by broadcasting
    log_q = -0.5 * np.sum((z[:, None, :] - mu[None]) ** 2 / np.exp(logvar[None])
                          + logvar[None] + LOG_2PI, axis=2)
    direct = np.mean(np.diag(log_q) - (np.logaddexp.reduce(log_q, axis=1) - np.log(n)))
    estimate = mutual_information_replicates(mu, logvar, batch_size=n, seed=11, repeats=1)
    np.testing.assert_allclose(estimate, [direct], rtol=1e-10)


def test_the_estimators_products_run_on_one_blas_thread():
    """A threaded BLAS on two busy cores took 10.7 ms for a product that takes 0.1 ms on one."""
    from threadpoolctl import ThreadpoolController

    with metrics._one_blas_thread():
        blas = [lib for lib in ThreadpoolController().info() if lib["user_api"] == "blas"]
        assert blas and all(lib["num_threads"] == 1 for lib in blas)
