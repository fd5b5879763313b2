"""The factorized MLP family: ``p(x|z) = prod_i p(x_i | z)`` (the keras-io VAE shape)."""

from __future__ import annotations

from vae_search._tf import keras

__all__ = ["build_decoder", "build_encoder"]


def build_encoder(n_features: int, hidden: tuple[int, ...], latent_dim: int) -> keras.Model:
    """``x -> (z_mean, z_log_var)`` through ReLU layers of the given widths."""
    x = keras.Input(shape=(n_features,), name="x")
    h = x
    for i, width in enumerate(hidden):
        h = keras.layers.Dense(width, activation="relu", name=f"enc_{i}")(h)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var], name="encoder")


def build_decoder(latent_dim: int, hidden: tuple[int, ...], n_features: int) -> keras.Model:
    """``z -> params`` (logits or means), mirroring the encoder's widths."""
    z = keras.Input(shape=(latent_dim,), name="z")
    h = z
    for i, width in enumerate(reversed(hidden)):
        h = keras.layers.Dense(width, activation="relu", name=f"dec_{i}")(h)
    out = keras.layers.Dense(n_features, name="x_out")(h)
    return keras.Model(z, out, name="decoder")
