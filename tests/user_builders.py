"""Deliberately broken ``model.builder`` functions for tests/test_builder.py."""

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
