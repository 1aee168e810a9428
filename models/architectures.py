"""Keras builders for the zoo's families. Small on purpose: they must fit a microcontroller."""

import keras

from .registry import get_activation
from .zoo import ModelSpec, check_input_shape


def build_model(spec: ModelSpec, input_shape, outputs: int, activation_config=None) -> keras.Model:
    check_input_shape(spec, input_shape)
    act = get_activation(spec.activation)
    config = activation_config or {}
    counter = iter(range(1, 100))

    def activation():
        return act.build(name=f"{act.name}_{next(counter)}", **config)

    inputs = keras.Input(shape=tuple(input_shape), name="input")
    if spec.family.name == "mlp":
        x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
        x = activation()(keras.layers.Dense(64, name="hidden")(x))
        outputs_ = keras.layers.Dense(outputs, name="output")(x)
    else:
        x = activation()(keras.layers.Conv2D(32, 3, padding="same", name="conv")(inputs))
        x = activation()(keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x))
        x = activation()(keras.layers.Conv2D(64, 1, name="pointwise")(x))
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = activation()(keras.layers.Dense(64, name="dense")(x))
        x = keras.layers.Dense(outputs, name="logits")(x)
        outputs_ = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs_, name=spec.name)
