"""A MADE decoder: an autoregressive likelihood over flat data dims, conditioned on z.

The decoder factorizes ``p(x|z) = prod_i p(x_i | x_<i, z)`` (Germain et al. 2015, MADE; used as
a VAE decoder by Chen et al. 2017). One forward pass gives every conditional at once, because the
dense layers are *masked*: a weight ``W[a, b]`` is multiplied by ``M[a, b] in {0, 1}`` so that the
output for dim ``i`` can only see ``x_<i``. ``z`` is not masked: it enters every hidden layer and
the output through plain dense layers, so every conditional also sees all of ``z``.

The masks come from intervals. Every unit ``u`` carries the interval ``[lo_u, hi_u]`` of input
dims it is *allowed* to depend on (dims counted from 1):

- input ``j``: ``[j, j]``;
- output ``i``: ``[max(1, i - c), i - 1]`` (empty for ``i = 1`` or ``c = 0``), where the context
  ``c`` is how many previous dims a conditional sees (``None``: all of them);
- hidden unit: ``hi`` drawn from ``[0, N - 1]`` and ``lo = 1`` (unlimited context) or
  ``lo = max(1, hi - w + 1)`` with a width ``w`` drawn from ``[1, c]``; with ``c = 0``, empty.
  ``hi = 0`` gives the empty interval ``[1, 0]``: a unit that sees z only. Plain MADE has no use
  for such units (they would be constants), but with z they give the first dims, whose context is
  empty or tiny, a nonlinear path from z.

A connection ``a -> b`` is kept iff ``interval(a) ⊆ interval(b)`` (an empty interval is inside
every interval). Containment is transitive, so any path from input ``j`` to output ``i`` implies
``[j, j] ⊆ interval(i)``: the conditionals are exactly as causal as intended, for any depth. With
unlimited context the rule is MADE's degree rule (``m(a) <= m(b)``, and ``<`` into the outputs);
with ``c = 0`` no input reaches any unit and the decoder is an MLP on z, i.e. factorized given z.
The masks depend only on ``mask_seed``: they are part of the architecture, not of a trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from vae_search._tf import keras

ops = keras.ops

__all__ = ["MaskedDense", "build_made_decoder", "made_masks"]


@keras.saving.register_keras_serializable(package="vae_search")
class MaskedDense(keras.layers.Layer):
    """``y = x @ (W * M) + b`` with a fixed binary mask ``M`` of shape ``(inputs, units)``.

    The mask is a constant of the layer, not a weight: training never changes it, and a trainer
    that re-initialises every weight per trial cannot overwrite it.

    Args:
        mask: 0/1 array, ``mask[a, b] = 1`` iff input ``a`` may feed unit ``b``.
        use_bias: Whether to add a bias.
        kernel_initializer: Initializer of ``W`` (kept as ``self.kernel_initializer``).
        bias_initializer: Initializer of ``b`` (kept as ``self.bias_initializer``).
    """

    def __init__(
        self,
        mask: Any,
        *,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype="float32")
        if self.mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (inputs, units), got shape {self.mask.shape}")
        self.units = self.mask.shape[1]
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] != self.mask.shape[0]:
            raise ValueError(f"mask has {self.mask.shape[0]} rows, input has {input_shape[-1]}")
        self.kernel = self.add_weight(
            name="kernel", shape=self.mask.shape, initializer=self.kernel_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer
            )

    def call(self, inputs: Any) -> Any:
        y = ops.matmul(inputs, self.kernel * self.mask)
        return y if self.bias is None else y + self.bias

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "mask": self.mask.astype("int8").tolist(),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


# -- masks ---------------------------------------------------------------------------------------


def _subset(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``mask[p, q] = interval a_p ⊆ interval b_q``; an interval with ``hi < lo`` is empty."""
    a_lo, a_hi = (v[:, None] for v in a)
    b_lo, b_hi = (v[None, :] for v in b)
    return (a_hi < a_lo) | ((b_lo <= a_lo) & (a_hi <= b_hi))


