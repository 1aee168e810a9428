"""Models written the way users write them, for the op-table tests: a small transformer block
(MultiHeadAttention, residual add, LayerNormalization, pooling), a 1-D CNN with a step layer
written the tutorial way (`__init__(self)` without **kwargs, no get_config, a `>=` threshold),
and a token classifier with an integer input (Embedding's GATHER). Each builder returns
(name, model, representative inputs); the weights come from a fixed seed, untrained: op
support does not depend on training."""

import numpy as np


def transformer_block():
    import keras

    keras.utils.set_random_seed(11)
    inp = keras.Input((16, 8), name="frames")
    x = keras.layers.Dense(16)(inp)
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([x, attended]))
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(4, activation="softmax")(x))
    rep = np.random.default_rng(0).normal(size=(64, 16, 8)).astype(np.float32)
    return "transformer", model, rep


def step_cnn():
    import keras
    import tensorflow as tf

    class ThresholdStep(keras.layers.Layer):  # as a tutorial writes it
        def __init__(self):
            super().__init__()

        def call(self, x):
            return tf.where(x >= 0.5, 1.0, 0.0)

    keras.utils.set_random_seed(12)
    inp = keras.Input((32, 3))
    x = keras.layers.Conv1D(8, 3, activation="relu")(inp)
    x = keras.layers.MaxPooling1D(2)(x)
    x = ThresholdStep()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    rep = np.random.default_rng(1).uniform(-1, 2, size=(64, 32, 3)).astype(np.float32)
    return "step_cnn", model, rep


def token_classifier():
    import keras

    keras.utils.set_random_seed(13)
    inp = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8)(inp)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, keras.layers.Dense(3)(x))
    rep = np.random.default_rng(2).integers(0, 50, size=(64, 12)).astype(np.int32)
    return "tokens", model, rep


BUILDERS = (transformer_block, step_cnn, token_classifier)


def convert_all(out_dir, modes=None) -> list:
    """Every stranger model in every mode (edgepipe's own conversion path), into `out_dir`;
    the converted variants."""
    from edgepipe.converters.modes import QuantMode
    from edgepipe.converters.variants import convert_model

    variants = []
    for build in BUILDERS:
        name, model, rep = build()
        variants += convert_model(model, name, modes or list(QuantMode), out_dir, rep)
    return variants
