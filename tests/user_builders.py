"""``model.builder`` functions for the tests: deliberately broken ones (tests/test_builder.py)
and a linear VAE (tests/test_reference.py)."""

from __future__ import annotations

import keras


def raising(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    raise RuntimeError("out of coffee")


def not_models(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    return "encoder", "decoder"


def wrong_decoder_output(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    x = keras.Input(shape=data_shape)
    h = keras.layers.Dense(8)(x)
    encoder = keras.Model(x, [keras.layers.Dense(latent_dim)(h), keras.layers.Dense(latent_dim)(h)])
    z = keras.Input(shape=(latent_dim,))
    decoder = keras.Model(z, keras.layers.Dense(data_shape[0] + 1)(z))  # one output too many
    return encoder, decoder


def single_output_encoder(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    x = keras.Input(shape=data_shape)
    encoder = keras.Model(x, keras.layers.Dense(latent_dim)(x))
    z = keras.Input(shape=(latent_dim,))
    return encoder, keras.Model(z, keras.layers.Dense(data_shape[0])(z))


def nan_decoder(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    """A well-formed model whose decoder outputs NaN: every trial diverges at its first epoch."""
    x = keras.Input(shape=data_shape)
    h = keras.layers.Dense(8)(x)
    encoder = keras.Model(x, [keras.layers.Dense(latent_dim)(h), keras.layers.Dense(latent_dim)(h)])
    z = keras.Input(shape=(latent_dim,))
    out = keras.layers.Dense(data_shape[0])(z)
    return encoder, keras.Model(z, keras.layers.Lambda(lambda t: t * float("nan"))(out))


def exits(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    raise SystemExit(0)  # "exits 0 with no message"


def linear(data_shape, latent_dim, config):  # noqa: ANN001, ANN201
    """A linear encoder and decoder: with a fixed-variance Gaussian likelihood its optimum is
    probabilistic PCA (Lucas et al. 2019). As in their linear VAE, the posterior variance does
    not depend on x: its log is a learned bias (a Dense layer fed zeros)."""
    x = keras.Input(shape=data_shape)
    z_mean = keras.layers.Dense(latent_dim)(x)
    zeros = keras.layers.Lambda(lambda t: keras.ops.zeros_like(t[:, :1]))(x)
    z_log_var = keras.layers.Dense(latent_dim)(zeros)
    z = keras.Input(shape=(latent_dim,))
    return keras.Model(x, [z_mean, z_log_var]), keras.Model(z, keras.layers.Dense(data_shape[0])(z))
