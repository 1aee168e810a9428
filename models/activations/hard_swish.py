"""HardSwish: x * relu6(x + 3) / 6, the piecewise approximation of Swish used by MobileNetV3."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="edgepipe")
class HardSwish(keras.layers.Layer):
    """HardSwish (Howard et al., 2019): `x * relu6(x + 3) / 6`; lowers to TFLite's HARD_SWISH."""

    # The same formula without HARD_SWISH (no int16x8 version in TF's converter, no int16 kernel
    # in TFLite Micro): models/lowering.py swaps `clip_form` in when asked to avoid it.
    lowerings = {"clip": {"method": "clip_form", "avoids": ["HARD_SWISH"]}}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def formula(self, x):
        return x * tf.nn.relu6(x + 3.0) / 6.0

    def clip_form(self, x):
        # x * min(relu(x/6 + 1/2), 1): ADD (RELU fused in), MINIMUM, MUL, all with int8 and int16
        # kernels. Not relu6: the converter fuses `x * relu6(x + 3) / 6` into HARD_SWISH, and
        # TFLite Micro's int8 RELU6 was measured wrong (converters/tflm_ops.py).
        return x * tf.minimum(tf.nn.relu(x * (1.0 / 6.0) + 0.5), 1.0)

    def call(self, inputs):
        return self.formula(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape
