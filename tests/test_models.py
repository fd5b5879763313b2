"""The VAE, its likelihoods and the compiled trainer, against NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_search._tf import keras, tf
from vae_search.models import (
    VAE,
    Trainer,
    TrainerSpec,
    build_vae,
    clear_trainers,
    get_trainer,
    kl_divergence,
)
from vae_search.models.adam import FusedAdam
from vae_search.trial.metrics import bernoulli_log_likelihood, gaussian_kl, gaussian_log_likelihood

RNG = np.random.default_rng(0)
X = (RNG.random((300, 16)) < 0.3).astype("float32")


def spec(**kw) -> TrainerSpec:
    base = dict(decoder="dense", data_shape=(16,), hidden=(24,), latent_dim=3,
                likelihood="bernoulli", batch_size=50, learning_rate=1e-3)
    base.update(kw)
    return TrainerSpec(**base)


def make_vae(likelihood="bernoulli", reduction="sum", seed=1, variance="learned") -> VAE:
    keras.utils.set_random_seed(seed)
    vae = build_vae(spec(likelihood=likelihood, variance=variance), seed=seed)
    vae.set_reduction(reduction)
    return vae


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_terms_match_numpy_reference(likelihood):
    vae = make_vae(likelihood)
    x = X[:40]
    mu, logvar = (np.asarray(t) for t in vae.encoder(x))
    np.testing.assert_allclose(
        np.asarray(kl_divergence(mu, logvar)), gaussian_kl(mu, logvar), rtol=1e-5, atol=1e-6
    )
    decoded = np.asarray(vae.decoder(mu))
    got = np.asarray(vae.likelihood.log_prob(x, decoded))
    if likelihood == "bernoulli":
        ref = bernoulli_log_likelihood(x.astype(np.float64), decoded.astype(np.float64))
    else:
        vae.likelihood.log_var.assign(np.full(16, -0.7, dtype="float32"))
        got = np.asarray(vae.likelihood.log_prob(x, decoded))
        ref = gaussian_log_likelihood(x, decoded, np.full((40, 16), -0.7))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_reductions_differ_by_exactly_n_on_reconstruction():
    x = X[:40]
    out = {}
    for reduction in ("sum", "mean"):
        vae = make_vae(reduction=reduction, seed=3)
        vae.sampling.seed_generator.state.assign(np.array([5, 0], dtype="int64"))
        recon, kl = vae.terms(x, training=False)
        loss, recon_term, kl_mean = (float(t) for t in vae.training_loss(recon, kl))
        out[reduction] = (recon_term, float(np.mean(recon)), kl_mean)
    assert out["sum"][0] == pytest.approx(16 * out["mean"][0], rel=1e-5)
    assert out["sum"][0] == pytest.approx(out["sum"][1], rel=1e-6)  # sum: the ELBO's term
    assert out["mean"][1] == pytest.approx(out["sum"][1], rel=1e-5)  # the judged term agrees
    assert out["mean"][2] == pytest.approx(out["sum"][2], rel=1e-5)  # KL always summed


def test_evaluate_is_minus_elbo_at_beta_one_sum_reduction():
    trainer = Trainer(spec())
    trainer.reset(0, reduction="mean")
    trainer.set_beta(0.0)  # the training beta must not leak into the judged ELBO
    xt = tf.constant(X)
    r = trainer.evaluate(xt, seed=4)
    assert r.neg_elbo == pytest.approx(r.recon + r.kl, rel=1e-5)
    # same numbers from the numpy reference with the same noise draw
    trainer.eval_seed.state.assign(np.array([4, 1], dtype="int64"))
    mu, logvar = (np.asarray(t) for t in trainer.vae.encoder(X))
    eps = np.asarray(keras.random.normal(mu.shape, seed=trainer.eval_seed))
    z = mu + np.exp(0.5 * logvar) * eps
    logits = np.asarray(trainer.vae.decoder(z)).astype(np.float64)
    ref_recon = -bernoulli_log_likelihood(X.astype(np.float64), logits).sum(1).mean()
    ref_kl = gaussian_kl(mu, logvar).sum(1).mean()
    assert r.recon == pytest.approx(ref_recon, rel=1e-4)
    assert r.kl == pytest.approx(ref_kl, rel=1e-4)


def test_beta_changes_inside_compiled_epoch_without_retracing():
    trainer = Trainer(spec())
    xt = tf.constant(X)
    results = {}
    for beta in (0.0, 1.0):
        trainer.reset(7)
        trainer.set_beta(beta)
        results[beta] = trainer.train_epoch(xt)
    assert trainer._train_epoch.experimental_get_tracing_count() == 1
    loss0, recon0, kl0 = results[0.0]
    loss1, recon1, kl1 = results[1.0]
    assert loss0 == pytest.approx(recon0, rel=1e-6)  # beta 0: the KL is not in the loss
    assert loss1 == pytest.approx(recon1 + kl1, rel=1e-5)
    assert kl1 < kl0  # with the KL weighted the encoder is pulled toward the prior


def test_reset_reproduces_a_trial_exactly():
    trainer = Trainer(spec())
    xt = tf.constant(X)

    def run(seed):
        trainer.reset(seed)
        out = []
        for epoch in range(3):
            trainer.set_beta(epoch / 2)
            out.append(trainer.train_epoch(xt))
        return out, trainer.evaluate(xt)

    a, b, c = run(11), run(11), run(12)
    assert a == b
    assert a != c


def test_fresh_trainer_and_reset_trainer_agree():
    xt = tf.constant(X)
    clear_trainers()
    first = get_trainer(spec())
    first.reset(3)
    used = [first.train_epoch(xt) for _ in range(2)]
    again = get_trainer(spec())
    assert again is first  # cached per architecture
    again.reset(3)
    assert [again.train_epoch(xt) for _ in range(2)] == used
    clear_trainers()


def test_dynamic_binarization_resamples_inputs():
    trainer = Trainer(spec(dynamic_binarization=True))
    probs = tf.constant(np.full((300, 16), 0.5, dtype="float32"))
    trainer.reset(1)
    loss, recon, _ = trainer.train_epoch(probs)
    # a Bernoulli(0.5) target costs at least log 2 per dim on average
    assert recon > 16 * np.log(2) * 0.9


def test_model_fit_recipe_runs():
    vae = make_vae()
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = vae.fit(X, epochs=1, batch_size=50, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    logs = vae.evaluate(X, batch_size=100, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(logs["recon"] + logs["kl"], rel=1e-4)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_fused_adam_steps_as_keras_adam(compiled):
    """FusedAdam is Keras' Adam through one kernel: the same weights after a few steps, eager
    and inside an XLA cluster (the GRU step's), and the same optimizer variables to reset."""
    def trained(optimizer):
        vae = make_vae(likelihood="gaussian")
        vae.compile(optimizer=optimizer)

        def step(x):
            return vae.train_batch(x)

        fn = tf.function(step, jit_compile=True) if compiled else step
        for i in range(5):
            fn(tf.constant(X[i * 50:(i + 1) * 50]))
        return vae, optimizer

    ours, fused = trained(FusedAdam(1e-2))
    theirs, adam = trained(keras.optimizers.Adam(1e-2))
    assert int(fused.iterations.numpy()) == int(adam.iterations.numpy()) == 5
    moved = 0
    for a, b, init in zip(ours.trainable_weights, theirs.trainable_weights,
                          make_vae(likelihood="gaussian").trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
        moved += not np.allclose(a.numpy(), init.numpy())
    assert moved == len(ours.trainable_weights)  # every weight stepped
    # two moments per weight, besides the counters Keras keeps
    assert len(fused.variables) == len(adam.variables)


def test_fused_adam_keeps_keras_update_for_an_embedding():
    """A row gathered twice (IndexedSlices): FusedAdam steps it by Keras' own rule, which is
    not Adam on the summed gradient (the GRU studies trained better with Keras' rule)."""
    def stepped(optimizer, densify=False):
        emb = keras.Variable(np.ones((4, 3), "float32"))
        optimizer.build([emb])
        for step in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(emb, [0, 0, 1]) * [[1.0, 2, 3]] * (step + 1))
            grads = tape.gradient(loss, [emb])
            assert isinstance(grads[0], tf.IndexedSlices)
            optimizer.apply([tf.convert_to_tensor(grads[0])] if densify else grads, [emb])
        return emb.numpy()

    ours = stepped(FusedAdam(0.1))
    np.testing.assert_allclose(ours, stepped(keras.optimizers.Adam(0.1)), rtol=1e-6)
    assert ours[2:].tolist() == np.ones((2, 3)).tolist()  # rows never gathered stay put
    # on the dense gradient (the fused kernel) the repeated row steps less far
    dense = stepped(FusedAdam(0.1), densify=True)
    np.testing.assert_allclose(dense, stepped(keras.optimizers.Adam(0.1), densify=True),
                               rtol=1e-5)
    assert ours[0, 0] < dense[0, 0] - 0.05


def test_fused_epoch_equals_the_separate_calls():
    trainer = Trainer(spec())
    xt, xv = tf.constant(X[:240]), tf.constant(X[240:])
    trainer.reset(5)
    trainer.set_beta(0.3)
    loss, recon, kl = trainer.train_epoch(xt)
    ev = trainer.evaluate(xv, seed=2)
    mu, _ = trainer.encode(xv)
    trainer.reset(5)
    fused = trainer.run_epoch(xt, xv, beta=0.3, eval_seed=2, active_threshold=0.01)
    assert (fused.train_loss, fused.train_recon, fused.train_kl) == (loss, recon, kl)
    # the same draw and maths; only the graphs' float reduction order may differ
    assert (fused.neg_elbo, fused.recon, fused.kl) == pytest.approx(
        (ev.neg_elbo, ev.recon, ev.kl), rel=1e-6)
    assert fused.active_units == int(np.sum(np.var(mu, axis=0) > 0.01))
    assert trainer.vae.beta.numpy() == pytest.approx(0.3)


def test_reset_draws_what_the_seeded_initializer_draws():
    trainer = Trainer(spec())
    trainer.reset(42)
    kernels = {id(layer.kernel): layer for layer in
               [*trainer.vae.encoder.layers, *trainer.vae.decoder.layers]
               if isinstance(layer, keras.layers.Dense)}
    checked = 0
    seeded = [w.variable for w in trainer.reseeder.weights if w.seeded]
    for i, var in enumerate(seeded):
        layer = kernels.get(id(var))
        if layer is None:
            continue
        init = layer.kernel_initializer
        expected = init.__class__.from_config({**init.get_config(), "seed": 42 * 1009 + i})
        np.testing.assert_array_equal(var.numpy(), np.asarray(expected(var.shape)))
        checked += 1
    assert checked == len(kernels) == len(seeded) == 5  # encoder, then decoder, kernels
    assert [layer.name for layer in kernels.values()] == [
        "enc_0", "z_mean", "z_log_var", "dec_0", "x_out"]


def test_fixed_variance_sum_loss_is_the_recipes_sum_of_squares_plus_a_constant():
    """sigma^2 = 0.5, ``sum``: -log p(x|z) = sum((x - x_hat)^2) + N/2 log(2 pi sigma^2)."""
    vae = make_vae("gaussian", variance="fixed", seed=4)
    vae.likelihood.set_sigma2(0.5)
    x = RNG.random((40, 16)).astype("float32")
    vae.sampling.seed_generator.state.assign(np.array([9, 0], dtype="int64"))
    recon, kl = vae.terms(x, training=False)
    # the same noise draw, by hand, in NumPy
    vae.sampling.seed_generator.state.assign(np.array([9, 0], dtype="int64"))
    mu, logvar = (np.asarray(t, dtype=np.float64) for t in vae.encoder(x))
    eps = np.asarray(keras.random.normal(mu.shape, seed=vae.sampling.seed_generator))
    x_hat = np.asarray(vae.decoder(mu + np.exp(0.5 * logvar) * eps), dtype=np.float64)
    squares = np.sum((x - x_hat) ** 2, axis=1)
    constant = 16 * 0.5 * math.log(2 * math.pi * 0.5)
    np.testing.assert_allclose(np.asarray(recon), squares + constant, rtol=1e-5)
    recipe = np.mean(squares + gaussian_kl(mu, logvar).sum(1))
    vae.beta.assign(1.0)
    loss, _, _ = vae.training_loss(recon, kl)
    assert float(loss) == pytest.approx(recipe + constant, rel=1e-5)


def test_settings_change_without_retracing():
    trainer = Trainer(spec(likelihood="gaussian", variance="fixed"))
    xt = tf.constant(RNG.random((300, 16)).astype("float32"))
    seen = set()
    for reduction, free_bits, sigma2 in (("sum", 0.0, 0.5), ("mean", 0.5, 0.1), ("sum", 2.0, 1.0)):
        trainer.reset(3, reduction=reduction, free_bits=free_bits, sigma2=sigma2)
        trainer.set_beta(1.0)
        seen.add(trainer.train_epoch(xt))
    assert len(seen) == 3  # the settings change the numbers ...
    assert trainer._train_epoch.experimental_get_tracing_count() == 1  # ... not the graph


def test_free_bits_floor_each_latent_dims_minibatch_kl():
    vae = make_vae(seed=5)
    recon, kl = vae.terms(X[:50], training=True)
    vae.beta.assign(1.0)
    kl_dims = np.asarray(kl).mean(axis=0)
    for lam in (0.0, float(np.median(kl_dims)), 10.0):
        vae.free_bits.assign(lam)
        loss, recon_term, kl_mean = (float(t) for t in vae.training_loss(recon, kl))
        expected = float(np.mean(recon)) + float(np.maximum(lam, kl_dims).sum())
        assert loss == pytest.approx(expected, rel=1e-5)
        assert kl_mean == pytest.approx(float(kl_dims.sum()), rel=1e-5)  # reported KL is plain
    # above every dim's KL the floor is constant: the KL term pushes nothing
    vae.free_bits.assign(10.0)
    with tf.GradientTape() as tape:
        recon, kl = vae.terms(X[:50], training=True)
        _, _, _ = vae.training_loss(recon, kl)
        kl_only = vae.training_loss(recon * 0.0, kl)[0]
    grads = tape.gradient(kl_only, vae.encoder.trainable_weights)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in grads)


def test_a_trial_configures_its_trainer_once(monkeypatch):
    from tests.conftest import tiny_config
    from vae_search.trial.objective import Objective
    from vae_search.trial.space import TrialParams

    calls: list[dict] = []
    configure = Trainer.configure

    def counted(self, **settings):
        calls.append(settings)
        configure(self, **settings)

    monkeypatch.setattr(Trainer, "configure", counted)
    objective = Objective(tiny_config())
    trainer = objective.start(TrialParams(klstart=0, annealtime=1, latent_dim=2,
                                          reduction="mean", free_bits=0.5), seed=1)
    assert [c["reduction"] for c in calls] == ["mean"] and calls[0]["free_bits"] == 0.5
    trainer.reset(2)  # the next user of the cached trainer: the defaults, not the last trial's
    assert float(trainer.vae.recon_scale) == 1.0 and float(trainer.vae.free_bits) == 0.0
