"""Theory's reference for a fixed-variance Gaussian: probabilistic PCA (Lucas et al. 2019).

The closed form is checked against a dense multivariate normal, reproduces the numbers the
design quotes on seed_mse's own split, and is what a linear VAE trained through the builder
contract reaches.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import REPO, tiny_config
from vae_search.config.schema import load_config
from vae_search.data.datasets import load_dataset
from vae_search.trial.reference import (
    find_reference,
    from_attr,
    ppca_reference,
    spectrum,
    study_references,
    to_attr,
)


@pytest.fixture(scope="module")
def seed_mse():
    """seed_mse's configuration and its seeded split, loaded as the objective loads them."""
    config = load_config("seed_mse")
    return config, load_dataset(config)


def dense_log_density(x, mean, cov):
    """``log N(x; mean, cov)`` per row, with a full covariance (the textbook formula)."""
    d = x - mean
    _, logdet = np.linalg.slogdet(cov)
    quad = np.einsum("ij,ij->i", d, np.linalg.solve(cov, d.T).T)
    return -0.5 * (x.shape[1] * math.log(2 * math.pi) + logdet + quad)


def test_the_eigenbasis_closed_form_is_the_ppca_gaussian():
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((400, 6)) @ np.diag([2.0, 1.5, 1.0, 0.6, 0.3, 0.2])
    x_val = rng.standard_normal((50, 6))
    s = spectrum(x_train)
    sigma2 = 0.5
    k = s.active(sigma2)
    assert k == 3  # variances 4, 2.25, 1 (as sampled) above 0.5; 0.36, 0.09, 0.04 below
    u, lam = s.eigenvectors[:, :k], s.eigenvalues[:k]
    cov = sigma2 * np.eye(6) + u @ np.diag(lam - sigma2) @ u.T
    np.testing.assert_allclose(s.log_likelihood(x_val, sigma2, k),
                               dense_log_density(x_val, s.mean, cov), atol=1e-9)
    np.testing.assert_allclose(s.log_likelihood(x_val, sigma2, 0),
                               dense_log_density(x_val, s.mean, sigma2 * np.eye(6)), atol=1e-9)
    # the covariance is the maximum-likelihood one (divided by n), as pPCA's optimum is stated
    np.testing.assert_allclose(np.sort(s.eigenvalues),
                               np.linalg.eigvalsh(np.cov(x_train, rowvar=False, ddof=0)),
                               atol=1e-12)
    assert ppca_reference(x_train, x_val, sigma2, latent_dim=2).active == 2  # capped


def test_seed_mse_reference_matches_the_design(seed_mse):
    config, data = seed_mse
    assert data.x_train.shape == (1438, 64) and data.x_val.shape == (359, 64)
    s = spectrum(data.x_train)
    np.testing.assert_allclose(s.eigenvalues[:4], [0.701, 0.643, 0.559, 0.398], atol=0.001)
    at_half = ppca_reference(data.x_train, data.x_val, 0.5, fitted=s)
    assert at_half.active == 3
    assert at_half.log_likelihood == pytest.approx(-41.24, abs=0.005)  # measured -41.2415
    assert at_half.collapsed == pytest.approx(-41.28, abs=0.005)  # measured -41.2822
    at_tenth = ppca_reference(data.x_train, data.x_val, 0.1, fitted=s)
    assert at_tenth.active == 12
    assert at_tenth.log_likelihood == pytest.approx(-1.65, abs=0.005)  # measured -1.6531
    assert at_tenth.collapsed == pytest.approx(-8.38, abs=0.005)  # measured -8.3837
    assert at_tenth.collapse_cost == pytest.approx(6.73, abs=0.01)
    # what a study stores: one reference per latent dim of the search (cap: latent 2 keeps 2)
    refs = study_references(config, data.x_train, data.x_val)
    assert [(r.latent_dim, r.active) for r in refs] == [(2, 2), (4, 3), (8, 3), (16, 3)]
    assert from_attr(to_attr(refs)) == refs
    assert find_reference(refs, 0.5, 16) == refs[-1]
    assert find_reference(refs, 0.1, 16) is None and find_reference(refs, None, 16) is None


def test_only_a_fixed_variance_gaussian_has_a_reference():
    x = np.random.default_rng(1).random((80, 4))
    assert study_references(tiny_config(), x, x) == []  # bernoulli
    learned = tiny_config(model={"likelihood": "gaussian", "variance": "learned"})
    assert study_references(learned, x, x) == []
    searched = tiny_config(model={"likelihood": "gaussian", "variance": "fixed"},
                           search={"sigma2": [0.1, 0.5], "latent_dim": [4, 2]})
    refs = study_references(searched, x, x)
    assert [(r.sigma2, r.latent_dim) for r in refs] == [(0.1, 2), (0.1, 4), (0.5, 2), (0.5, 4)]


# sigma^2 = 0.1: 12 of the 16 latent dims must stay active and 4 collapse, and collapsing
# costs 6.7 nats, so the tolerances below leave no room for a collapsed or a half-used code.
LINEAR_SIGMA2 = 0.1
LINEAR_LATENT = 16
# Adam steps down so the weak directions settle (eigenvalues 0.108 and 0.087 sit on either side
# of sigma^2): 500 epochs of 23 batches, ~12 s on one core. Measured with seeds 1 and 2: ELBO
# (200 draws) -1.711 / -1.697, IWAE_100 -1.670 / -1.660, against pPCA's -1.653; 12 active.
LINEAR_PHASES = ((0.01, 80), (0.003, 220), (0.001, 200))
ELBO_DRAWS = 200  # the ELBO averaged over this many posterior draws per example


@pytest.mark.slow
def test_a_linear_vae_reaches_the_ppca_closed_form(seed_mse, monkeypatch):
    """A linear encoder and decoder (``model.builder``) trained at beta = 1 reaches pPCA.

    Its ELBO is measured with many posterior draws: the objective's one fixed draw per
    example moves it by about 0.1 nats here (between seeds of that draw, -1.54 to -1.86 on
    the same model), as much as the tolerance.
    """
    from vae_search._tf import tf
    from vae_search.models import get_trainer, spec_for

    monkeypatch.syspath_prepend(REPO)  # "tests.user_builders" imports from here
    config, data = seed_mse
    config = config.with_overrides(**{
        "model.builder": "tests.user_builders:linear", "model.sigma2": LINEAR_SIGMA2,
        "search.latent_dim": [LINEAR_LATENT], "train.learning_rate": LINEAR_PHASES[0][0],
    })
    ref = ppca_reference(data.x_train, data.x_val, LINEAR_SIGMA2, latent_dim=LINEAR_LATENT)
    assert ref.active == 12
    trainer = get_trainer(spec_for(config, data, LINEAR_LATENT))
    trainer.reset(1, sigma2=LINEAR_SIGMA2)
    x_train, x_val = tf.constant(data.x_train), tf.constant(data.x_val)
    for learning_rate, epochs in LINEAR_PHASES:
        trainer.vae.optimizer.learning_rate.assign(learning_rate)
        for _ in range(epochs):
            result = trainer.run_epoch(x_train, x_val, beta=1.0, eval_seed=config.seed)
    elbo = float(trainer.iwae(np.tile(data.x_val, (ELBO_DRAWS, 1)), 1, seed=config.seed).mean())
    iwae = float(trainer.iwae(data.x_val, config.collapse.iwae_samples, seed=config.seed).mean())
    assert iwae == pytest.approx(ref.log_likelihood, abs=0.05), (iwae, ref)
    assert elbo == pytest.approx(ref.log_likelihood, abs=0.1), (elbo, ref)
    assert result.active_units == ref.active
