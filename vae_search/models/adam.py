"""Adam with TensorFlow's fused update: one kernel per weight instead of a dozen ops.

Keras 3's :class:`keras.optimizers.Adam` writes the update as separate ops (two moment updates,
the bias-corrected step, the assignment), each dispatched on its own. A small VAE's step is
bound by dispatch, not arithmetic, so on the default study (``seed_mse``, dense 128-64) those
ops were a fifth of the compiled epoch and more than half of its trace
(``scripts/perf/adam.py``; docs/performance.md). :class:`FusedAdam` is the same optimizer through
Keras' own optimizer machinery (``apply``, ``iterations``, ``variables``, the learning rate), with
its :meth:`update_step` the ``ResourceApplyAdam`` kernel (what ``tf.keras`` 2's Adam used). The
update is Keras Adam's:

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

so the two agree to float rounding on dense gradients (``tests/test_models.py``). An embedding's
gradient (``IndexedSlices``) is summed into its dense form first, so a token seen twice in a
batch steps by Adam's rule on its summed gradient; Keras' Adam squares each slice before summing
them (a different, larger step for repeated tokens: 0.59 against 0.71 in the test). The kernel
needs the weights' TensorFlow resource handles: TensorFlow backend only, as is the trainer.
"""

from __future__ import annotations

from typing import Any

from vae_search._tf import keras, tf

__all__ = ["FusedAdam"]


class FusedAdam(keras.optimizers.Optimizer):
    """Adam (Kingma & Ba 2015) with Keras Adam's defaults, one fused kernel per weight."""

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, name: str = "fused_adam",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self._moments: dict[int, tuple[Any, Any]] = {}
        self._powers: tuple[Any, Any] | None = None  # b1^t, b2^t of the step being applied

    def build(self, var_list: list[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        for var in var_list:
            moments = (self.add_variable_from_reference(var, "momentum"),
                       self.add_variable_from_reference(var, "velocity"))
            # update_step receives the backend variable (keras.Variable.value), not its wrapper
            self._moments[id(var.value)] = moments

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        # The bias corrections' powers once per step, not once per weight (two ops each).
        t = tf.cast(self.iterations + 1, "float32")
        self._powers = (tf.pow(tf.constant(self.beta_1), t), tf.pow(tf.constant(self.beta_2), t))
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._powers = None

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        m, v = self._moments[id(variable)]
        if self._powers is None:
            raise RuntimeError("FusedAdam.update_step runs inside apply()")
        beta1_power, beta2_power = (tf.cast(p, variable.dtype) for p in self._powers)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.value.handle, v=v.value.handle,
            beta1_power=beta1_power, beta2_power=beta2_power,
            lr=tf.cast(learning_rate, variable.dtype),
            beta1=tf.cast(self.beta_1, variable.dtype), beta2=tf.cast(self.beta_2, variable.dtype),
            epsilon=tf.cast(self.epsilon, variable.dtype), grad=tf.convert_to_tensor(gradient))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}
