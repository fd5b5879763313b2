from __future__ import annotations

import math

import numpy as np
import pytest

from vae_search.metrics import (
    LOG_2PI,
    active_units,
    bernoulli_log_likelihood,
    diagnose,
    gaussian_kl,
    gaussian_log_likelihood,
    mutual_information,
    negative_elbo,
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
