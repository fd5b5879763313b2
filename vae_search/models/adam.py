"""Adam with TensorFlow's fused update: one kernel per weight instead of a dozen ops.

Keras 3's :class:`keras.optimizers.Adam` writes the update as separate ops (two moment updates,
the bias-corrected step, the assignment), each dispatched on its own. A small VAE's step is
bound by dispatch, not arithmetic, so on the default study (``seed_mse``, dense 128-64) those
ops were a quarter of the compiled epoch and more than half of its trace
(``scripts/perf/adam.py``; docs/performance.md). :class:`FusedAdam` is Keras' Adam (its
variables, ``apply``, ``iterations``, learning rate), with a dense gradient's update done by the
``ResourceApplyAdam`` kernel (what ``tf.keras`` 2's Adam used):

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

the same rule as Keras', to float rounding (``tests/test_models.py``). An embedding's gradient
(``IndexedSlices``) keeps Keras' own update: for a row gathered twice in a batch it squares the
two slices apart, not their sum (a larger step than Adam on the summed gradient), and the
sequences study trained 0.29 nats better with it in 30 epochs (measured; docs/performance.md).
The kernel takes the weights' resource handles: TensorFlow backend only, as is the trainer.
"""

from __future__ import annotations

from typing import Any

from vae_search._tf import keras, tf

__all__ = ["FusedAdam"]


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam with one fused kernel per dense-gradient weight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fused: dict[int, tuple[Any, Any]] = {}  # weight -> (momentum, velocity)
        self._powers: tuple[Any, Any] | None = None  # b1^t, b2^t of the step being applied

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)  # Keras' Adam makes one momentum and velocity per weight, in order
        for var, m, v in zip(var_list, self._momentums, self._velocities):
            # update_step receives the backend variable (keras.Variable.value), not its wrapper
            self._fused[id(var.value)] = (m, v)

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        # The bias corrections' powers once per step, not once per weight (two ops each).
        t = tf.cast(self.iterations + 1, "float32")
        self._powers = (tf.pow(tf.constant(self.beta_1), t), tf.pow(tf.constant(self.beta_2), t))
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._powers = None

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        moments = self._fused.get(id(variable))
        if isinstance(gradient, tf.IndexedSlices) or moments is None or self._powers is None:
            super().update_step(gradient, variable, learning_rate)  # Keras' own rule
            return
        m, v = moments
        dtype = variable.dtype
        beta1_power, beta2_power = (tf.cast(p, dtype) for p in self._powers)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.value.handle, v=v.value.handle,
            beta1_power=beta1_power, beta2_power=beta2_power,
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.convert_to_tensor(gradient))
