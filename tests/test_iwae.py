"""The IWAE bound (Burda et al. 2016): exact on probabilistic PCA, >= the ELBO on every trial."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import tiny_config
from vae_search import keys
from vae_search.engine.study import open_study
from vae_search.models import TrainerSpec, get_trainer
from vae_search.trial.objective import Objective

N, D, SIGMA2, ROWS = 8, 2, 0.25, 500


def ppca(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Data from a PPCA model with correlated loadings; its exact ``log p(x)`` per row."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, D))
    w[:, 1] = 0.8 * w[:, 0] + 0.6 * w[:, 1]  # the exact posterior is far from factorized
    b = rng.standard_normal(N)
    x = rng.standard_normal((ROWS, D)) @ w.T + b + np.sqrt(SIGMA2) * rng.standard_normal((ROWS, N))
    cov = w @ w.T + SIGMA2 * np.eye(N)  # p(x) = N(b, W W^T + sigma^2 I)
    dev = x - b
    log_px = -0.5 * (N * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                     + np.einsum("ij,jk,ik->i", dev, np.linalg.inv(cov), dev))
    return x.astype("float32"), w, b, log_px


@pytest.fixture(scope="module")
def ppca_trainer():
    """A linear-Gaussian VAE set to PPCA: the dense family with no hidden layer, the exact
    posterior mean as encoder, and its marginal variances (a mean-field posterior)."""
    x, w, b, log_px = ppca()
    spec = TrainerSpec(decoder="dense", data_shape=(N,), latent_dim=D, likelihood="gaussian",
                       hidden=(), variance="fixed")
    trainer = get_trainer(spec)
    trainer.reset(0, sigma2=SIGMA2)
    m = w.T @ w + SIGMA2 * np.eye(D)
    a = np.linalg.solve(m, w.T)  # E[z|x] = M^-1 W^T (x - b)
    post_var = np.diag(SIGMA2 * np.linalg.inv(m))
    trainer.vae.encoder.get_layer("z_mean").set_weights([a.T, -a @ b])
    trainer.vae.encoder.get_layer("z_log_var").set_weights([np.zeros((N, D)), np.log(post_var)])
    trainer.vae.decoder.get_layer("x_out").set_weights([w.T, b])
    return trainer, x, log_px


def test_iwae_approaches_the_exact_ppca_likelihood(ppca_trainer):
    trainer, x, log_px = ppca_trainer
    gaps = {}
    for k in (1, 10, 100, 1000):
        bound = trainer.iwae(x, k, seed=0).astype("float64")
        assert bound.shape == (ROWS,)
        diff = log_px - bound  # >= 0 in expectation, per example
        se = diff.std(ddof=1) / np.sqrt(ROWS)
        gaps[k] = diff.mean()
        assert gaps[k] > -3 * se - 1e-3, f"IWAE_{k} exceeds log p(x) beyond Monte Carlo error"
    assert gaps[1] > gaps[10] > gaps[100] and gaps[1] > 1.0  # a loose ELBO, tightening
    assert abs(gaps[100]) < 0.05 and abs(gaps[1000]) < 0.02
    # IWAE_1 is the ELBO: the same quantity as the trainer's evaluation, up to MC error
    elbo = -trainer.evaluate(x, seed=3).neg_elbo
    one = trainer.iwae(x, 1, seed=3)
    assert elbo == pytest.approx(one.mean(), abs=4 * one.std() / np.sqrt(ROWS))


def test_iwae_uses_a_fixed_seed(ppca_trainer):
    trainer, x, _ = ppca_trainer
    first = trainer.iwae(x, 50, seed=7)
    np.testing.assert_array_equal(first, trainer.iwae(x, 50, seed=7))
    assert not np.array_equal(first, trainer.iwae(x, 50, seed=8))
    with pytest.raises(ValueError, match="k must be"):
        trainer.iwae(x, 0)


@pytest.mark.parametrize("family", ["made", "gru"])
def test_autoregressive_families_bound_above_their_elbo(family):
    rng = np.random.default_rng(0)
    if family == "gru":
        spec = TrainerSpec(decoder="gru", data_shape=(6,), latent_dim=2,
                           likelihood="categorical", hidden=(8,), vocab_size=5, embedding_dim=4)
        x = rng.integers(0, 5, size=(200, 6)).astype("int32")
    else:
        spec = TrainerSpec(decoder="made", data_shape=(10,), latent_dim=2,
                           likelihood="bernoulli", hidden=(16,))
        x = (rng.random((200, 10)) < 0.3).astype("float32")
    trainer = get_trainer(spec)
    trainer.reset(1)
    one, many = trainer.iwae(x, 1, seed=0), trainer.iwae(x, 200, seed=0)
    se = one.std() / np.sqrt(len(x))
    elbo = -trainer.evaluate(x, seed=0).neg_elbo
    assert elbo == pytest.approx(one.mean(), abs=4 * se)
    assert many.mean() > one.mean() - 3 * se


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'iwae.db'}"
    config = tiny_config(collapse={"iwae_samples": 50})
    study = open_study(config, url, study_name="iwae")
    for params in ([dict(klstart=0, annealtime=0, latent_dim=4, reduction="sum")] * 3
                   + [dict(klstart=0, annealtime=0, latent_dim=2, reduction="mean"),
                      dict(klstart=2, annealtime=3, latent_dim=4, reduction="sum")]):
        study.enqueue_trial(params)
    study.optimize(Objective(config), n_trials=5)
    return optuna.load_study(study_name="iwae", storage=url)


def test_iwae_is_at_least_the_elbo_on_every_complete_trial(small_study):
    trials = [t for t in small_study.trials
              if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(trials) == 5 and any(t.state == TrialState.PRUNED for t in trials)
    # only a complete trial is read for its bound: a pruned one does not pay for it
    assert all(keys.ATTR_IWAE not in t.user_attrs for t in trials
               if t.state == TrialState.PRUNED)
    for t in trials:
        if t.state == TrialState.PRUNED:
            continue
        elbo = t.value
        iwae = t.user_attrs[keys.ATTR_IWAE]
        # the stored ELBO is one draw per example (~360 examples): MC error ~0.1 nats here
        assert iwae >= elbo - 0.3, (t.number, iwae, elbo)
        assert iwae < 0
        # the ELBO on the bound's own draws never sits above it, and estimates the same ELBO
        assert t.user_attrs[keys.ATTR_ELBO_K] <= iwae
        assert t.user_attrs[keys.ATTR_ELBO_K] == pytest.approx(elbo, abs=0.3)


def test_the_elbo_on_the_bounds_own_draws_is_below_it_row_by_row():
    """IWAE_k >= ELBO_k exactly on the same k draws (Jensen), whatever the Monte Carlo noise;
    and ELBO_k is the mean of the k one-draw ELBOs (IWAE_1 on each draw)."""
    spec = TrainerSpec(decoder="dense", data_shape=(10,), latent_dim=3,
                       likelihood="bernoulli", hidden=(16,))
    x = (np.random.default_rng(0).random((300, 10)) < 0.3).astype("float32")
    trainer = get_trainer(spec)
    trainer.reset(2)
    iwae, elbo = trainer.bounds(x, 20, seed=5)
    assert iwae.shape == elbo.shape == (300,)
    assert np.all(iwae >= elbo - 1e-5)
    np.testing.assert_array_equal(iwae, trainer.iwae(x, 20, seed=5))
    one, same = trainer.bounds(x, 1, seed=5)
    np.testing.assert_allclose(one, same, atol=1e-5)  # k = 1: the two are the same draw
