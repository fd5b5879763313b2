"""Seeding in one place: fresh weights, optimizer state and noise streams from one trial seed.

A trainer compiles one graph per architecture and reuses it for hundreds of trials, so a trial
cannot simply build a new model: :class:`Reseeder` re-initialises the existing one, inside one
compiled call. Every weight is redrawn from its own layer's initializer (``<weight
name>_initializer``, the Keras convention; a GRU cell's ``recurrent_kernel`` uses
``recurrent_initializer``) with the stream ``seed * 1009 + i`` for the i-th seeded draw, in
build order (a dense VAE draws what it drew when each kernel was seeded that way); a weight
without an initializer (a user layer's) goes back to its value at build time. Every
``SeedGenerator`` found on the model's layers (sampling, dropout, word dropout) is reseeded, so
nothing random escapes the seed.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

from vae_search._tf import keras, tf

__all__ = ["Reseeder", "walk_layers"]

# Weight name -> initializer attribute where it is not "<name>_initializer".
_INITIALIZER_ATTR = {"recurrent_kernel": "recurrent_initializer"}


def walk_layers(root: Any) -> list[Any]:
    """``root`` and every layer below it, parents before children (each once)."""
    order: list[Any] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        order.append(layer)
        children: list[Any] = list(getattr(layer, "layers", None) or [])
        for value in vars(layer).values():  # sublayers held as attributes (cells, wrappers)
            items = value if isinstance(value, (list, tuple)) else (value,)
            children.extend(v for v in items if isinstance(v, keras.layers.Layer))
        stack.extend(reversed(children))
    return order


class _Weight(NamedTuple):
    variable: Any
    initializer: Any  # None: restore ``value``
    value: Any  # the build-time value (only without an initializer)
    seeded: bool  # draws from the init stream (zeros and constants do not)


def _weight(var: Any, initializer: Any, generator: keras.random.SeedGenerator) -> _Weight:
    """``var``'s re-initialisation: its initializer's class and config, drawing from
    ``generator``; or its build-time value when it has no initializer."""
    if initializer is None:
        return _Weight(var, None, tf.constant(var.numpy()), False)
    if "seed" not in inspect.signature(type(initializer).__init__).parameters:
        return _Weight(var, initializer, None, False)
    config = {k: v for k, v in initializer.get_config().items() if k != "seed"}
    return _Weight(var, type(initializer)(**config, seed=generator), None, True)


class Reseeder:
    """Re-initialises a built model (and its optimizer) from an integer seed.

    Args:
        model: The built Keras model.
        optimizer: Its built optimizer (state zeroed, learning rate restored).
        learning_rate: The learning rate every trial starts with.
        generators: Extra seed generators to reseed (the trainer's shuffle stream).
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, *,
                 learning_rate: float, generators: tuple[Any, ...] = ()) -> None:
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.init_seed = keras.random.SeedGenerator(0)
        layers = walk_layers(model)
        owner: dict[int, tuple[int, Any]] = {}  # variable id -> (layer position, layer)
        for pos in range(len(layers) - 1, -1, -1):  # children first: the deepest layer owns it
            for var in layers[pos].weights:
                owner.setdefault(id(var), (pos, layers[pos]))
        variables = {id(v): v for layer in layers for v in layer.weights}
        # Parents before children, as built: initializer streams are numbered in this order.
        ordered = sorted(variables.values(), key=lambda v: owner[id(v)][0])
        self.weights: list[_Weight] = []
        for var in ordered:
            layer = owner[id(var)][1]
            short = var.name.split("/")[-1]
            init = getattr(layer, _INITIALIZER_ATTR.get(short, f"{short}_initializer"), None)
            self.weights.append(_weight(var, init, self.init_seed))
        found = [v for layer in layers for v in vars(layer).values()
                 if isinstance(v, keras.random.SeedGenerator)]
        self.generators = list({id(g): g for g in [*found, *generators]}.values())

    def reset(self, seed: Any) -> None:
        """Redraw everything from ``seed`` (an int64 scalar tensor; call compiled)."""
        zero = tf.constant(0, dtype="int64")
        stream = 0  # numbered over the seeded draws only (zeros and constants need none)
        for w in self.weights:
            if w.initializer is None:
                w.variable.assign(w.value)
                continue
            if w.seeded:
                self.init_seed.state.assign(tf.stack([seed * 1009 + stream, zero]))
                stream += 1
            w.variable.assign(tf.cast(w.initializer(w.variable.shape), w.variable.dtype))
        for var in self.optimizer.variables:
            var.assign(tf.zeros(var.shape, dtype=var.dtype))
        self.optimizer.learning_rate.assign(self.learning_rate)
        for i, generator in enumerate(self.generators):
            generator.state.assign(tf.stack([seed, tf.constant(7919 * (i + 1), dtype="int64")]))
