"""Swish: x * sigmoid(beta * x). Smooth, so plain autodiff gives its gradient."""

import keras
import tensorflow as tf

from ._validation import check_float


@keras.saving.register_keras_serializable(package="edgepipe")
class Swish(keras.layers.Layer):
    """Swish activation (Ramachandran et al., 2017): `x * sigmoid(beta * x)`.

    Args:
        beta: slope of the sigmoid gate, > 0. `beta=1` is SiLU.
    """

    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = check_float("beta", beta, low=0.0, low_open=True)
        self.supports_masking = True

    def formula(self, x):
        # beta == 1 is written without the multiply so it lowers to LOGISTIC, MUL only.
        gate = tf.sigmoid(x) if self.beta == 1.0 else tf.sigmoid(self.beta * x)
        return x * gate

    def call(self, inputs):
        return self.formula(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}
