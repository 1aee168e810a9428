"""Target-aware lowering: a copy of a Keras model in which every layer that lowers to an op a
target lacks computes its declared alternative instead (issue 15, item 4).

A layer declares its alternatives with a class attribute, edgepipe's activations and users'
layers alike:

    class MyGelu(keras.layers.Layer):
        lowerings = {"tanh": {"method": "tanh_form", "avoids": ["GELU"]}}

        def call(self, x):
            return tf.nn.gelu(x, approximate=True)         # GELU

        def tanh_form(self, x):                            # the same forward: TANH, MUL, ADD
            return x * (0.5 + 0.5 * tf.tanh(x * (0.7978845608 + 0.0356774081 * x * x)))

`method` names a method taking what `call` takes and computing the same forward; `avoids` names
the TFLite builtins that `call` lowers to and `method` does not. The declaration lives in the
class, so it survives `.keras` save/load with the class itself; nothing is keyed on a class name.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras.src.models.functional import Functional  # what clone_model rebuilds; not public

from ..core.errors import EdgepipeError

ATTRIBUTE = "lowerings"
_EXAMPLE = 'lowerings = {"tanh": {"method": "tanh_form", "avoids": ["GELU"]}}'


@dataclass(frozen=True)
class Lowering:
    name: str
    method: str
    avoids: frozenset[str]


def declared_lowerings(layer) -> dict[str, Lowering]:
    """The lowerings `layer`'s class declares ({} when none); EdgepipeError when the declaration
    is malformed, naming the layer and what to write."""
    declared = getattr(type(layer), ATTRIBUTE, None)
    if declared is None:
        return {}
    where = f"layer {layer.name!r} ({type(layer).__name__})"
    if not isinstance(declared, dict):
        raise EdgepipeError(f"{where}: expected `{ATTRIBUTE}` to be a dict such as {_EXAMPLE}. "
                            f"Received: {declared!r}")
    found = {}
    for name, spec in declared.items():
        method = spec.get("method") if isinstance(spec, dict) else None
        avoids = spec.get("avoids") if isinstance(spec, dict) else None
        if (not isinstance(name, str) or not isinstance(method, str)
                or isinstance(avoids, str) or not avoids
                or not all(isinstance(op, str) and op for op in avoids)):
            raise EdgepipeError(f"{where}: expected each lowering as {{'method': name of a "
                                f"method, 'avoids': [TFLite op names]}}, e.g. {_EXAMPLE}. "
                                f"Received: {name!r}: {spec!r}")
        if not callable(getattr(layer, method, None)):
            raise EdgepipeError(f"{where} declares lowering {name!r} computed by method "
                                f"{method!r}, which the layer does not have; define "
                                f"`def {method}(self, inputs)` in its class.")
        found[name] = Lowering(name, method, frozenset(op.upper() for op in avoids))
    return found


def choose_lowering(layer, avoid_ops) -> Lowering | None:
    """The declared lowering that avoids the most of `avoid_ops` (the first declared on a tie),
    or None when none avoids any of them."""
    avoid = {op.upper() for op in avoid_ops}
    best = None
    for lowering in declared_lowerings(layer).values():
        hits = len(lowering.avoids & avoid)
        if hits and (best is None or hits > len(best.avoids & avoid)):
            best = lowering
    return best


@keras.saving.register_keras_serializable(package="edgepipe")
class LoweredLayer(keras.layers.Layer):
    """`layer` computing its declared lowering `lowering` instead of its `call`. It holds the
    layer itself (so the same weights) and takes its name, so converted tensors keep the layer
    path (`<model>_1/<layer>_1/Tanh`)."""

    def __init__(self, layer, lowering: str, **kwargs):
        if isinstance(layer, dict):  # from_config
            layer = keras.saving.deserialize_keras_object(layer)
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(**kwargs)
        self.layer = layer
        self.lowering = lowering
        self._method = getattr(layer, declared_lowerings(layer)[lowering].method)
        self.supports_masking = getattr(layer, "supports_masking", False)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self._method(inputs)

    def get_config(self):
        return {**super().get_config(), "lowering": self.lowering,
                "layer": keras.saving.serialize_keras_object(self.layer)}


def _walk(model, prefix: str = "", rebuildable: bool = True):
    """(layer, path, rebuildable) for every layer, nested models' layers included. Paths join
    nested model names with "/" (the manifest's layer paths); `rebuildable`: every model around
    the layer is functional or Sequential, so clone_model can put another layer in its place."""
    rebuildable = rebuildable and isinstance(model, (keras.Sequential, Functional))
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield layer, path, rebuildable
        if isinstance(layer, keras.Model):
            yield from _walk(layer, f"{path}/", rebuildable)


def lowered_model(model, avoid_ops) -> tuple:
    """(copy of `model` whose layers that declare a lowering avoiding one of `avoid_ops` compute
    it instead, [{"layer": path, "lowering": name, "avoids": [ops]}]), or (None, []) when no
    layer declares one.

    The copy is rebuilt with `keras.models.clone_model` (functional and Sequential models, and
    such models nested in them); its other layers are the original's layer objects, and each
    lowered layer wraps the original one, so every weight is the same by construction. It is a
    model to convert, not to train. Measure what the rewrite changes with `output_change`.
    """
    chosen, records, stuck = {}, [], []
    for layer, path, rebuildable in _walk(model):
        lowering = choose_lowering(layer, avoid_ops)
        if lowering is None:
            continue
        if not rebuildable:
            stuck.append(path)
            continue
        if id(layer) not in chosen:  # a shared layer is lowered once, recorded at each path
            chosen[id(layer)] = lowering
        records.append({"layer": path, "lowering": lowering.name,
                        "avoids": sorted(lowering.avoids)})
    if stuck:
        raise EdgepipeError(
            f"Cannot lower layer(s) {', '.join(map(repr, stuck))}: they sit in a subclassed "
            "model, which Keras cannot rebuild layer by layer; build that model with the "
            "functional API or keras.Sequential.")
    if not chosen:
        return None, []

    def swap(layer):
        lowering = chosen.get(id(layer))
        return LoweredLayer(layer, lowering.name) if lowering else layer

    clone = keras.models.clone_model(model, clone_function=swap, recursive=True)
    return clone, records


def output_change(model, lowered, inputs) -> dict:
    """What the rewrite changes in float32: the largest |lowered - original| over `inputs` (one
    array, or {input name: array}), alone and relative to the original outputs' range."""
    want = np.asarray(keras.ops.convert_to_numpy(model(inputs, training=False)), np.float64)
    got = np.asarray(keras.ops.convert_to_numpy(lowered(inputs, training=False)), np.float64)
    max_abs = float(np.abs(got - want).max()) if want.size else 0.0
    spread = float(np.ptp(want)) if want.size else 0.0
    return {"samples": int(want.shape[0]) if want.ndim else 1, "max_abs": max_abs,
            "range": spread, "rel": max_abs / spread if spread > 0 else max_abs}
