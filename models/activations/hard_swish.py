"""HardSwish: x * relu6(x + 3) / 6, the piecewise approximation of Swish used by MobileNetV3."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="edgepipe")
class HardSwish(keras.layers.Layer):
    """HardSwish (Howard et al., 2019): `x * relu6(x + 3) / 6`; lowers to TFLite's HARD_SWISH."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def formula(self, x):
        return x * tf.nn.relu6(x + 3.0) / 6.0

    def call(self, inputs):
        return self.formula(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
