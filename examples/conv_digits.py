"""Your own model, by example: a small convolutional VAE for the 8x8 digits.

Use it with ``model.builder = "examples.conv_digits:build"`` (run from the repository root, or
put this folder on ``PYTHONPATH``), as in ``examples/conv_digits.toml``. The contract:
``build(data_shape, latent_dim, config) -> (encoder, decoder)``; the encoder maps ``x`` to
``[z_mean, z_log_var]``, the decoder maps ``z`` to the parameters of the configured likelihood
(here Bernoulli logits, one per pixel), both with the data's flat shape ``(64,)``.
"""

from __future__ import annotations

import keras

SIDE = 8  # the digits are 8 x 8 images, stored flat


def build(data_shape, latent_dim, config):  # noqa: ANN001, ANN201 - the contract's signature
    (n_pixels,) = data_shape
    if n_pixels != SIDE * SIDE:
        raise ValueError(f"expects 8x8 images stored flat (64 values), got {n_pixels}")
    width = config.model.hidden[0]

    x = keras.Input(shape=data_shape, name="x")
    h = keras.layers.Reshape((SIDE, SIDE, 1))(x)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)  # 4 x 4
    h = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)  # 2 x 2
    h = keras.layers.Dense(width, activation="relu")(keras.layers.Flatten()(h))
    encoder = keras.Model(
        x, [keras.layers.Dense(latent_dim)(h), keras.layers.Dense(latent_dim)(h)], name="encoder"
    )

    z = keras.Input(shape=(latent_dim,), name="z")
    h = keras.layers.Dense(2 * 2 * 32, activation="relu")(z)
    h = keras.layers.Reshape((2, 2, 32))(h)
    h = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same")(h)  # 8 x 8 logits
    decoder = keras.Model(z, keras.layers.Flatten()(h), name="decoder")
    return encoder, decoder
