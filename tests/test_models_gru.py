from __future__ import annotations

import numpy as np
import pytest

from vae_search._tf import keras, tf
from vae_search.models import TrainerSpec, get_trainer
from vae_search.models.gru import (
    WordDropout,
    build_gru_decoder,
    build_gru_encoder,
    set_word_dropout,
)

V, L, LATENT = 7, 9, 3
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(4, LATENT)).astype("float32")
X = RNG.integers(0, V, size=(4, L)).astype("int32")
BOS, BLANK = V, V + 1


def small_decoder(**kw) -> keras.Model:
    keras.utils.set_random_seed(kw.pop("init_seed", 1))
    return build_gru_decoder(V, L, LATENT, embedding_dim=5, units=12, **kw)


def logits(decoder: keras.Model, x: np.ndarray, *, training: bool = False) -> np.ndarray:
    return np.asarray(decoder([tf.constant(Z), tf.constant(x)], training=training))


@pytest.mark.parametrize("unroll", [False, True])
def test_logits_at_t_see_only_tokens_before_t(unroll):
    decoder = small_decoder(unroll=unroll)
    base = logits(decoder, X)
    assert base.shape == (len(X), L, V)
    for j in range(L):
        x = X.copy()
        x[:, j] = (x[:, j] + 1) % V
        moved = np.abs(logits(decoder, x) - base).max(axis=(0, 2))  # per position
        np.testing.assert_array_equal(moved[: j + 1], 0.0, err_msg=f"x_{j} leaks into <= {j}")
        if j < L - 1:
            assert moved[j + 1] > 1e-4, f"position {j + 1} ignores x_{j}"
    # z matters at every position, the first included.
    assert np.all(
        np.abs(np.asarray(decoder([tf.constant(Z + 1), tf.constant(X)])) - base).max(axis=(0, 2))
        > 1e-4
    )


def test_unroll_keeps_the_math():
    rolled, unrolled = small_decoder(), small_decoder(unroll=True, init_seed=2)
    unrolled.set_weights(rolled.get_weights())
    np.testing.assert_allclose(logits(unrolled, X), logits(rolled, X), rtol=1e-5, atol=1e-5)


def decoder_inputs(decoder: keras.Model, x: np.ndarray, *, training: bool) -> np.ndarray:
    probe = keras.Model(decoder.inputs, decoder.get_layer("decoder_inputs").output)
    return np.asarray(probe([tf.constant(Z[: len(x)]), tf.constant(x)], training=training))


def test_teacher_forcing_shifts_in_bos():
    inputs = decoder_inputs(small_decoder(), X, training=False)
    np.testing.assert_array_equal(inputs[:, 0], BOS)
    np.testing.assert_array_equal(inputs[:, 1:], X[:, :-1])


def test_word_dropout_rate_zero_is_the_identity_and_rate_one_blanks_every_input():
    decoder = small_decoder()
    assert set_word_dropout(decoder, 0.0) == 1
    np.testing.assert_allclose(logits(decoder, X, training=True), logits(decoder, X), atol=1e-6)

    set_word_dropout(decoder, 1.0)
    inputs = decoder_inputs(decoder, X, training=True)
    np.testing.assert_array_equal(inputs[:, 0], BOS)  # the BOS is never dropped
    np.testing.assert_array_equal(inputs[:, 1:], BLANK)
    other = (X + 3) % V
    np.testing.assert_allclose(
        logits(decoder, other, training=True), logits(decoder, X, training=True), atol=1e-6
    )
    # Inference ignores the rate.
    assert np.abs(logits(decoder, other) - logits(decoder, X)).max() > 1e-4


def test_word_dropout_drops_at_the_rate_from_its_seed_generator():
    layer = WordDropout(BLANK, rate=0.3, seed=0)
    assert isinstance(layer.seed_generator, keras.random.SeedGenerator)
    tokens = tf.zeros((200, 50), dtype="int32")
    layer.seed_generator.state.assign(np.array([5, 0], dtype="int64"))
    first = np.asarray(layer(tokens, training=True))
    layer.seed_generator.state.assign(np.array([5, 0], dtype="int64"))
    np.testing.assert_array_equal(np.asarray(layer(tokens, training=True)), first)
    assert set(np.unique(first)) == {0, BLANK}
    assert abs((first == BLANK).mean() - 0.3) < 0.02  # 10,000 draws: sd ~ 0.005
    np.testing.assert_array_equal(np.asarray(layer(tokens)), 0)
    assert not layer.rate.trainable and layer.trainable_weights == []
    with pytest.raises(ValueError, match="rate"):
        WordDropout(BLANK, rate=1.5)


def test_setting_the_rate_needs_no_retrace():
    decoder = small_decoder()
    step = tf.function(lambda z, x: decoder([z, x], training=True))
    z, x, other = tf.constant(Z), tf.constant(X), tf.constant((X + 3) % V)
    set_word_dropout(decoder, 0.0)
    differ_at_0 = np.abs(np.asarray(step(z, x)) - np.asarray(step(z, other))).max()
    set_word_dropout(decoder, 1.0)
    differ_at_1 = np.abs(np.asarray(step(z, x)) - np.asarray(step(z, other))).max()
    assert differ_at_0 > 1e-4 and differ_at_1 < 1e-6  # the new rate took effect ...
    assert step.experimental_get_tracing_count() == 1  # ... in the same graph


