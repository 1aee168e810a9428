"""GELU with the tanh approximation, as in BERT and GPT-2."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="edgepipe")
class GeluTanh(keras.layers.Layer):
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016):
    `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`; lowers to TFLite's GELU."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def formula(self, x):
        return tf.nn.gelu(x, approximate=True)

    def call(self, inputs):
        return self.formula(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
