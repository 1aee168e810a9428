"""GELU with the tanh approximation, as in BERT and GPT-2."""

import math

import keras
import tensorflow as tf

_A = math.sqrt(2.0 / math.pi)
_B = 0.044715 * _A


@keras.saving.register_keras_serializable(package="edgepipe")
class GeluTanh(keras.layers.Layer):
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016):
    `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`; lowers to TFLite's GELU."""

    # The same formula without GELU, for targets that lack it (TFLite Micro, in every type):
    # models/lowering.py swaps `tanh_form` in for `call` when asked to avoid GELU.
    lowerings = {"tanh": {"method": "tanh_form", "avoids": ["GELU"]}}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def formula(self, x):
        return tf.nn.gelu(x, approximate=True)

    def tanh_form(self, x):
        # x (1/2 + tanh(x (a + b x^2)) / 2), a = sqrt(2/pi), b = 0.044715 a: TANH, MUL, ADD.
        # Factored on purpose: the converter fuses `... + 0.044715 * pow(x, 3)` back into GELU.
        return x * (0.5 + 0.5 * tf.tanh(x * (_A + _B * x * x)))

    def call(self, inputs):
        return self.formula(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
