"""Step: 1 for x > 0 else 0. Its true gradient is zero almost everywhere, so it trains through a
surrogate gradient chosen by `surrogate`."""

import keras
import tensorflow as tf

from ._validation import check_choice, check_float

SURROGATES = ("ste", "sigmoid", "none")


@keras.saving.register_keras_serializable(package="edgepipe")
class Step(keras.layers.Layer):
    """Heaviside step `1 if x > 0 else 0`; the forward is exactly the step (GREATER, SELECT_V2).

    Args:
        surrogate: the gradient used in training.
            `"ste"`: straight-through, the identity clipped to |x| <= 1 (Hubara et al., 2016);
            `"sigmoid"`: the derivative of sigmoid(k * x);
            `"none"`: plain autodiff of the step, which is zero: the layers below never learn.
        k: steepness of the sigmoid surrogate, > 0 (only used with `surrogate="sigmoid"`).
    """

    def __init__(self, surrogate="ste", k=5.0, **kwargs):
        super().__init__(**kwargs)
        self.surrogate = check_choice("surrogate", surrogate, SURROGATES)
        self.k = check_float("k", k, low=0.0, low_open=True)
        self.supports_masking = True

    def formula(self, x):
        # tf.where with constant branches lowers to GREATER + SELECT_V2, both int8 end to end;
        # tf.cast(x > 0, x.dtype) would leave a CAST to float32 (and a QUANTIZE) inside an int8
        # model.
        return tf.where(x > 0, tf.constant(1, x.dtype), tf.constant(0, x.dtype))

    def call(self, inputs):
        if self.surrogate == "none":
            return self.formula(inputs)
        surrogate, k, formula = self.surrogate, self.k, self.formula

        @tf.custom_gradient
        def step(x):
            def grad(dy):
                if surrogate == "ste":
                    return dy * tf.cast(tf.abs(x) <= 1, x.dtype)
                s = tf.sigmoid(k * x)
                return dy * k * s * (1 - s)

            return formula(x), grad

        return step(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "surrogate": self.surrogate, "k": self.k}
