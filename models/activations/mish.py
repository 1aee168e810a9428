"""Mish: x * tanh(softplus(x)). Smooth, so plain autodiff gives its gradient."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="edgepipe")
class Mish(keras.layers.Layer):
    """Mish (Misra, 2019): `x * tanh(softplus(x))`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def formula(self, x):
        return x * tf.tanh(tf.nn.softplus(x))

    def call(self, inputs):
        return self.formula(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
