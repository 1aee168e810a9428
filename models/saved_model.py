"""A SavedModel folder as a Keras model, so that everything downstream works unchanged.

The folder's serving signature becomes one `keras.layers.TFSMLayer` on `keras.Input`s built from
the signature's inputs (names, shapes, dtypes): converting it (`model.export`) converts the
signature, and the reference outputs are the signature's. Its Keras layers are gone (the layer
is opaque): nothing can simulate them, and callers fall back for such a model.

Loading a SavedModel runs TensorFlow graph ops, not the Python of a Lambda: it needs no --unsafe.
"""

import re
from pathlib import Path

import keras

from ..core.errors import EdgepipeError

SERVING = "serving_default"
SAVED_MODEL_HINT = ("Save it with model.export('folder') or tf.saved_model.save(obj, 'folder', "
                    "signatures={'serving_default': fn}).")


class ServingSignature(keras.layers.TFSMLayer):
    """TFSMLayer whose call also takes several inputs: a signature takes them by name."""

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            return self.call_endpoint_fn(**inputs)
        return self.call_endpoint_fn(inputs)


def load_saved_model(path: Path):
    from .load_errors import cause_line

    try:
        layer = ServingSignature(str(path), call_endpoint=SERVING)
    except ValueError as e:
        if "endpoint" not in str(e):
            raise EdgepipeError(f"Cannot load SavedModel folder {path}: {cause_line(e)}.") from None
        import tensorflow as tf

        found = sorted(tf.saved_model.load(str(path)).signatures) or ["none"]
        raise EdgepipeError(f"SavedModel folder {path} has no {SERVING!r} signature (it has: "
                            f"{', '.join(found)}); edgepipe converts and checks against the "
                            f"serving signature. {SAVED_MODEL_HINT}") from None
    except Exception as e:  # a user's folder: whatever it raises is bad input, said in one line
        raise EdgepipeError(f"Cannot load SavedModel folder {path}: {cause_line(e)}.") from None
    _, specs = layer.call_endpoint_fn.structured_input_signature
    if not specs:
        raise EdgepipeError(f"SavedModel folder {path}: its {SERVING!r} signature takes no "
                            f"named inputs. {SAVED_MODEL_HINT}")
    inputs = {}
    for name, spec in sorted(specs.items()):
        if spec.shape.rank is None or spec.shape.rank == 0:
            raise EdgepipeError(f"SavedModel folder {path}: input {name!r} of its {SERVING!r} "
                                f"signature has shape {spec.shape} (no batch axis); export it "
                                "with a batch axis first (shape (None, ...)).")
        inputs[name] = keras.Input(batch_shape=tuple(spec.shape.as_list()),
                                   dtype=spec.dtype.name, name=name)
    outputs = layer(inputs if len(inputs) > 1 else next(iter(inputs.values())))
    if isinstance(outputs, dict):
        outputs = [outputs[k] for k in sorted(outputs)]
    elif not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return keras.Model(list(inputs.values()) if len(inputs) > 1 else next(iter(inputs.values())),
                       outputs[0] if len(outputs) == 1 else list(outputs),
                       name=re.sub(r"[^A-Za-z0-9_.-]", "_", path.resolve().name) or "saved_model")