def _hidden_intervals(
    n_features: int, width: int, context: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if context == 0:  # no unit may see any input: [1, 0] is empty
        return np.ones(width, dtype=int), np.zeros(width, dtype=int)
    # hi = N would only feed output N + 1, which does not exist; hi = 0 is a z-only unit.
    hi = rng.integers(0, n_features - 1, endpoint=True, size=width)
    if context is None:
        return np.ones(width, dtype=int), hi
    span = rng.integers(1, context, endpoint=True, size=width)
    return np.maximum(1, hi - span + 1), hi


def made_masks(
    n_features: int, hidden: Sequence[int], *, context: int | None = None, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """The 0/1 masks of a MADE with the given context (see the module docstring).

    Args:
        n_features: Data dims ``N``.
        hidden: Widths of the hidden layers.
        context: Previous dims each conditional sees: ``None`` all, ``0`` none, ``c`` the last c.
        seed: Seeds the hidden units' intervals.

    Returns:
        ``(layer_masks, direct_mask)``: one ``(fan_in, fan_out)`` mask per masked layer, inputs to
        the first hidden layer through to the last hidden layer to the outputs, and the
        ``(N, N)`` mask of the direct input-to-output connection.
    """
    if context is not None and context < 0:
        raise ValueError(f"context must be None or >= 0, got {context}")
    rng = np.random.default_rng(seed)
    dims = np.arange(1, n_features + 1)
    inputs = (dims, dims)
    lo_out = dims - context if context is not None else np.ones_like(dims)
    outputs = (np.maximum(1, lo_out), dims - 1)
    units = [inputs]
    units += [_hidden_intervals(n_features, width, context, rng) for width in hidden]
    units.append(outputs)
    masks = [_subset(a, b).astype("float32") for a, b in pairwise(units)]
    return masks, _subset(inputs, outputs).astype("float32")


# -- the decoder ---------------------------------------------------------------------------------


def build_made_decoder(
    latent_dim: int,
    hidden: Sequence[int],
    n_features: int,
    *,
    context: int | None = None,
    mask_seed: int = 0,
) -> keras.Model:
    """Autoregressive decoder ``[z, x] -> `` one output per data dim (logits or means).

    ``h_1 = relu(MaskedDense(x) + Dense(z))``, ``h_k = relu(MaskedDense(h_{k-1}) + Dense(z))``,
    ``out = MaskedDense(h_K) + MaskedDense_direct(x) + Dense(z)``. The direct masked ``x -> out``
    term is MADE's direct connection: it gives each conditional a logistic-regression path on its
    context, which helps early training; the masks keep it as causal as the hidden path.

    Args:
        latent_dim: Size of ``z``.
        hidden: Widths of the masked hidden layers.
        n_features: Data dims ``N``.
        context: Previous dims each conditional sees (``None`` all, ``0`` none: factorized).
        mask_seed: Seeds the masks (architecture, fixed across trials).

    Returns:
        A model with inputs ``[z (latent_dim,), x (N,)]`` and output ``(N,)``, whose output ``i``
        depends on ``x`` only through the dims allowed by ``context`` before ``i``.
    """
    masks, direct_mask = made_masks(n_features, hidden, context=context, seed=mask_seed)
    z = keras.Input(shape=(latent_dim,), name="z")
    x = keras.Input(shape=(n_features,), name="x")
    h = x
    for k, (width, mask) in enumerate(zip(hidden, masks)):
        from_x = MaskedDense(mask, name=f"made_{k}")(h)
        from_z = keras.layers.Dense(width, use_bias=False, name=f"made_z_{k}")(z)
        h = keras.layers.ReLU(name=f"made_relu_{k}")(keras.layers.Add()([from_x, from_z]))
    out = keras.layers.Add(name="x_out")(
        [
            MaskedDense(masks[-1], name="made_out")(h),
            MaskedDense(direct_mask, use_bias=False, name="made_direct")(x),
            keras.layers.Dense(n_features, use_bias=False, name="made_z_out")(z),
        ]
    )
    return keras.Model([z, x], out, name="decoder")
