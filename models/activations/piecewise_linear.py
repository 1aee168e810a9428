"""PiecewiseLinear: x for x > 0, alpha * x otherwise, with an explicit custom gradient."""

import keras
import tensorflow as tf

from ._validation import check_float


@keras.saving.register_keras_serializable(package="edgepipe")
class PiecewiseLinear(keras.layers.Layer):
    """Leaky piecewise-linear activation: `x if x > 0 else alpha * x`.

    The forward is `tf.nn.leaky_relu`, which lowers to the single TFLite builtin LEAKY_RELU
    (int8 and int16 kernels), unlike `tf.where` (GREATER + SELECT_V2, no int16 kernel).
    The gradient is given explicitly: 1 for x > 0, alpha otherwise (alpha at the kink).

    Args:
        alpha: slope for x <= 0, in [0, 1).
    """

    def __init__(self, alpha=0.1, **kwargs):
        super().__init__(**kwargs)
        self.alpha = check_float("alpha", alpha, low=0.0, high=1.0, high_open=True)
        self.supports_masking = True

    def formula(self, x):
        return tf.nn.leaky_relu(x, alpha=self.alpha)

    def call(self, inputs):
        alpha = self.alpha

        @tf.custom_gradient
        def piecewise(x):
            def grad(dy):
                return dy * tf.where(x > 0, tf.ones_like(x), tf.constant(alpha, x.dtype))

            return tf.nn.leaky_relu(x, alpha=alpha), grad

        return piecewise(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