def test_set_word_dropout_finds_nested_layers():
    decoder = small_decoder()
    z, x = keras.Input((LATENT,)), keras.Input((L,), dtype="int32")
    outer = keras.Model([z, x], decoder([z, x]))
    assert set_word_dropout(outer, 0.25) == 1
    assert float(decoder.get_layer("word_dropout").rate) == pytest.approx(0.25)

    class Holder(keras.Model):  # a subclassed model, as the generic VAE is
        def __init__(self) -> None:
            super().__init__()
            self.decoder = decoder

    assert set_word_dropout(Holder(), 0.75) == 1
    assert float(decoder.get_layer("word_dropout").rate) == pytest.approx(0.75)
    assert set_word_dropout(build_gru_encoder(V, L, LATENT, units=8), 0.5) == 0
    with pytest.raises(ValueError, match="rate"):
        set_word_dropout(outer, -0.1)


def test_every_weight_has_its_initializer_attribute():
    encoder = build_gru_encoder(V, L, LATENT, embedding_dim=5, units=12)
    z_mean, z_log_var = encoder(tf.constant(X))
    assert z_mean.shape == z_log_var.shape == (len(X), LATENT)
    for model in (encoder, small_decoder()):
        names = []
        for layer in model.layers:
            for weight in layer.weights:
                name = weight.name.split("/")[-1]
                attr = (
                    "recurrent_initializer" if name == "recurrent_kernel" else f"{name}_initializer"
                )
                assert isinstance(getattr(layer, attr), keras.initializers.Initializer), attr
                names.append(name)
        assert {"embeddings", "kernel", "recurrent_kernel", "bias"} <= set(names)


def test_decode_follows_its_own_greedy_choices():
    trainer = get_trainer(TrainerSpec(decoder="gru", data_shape=(L,), latent_dim=LATENT,
                                      likelihood="categorical", vocab_size=V, hidden=(12,),
                                      embedding_dim=5))
    trainer.reset(1)
    x = trainer.decode(Z)
    assert x.shape == (len(Z), L) and x.dtype == np.int32 and x.max() < V
    # Greedy: every token is the mode of its conditional given the decoded prefix.
    np.testing.assert_array_equal(x, logits(trainer.vae.decoder, x).argmax(axis=-1))


def markov_chain(n: int, transitions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    vocab = len(transitions)
    x = np.zeros((n, 20), dtype="int32")
    x[:, 0] = rng.integers(0, vocab, size=n)
    for t in range(1, x.shape[1]):
        cdf = transitions[x[:, t - 1]].cumsum(axis=1)
        x[:, t] = np.minimum((rng.random((n, 1)) > cdf).sum(axis=1), vocab - 1)
    return x


def test_gru_decoder_learns_a_markov_chain_without_z():
    vocab, latent = 8, 2
    rng = np.random.default_rng(0)
    transitions = rng.dirichlet(np.full(vocab, 0.3), size=vocab)
    x_train, x_val = markov_chain(1000, transitions, rng), markov_chain(300, transitions, rng)
    # References: the uniform model (log V) and the best model ignoring the previous token.
    freq = np.bincount(x_train.ravel(), minlength=vocab) / x_train.size
    unigram = float(-(freq * np.log(freq)).sum())

    keras.utils.set_random_seed(0)
    decoder = build_gru_decoder(vocab, 20, latent, embedding_dim=8, units=32)
    optimizer = keras.optimizers.Adam(1e-2)

    def nll(xb, training):
        out = decoder([tf.zeros((tf.shape(xb)[0], latent)), xb], training=training)
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(xb, out, from_logits=True)
        )

    @tf.function
    def step(xb):
        with tf.GradientTape() as tape:
            loss = nll(xb, True)
        optimizer.apply(tape.gradient(loss, decoder.trainable_weights), decoder.trainable_weights)

    for _ in range(4):
        for start in range(0, len(x_train), 100):
            step(x_train[start : start + 100])
    per_token = float(nll(tf.constant(x_val), False))
    assert per_token < unigram - 0.3 < np.log(vocab) - 0.3, (per_token, unigram)


def test_an_xla_step_keeps_the_math_and_the_recurrence_a_loop():
    """train.xla compiles a gru trial's step with XLA: from the same seed and weights, an epoch
    of it agrees with the plain graph's to 1% (XLA draws its own random numbers: the same
    distributions, other draws); the recurrence is built as a loop even where the study
    unrolls it."""
    import dataclasses

    from tests.conftest import tiny_config
    from vae_search.models.build import xla_step
    from vae_search.models.seeding import walk_layers

    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, V, size=(130, L)), dtype="int32")
    plain = TrainerSpec(decoder="gru", data_shape=(L,), latent_dim=LATENT, vocab_size=V,
                        likelihood="categorical", hidden=(12,), embedding_dim=5, unroll=True,
                        batch_size=32)
    results = []
    for spec in (plain, dataclasses.replace(plain, xla=True)):
        trainer = get_trainer(spec)
        grus = [layer for layer in walk_layers(trainer.vae)
                if isinstance(layer, keras.layers.GRU)]
        assert len(grus) == 2 and all(g.unroll is not spec.xla for g in grus)
        trainer.reset(3, word_dropout=0.3)
        results.append(trainer.run_epoch(x, x, beta=0.5))
    assert results[1].neg_elbo == pytest.approx(results[0].neg_elbo, rel=1e-2)
    assert results[1].train_loss == pytest.approx(results[0].train_loss, rel=1e-2)
    # "auto": gru decoders only; "on" and "off" force it
    assert xla_step(tiny_config(model={"decoder": "gru", "likelihood": "categorical"},
                                data={"dataset": "sequences"}))
    assert not xla_step(tiny_config())
    assert xla_step(tiny_config(train={"xla": "on"}))
    assert not xla_step(tiny_config(model={"decoder": "gru", "likelihood": "categorical"},
                                    data={"dataset": "sequences"}, train={"xla": "off"}))
