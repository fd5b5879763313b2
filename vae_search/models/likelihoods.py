"""The observation models p(x|z): what the decoder's output parameterises.

Each likelihood turns the decoder's output into ``log p(x|z)`` per example and data position
(shape ``(B, N)`` for flat data, ``(B, L)`` for token sequences), constants included, so ELBOs of
different likelihood settings are comparable in nats. They are Keras layers only so that the VAE
tracks their variables:

* :class:`Bernoulli`: the decoder gives logits; binarized data.
* :class:`Gaussian`: the decoder gives means. ``variance="learned"``: a per-dim trainable
  log-variance (starting at sigma^2 = 1); ``variance="fixed"``: sigma^2 is a non-trainable
  variable that a trial sets (searched without retracing). With sigma^2 = 0.5 and ``sum`` the
  negative log-likelihood is ``sum((x - x_hat)^2)`` plus a constant: the popular Keras recipe.
* :class:`Categorical`: the decoder gives logits over the vocabulary at every position.
"""

from __future__ import annotations

import math
from typing import Any

from vae_search._tf import keras

ops = keras.ops

__all__ = ["Bernoulli", "Categorical", "Gaussian", "LOG_2PI", "make_likelihood"]

LOG_2PI = math.log(2.0 * math.pi)


class Bernoulli(keras.layers.Layer):
    """``x_i ~ Bernoulli(sigmoid(logit_i))``."""

    def log_prob(self, x: Any, logits: Any) -> Any:
        # log sigmoid(l) = -softplus(-l), log(1 - sigmoid(l)) = -softplus(l)
        return -(x * ops.softplus(-logits) + (1.0 - x) * ops.softplus(logits))

    def mean(self, logits: Any) -> Any:
        return ops.sigmoid(logits)

    def mode(self, logits: Any) -> Any:
        return ops.cast(logits > 0.0, "float32")


class Gaussian(keras.layers.Layer):
    """``x_i ~ N(mean_i, sigma_i^2)`` with a learned per-dim or a fixed shared variance.

    Args:
        n_features: Data dims (the learned variance has one log-variance per dim).
        variance: ``"learned"`` or ``"fixed"``.
        sigma2: The fixed variance until :meth:`set_sigma2` changes it.
    """

    def __init__(self, n_features: int, *, variance: str = "learned", sigma2: float = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if variance not in ("learned", "fixed"):
            raise ValueError(f"unknown variance {variance!r}")
        self.variance = variance
        if variance == "learned":
            # sigma^2 = 1 at the start of every trial: the trainer re-initialises from here.
            self.log_var_initializer = keras.initializers.Zeros()
            self.log_var = self.add_weight(
                shape=(n_features,), initializer=self.log_var_initializer, name="log_var"
            )
        else:
            self.log_var = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(math.log(sigma2)),
                trainable=False, name="fixed_log_var",
            )

    def set_sigma2(self, sigma2: float) -> None:
        """A fixed-variance trial's sigma^2 (a variable: no retrace)."""
        if self.variance != "fixed":
            raise ValueError("sigma2 is learned, not set, with variance = 'learned'")
        self.log_var.assign(math.log(sigma2))

    def log_prob(self, x: Any, mean: Any) -> Any:
        return -0.5 * (LOG_2PI + self.log_var + ops.square(x - mean) * ops.exp(-self.log_var))

    def mean(self, mean: Any) -> Any:
        return mean

    def mode(self, mean: Any) -> Any:
        return mean


class Categorical(keras.layers.Layer):
    """``x_t ~ Categorical(softmax(logits_t))`` over the vocabulary, per sequence position."""

    def log_prob(self, x: Any, logits: Any) -> Any:
        labels = ops.cast(x, "int32")
        return -ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    def mean(self, logits: Any) -> Any:
        return ops.argmax(logits, axis=-1)

    def mode(self, logits: Any) -> Any:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")


def make_likelihood(name: str, n_features: int, *, variance: str = "learned",
                    sigma2: float = 0.5) -> keras.layers.Layer:
    """The likelihood layer for a configuration's ``model.likelihood``."""
    if name == "bernoulli":
        return Bernoulli(name="likelihood")
    if name == "gaussian":
        return Gaussian(n_features, variance=variance, sigma2=sigma2, name="likelihood")
    if name == "categorical":
        return Categorical(name="likelihood")
    raise ValueError(f"unknown likelihood {name!r}")
