from __future__ import annotations

import numpy as np
import pytest

from vae_search._tf import keras, tf
from vae_search.models import TrainerSpec, get_trainer
from vae_search.models.made import MaskedDense, build_made_decoder, made_masks

N, LATENT = 10, 3
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(5, LATENT)).astype("float32")
X = RNG.normal(size=(5, N)).astype("float32")


def outputs(decoder: keras.Model, z: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.asarray(decoder([z, x], training=False))


def changed_outputs(decoder: keras.Model, j: int) -> np.ndarray:
    """Per output dim: does moving ``x_j`` (0-based) change it for any of the examples?"""
    x = X.copy()
    x[:, j] += 3.0
    return np.any(np.abs(outputs(decoder, Z, x) - outputs(decoder, Z, X)) > 1e-5, axis=0)


@pytest.mark.parametrize("context", [None, 0, 1, 3])
def test_made_outputs_see_only_their_context(context):
    keras.utils.set_random_seed(1)
    decoder = build_made_decoder(LATENT, (32, 32), N, context=context, mask_seed=2)
    reach = np.stack([changed_outputs(decoder, j) for j in range(N)])  # reach[j, i]
    for j in range(N):
        assert not reach[j, : j + 1].any(), f"x_{j} leaks into outputs <= {j}"
        if context is not None:
            assert not reach[j, j + context + 1 :].any(), f"x_{j} seen beyond context {context}"
    if context == 0:
        assert not reach.any()
    else:
        # The full model uses every allowed dim (the direct term alone guarantees it) ...
        allowed = np.array([[0 < i - j <= (context or N) for i in range(N)] for j in range(N)])
        np.testing.assert_array_equal(reach, allowed)
        # ... and so do the masked hidden layers on their own, so their masks are not all zero.
        direct = decoder.get_layer("made_direct")
        direct.kernel.assign(np.zeros(direct.kernel.shape, dtype="float32"))
        hidden_reach = np.stack([changed_outputs(decoder, j) for j in range(N)])
        assert hidden_reach.any() and not (hidden_reach & ~allowed).any()
    # z reaches every output through the hidden layers (not only the linear z -> out term),
    # whatever the context: z-only units (empty intervals) feed even the first dim.
    z_out = decoder.get_layer("made_z_out")
    z_out.kernel.assign(np.zeros(z_out.kernel.shape, dtype="float32"))
    moved = outputs(decoder, Z + 1.0, X) - outputs(decoder, Z, X)
    assert np.all(np.abs(moved).max(axis=0) > 1e-5)


def test_masks_follow_the_made_degree_rule_for_unlimited_context():
    masks, direct = made_masks(8, (16,), context=None, seed=0)
    path = (masks[0] @ masks[1]) > 0
    assert not np.any(np.tril(path)) and not np.any(np.tril(direct))
    np.testing.assert_array_equal(direct, np.triu(np.ones((8, 8)), k=1))
    with pytest.raises(ValueError, match="context"):
        made_masks(8, (16,), context=-1)


def test_masks_are_fixed_by_mask_seed():
    a, _ = made_masks(12, (20, 20), context=3, seed=5)
    b, _ = made_masks(12, (20, 20), context=3, seed=5)
    c, _ = made_masks(12, (20, 20), context=3, seed=6)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


def test_masked_dense_mask_is_a_constant_and_initializers_are_attributes():
    mask = np.array([[1, 0], [1, 1]], dtype="float32")
    layer = MaskedDense(mask)
    y = layer(np.ones((1, 2), dtype="float32"))
    kernel = np.asarray(layer.kernel)
    np.testing.assert_allclose(np.asarray(y), np.ones((1, 2)) @ (kernel * mask), rtol=1e-6)
    assert [w.name for w in layer.weights] == ["kernel", "bias"]  # the mask is not a weight
    assert all(w.trainable for w in layer.weights)
    assert isinstance(layer.kernel_initializer, keras.initializers.Initializer)
    assert isinstance(layer.bias_initializer, keras.initializers.Initializer)
    clone = MaskedDense.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.mask, mask)


def test_every_weight_has_its_initializer_attribute():
    decoder = build_made_decoder(LATENT, (16, 16), N, context=2)
    names = []
    for layer in decoder.layers:
        for weight in layer.weights:
            name = weight.name.split("/")[-1]
            init = getattr(layer, f"{name}_initializer")
            assert isinstance(init, keras.initializers.Initializer), (layer.name, name)
            names.append(name)
    assert names.count("kernel") == 7 and names.count("bias") == 3  # 4 masked, 3 from z
    assert decoder.non_trainable_weights == []


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_decode_is_consistent_with_the_conditionals(likelihood):
    trainer = get_trainer(TrainerSpec(decoder="made", data_shape=(N,), latent_dim=LATENT,
                                      likelihood=likelihood, hidden=(32,)))
    trainer.reset(3)
    x = trainer.decode(Z)
    conditionals = outputs(trainer.vae.decoder, Z, x)
    assert x.shape == (len(Z), N)
    # Greedy: every dim is the mode of its conditional given the decoded prefix.
    if likelihood == "bernoulli":
        assert set(np.unique(x)) <= {0.0, 1.0} and len(np.unique(x)) == 2
        np.testing.assert_array_equal(x, (conditionals > 0).astype("float32"))
    else:
        np.testing.assert_allclose(x, conditionals, rtol=1e-5, atol=1e-5)


def bernoulli_nll(decoder: keras.Model, x: np.ndarray) -> float:
    logits = decoder([np.zeros((len(x), LATENT), "float32"), x], training=False)
    return float(
        tf.reduce_mean(tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(x, logits), -1))
    )


def fit_without_z(decoder: keras.Model, x: np.ndarray, *, epochs: int, batch: int = 100) -> None:
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(xb):
        with tf.GradientTape() as tape:
            logits = decoder([tf.zeros((tf.shape(xb)[0], LATENT)), xb], training=True)
            nll = tf.nn.sigmoid_cross_entropy_with_logits(xb, logits)
            loss = tf.reduce_mean(tf.reduce_sum(nll, axis=-1))
        optimizer.apply(tape.gradient(loss, decoder.trainable_weights), decoder.trainable_weights)

    for _ in range(epochs):
        for start in range(0, len(x), batch):
            step(x[start : start + batch])


def test_made_is_a_strong_decoder_on_binarized_digits():
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0 > 0.5).astype("float32")
    np.random.default_rng(0).shuffle(x)
    x_train, x_val = x[:1400], x[1400:]
    # The best any factorized decoder can do with z fixed: the pixels' marginal entropies.
    p = x_train.mean(axis=0).clip(1e-6, 1 - 1e-6)
    factorized_optimum = float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())
    nll = {}
    for context in (None, 0):
        keras.utils.set_random_seed(0)
        decoder = build_made_decoder(LATENT, (128,), 64, context=context)
        fit_without_z(decoder, x_train, epochs=12)
        nll[context] = bernoulli_nll(decoder, x_val)
    assert nll[None] < nll[0] - 3.0
    assert nll[None] < factorized_optimum - 3.0, (nll, factorized_optimum)
