"""Keras model -> `.tflite` in each quantization mode, builtin ops only.

Path: `model.export()` to a SavedModel once, then `TFLiteConverter.from_saved_model` per mode.
With Keras 3, TF 2.21's `from_keras_model` also exports a SavedModel internally (and prints
"Saved artifact at ..." to stdout each time), but not the same one: it keeps a fixed batch size
(`keras.Input(batch_size=1)`), which `model.export()` makes dynamic, and some ops then lower
differently (RESHAPE gains SHAPE/STRIDED_SLICE/PACK, tf.where gives SELECT_V2 not SELECT).
Exporting explicitly serves all five modes from one export, keeps stdout clean, and leaves the
SavedModel to inspect: it still carries the custom gradients (`registered_gradients`), which the
`.tflite` files must not. `make_converter` is the one way to convert (the TFLM op table's tool
uses it too).
SELECT_TF_OPS (Flex) is never enabled: a model that needs it fails with the op and layer named.
"""

import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from ..device_tests.schema import ConversionStatus
from .modes import QuantMode
from .native_output import captured_native_output
from .representative import calibration_samples


@dataclass
class ConversionFailure(Exception):
    """A variant that could not be produced: `unsupported` (a documented limit of TFLite, e.g.
    no int16 kernel for an op) or `failed` (the model needs something TFLite builtins lack)."""

    status: ConversionStatus
    reason: str
    ops: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    suggestion: str = ""
    log: str = field(default="", repr=False)

    def __str__(self):
        return self.reason + (f". {self.suggestion}" if self.suggestion else "")


def export_saved_model(model, directory: Path, debug: bool = False,
                       batch: int | None = None) -> Path:
    """`batch`: export with that fixed batch size (static shapes) instead of a dynamic one."""
    signature = None if batch is None else fixed_batch_signature(model, batch)
    with captured_native_output(not debug):
        model.export(str(directory), format="tf_saved_model", verbose=debug,
                     input_signature=signature)
    return Path(directory)


def fixed_batch_signature(model, batch: int) -> list:
    """The model's inputs with a fixed batch size, as `model.export` takes them: one spec for
    one input, else the list of specs as one argument (a functional model's call). Named after
    the Keras inputs, as the dynamic export names them (calibration feeds them by name)."""
    specs = [tf.TensorSpec((batch, *t.shape[1:]), t.dtype, name=t.name) for t in model.inputs]
    return specs if len(specs) == 1 else [specs]


def converter_options(mode: QuantMode) -> dict:
    """The converter settings for a mode, as recorded in each conversion record."""
    opts = {"supported_ops": ["TFLITE_BUILTINS"], "optimizations": [], "supported_types": [],
            "inference_input_type": "float32", "inference_output_type": "float32"}
    if mode is QuantMode.FLOAT32:
        return opts
    opts["optimizations"] = ["DEFAULT"]
    if mode is QuantMode.FLOAT16:
        opts["supported_types"] = ["float16"]
    elif mode is QuantMode.INT8:
        # TFLITE_BUILTINS_INT8 alone: no float fallback kernels may be chosen.
        opts.update(supported_ops=["TFLITE_BUILTINS_INT8"], inference_input_type="int8",
                    inference_output_type="int8")
    elif mode is QuantMode.INT16X8:
        opts.update(supported_ops=["EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"],
                    inference_input_type="int16", inference_output_type="int16")
    return opts


def configure(conv, mode: QuantMode, representative_dataset=None):
    """`conv` (a TFLiteConverter) set as `converter_options(mode)` says: the one table of
    converter settings (tools/measure_tflm_ops.py uses it too). `representative_dataset` (a
    generator function, as TFLiteConverter takes it) serves the modes that need one."""
    opts = converter_options(mode)
    conv.target_spec.supported_ops = [getattr(tf.lite.OpsSet, s) for s in opts["supported_ops"]]
    conv.optimizations = [getattr(tf.lite.Optimize, o) for o in opts["optimizations"]]
    conv.target_spec.supported_types = [tf.dtypes.as_dtype(t) for t in opts["supported_types"]]
    if mode.needs_representative_data:
        conv.representative_dataset = representative_dataset
        conv.inference_input_type = tf.dtypes.as_dtype(opts["inference_input_type"])
        conv.inference_output_type = tf.dtypes.as_dtype(opts["inference_output_type"])
    return conv


def make_converter(saved_model: Path, mode: QuantMode, representative_dataset=None):
    """The converter edgepipe converts a SavedModel with in `mode` (see `configure`)."""
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    return configure(conv, mode, representative_dataset)


def convert_saved_model(saved_model: Path, mode: QuantMode, representative=None,
                        layer_names=(), debug: bool = False,
                        zoo: bool = False) -> tuple[bytes, float]:
    """Return (flatbuffer, seconds) or raise ConversionFailure with the cause named (`zoo`:
    see `explain_failure`)."""
    if mode.needs_representative_data and representative is None:
        raise ConversionFailure(ConversionStatus.FAILED, "not converted: the integer modes "
                                "need representative samples to calibrate")
    start = time.perf_counter()
    try:
        with captured_native_output(not debug) as log:
            flatbuffer = make_converter(saved_model, mode, lambda: calibration_samples(
                representative)).convert()
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError
        raise explain_failure(e, mode, layer_names, "".join(log), zoo) from e
    return flatbuffer, time.perf_counter() - start


_INT16_UNSUPPORTED = re.compile(r"Quantization to 16x8-bit not yet supported for op: '(\w+)'")
_SELECT_OPS = re.compile(r"TF Select ops: ([\w, ]+)")
_LOCATION = re.compile(r'fused\["\w+:", "([^"@]+)@')
# int16x8 quantizes every tensor from its calibrated range; an integer tensor (token ids into
# an Embedding's GATHER) has none: int8 leaves it as it is, int16x8 stops here.
_NO_RANGE = re.compile(r"Max and min for dynamic tensors should be recorded during "
                       r"calibration: Failed for tensor (\S+)")
_INPUT_TENSOR = re.compile(r"^serving_default_(.+?)(:\d+)?$")


def explain_failure(error: Exception, mode: QuantMode, layer_names=(), log: str = "",
                    zoo: bool = False):
    """Turn a converter exception into a one-line reason that names ops and Keras layers.
    `zoo`: the model is one of edgepipe's own, whose int16 limits are documented outcomes (the
    README's "Expected outcomes"); a user's model is told what TFLite lacks and what to do."""
    text = str(error)
    int16_ops = tuple(dict.fromkeys(_INT16_UNSUPPORTED.findall(text)))
    if int16_ops:
        ops = ", ".join(int16_ops)
        advice = ("Expected outcome for this activation; deploy int8 instead, or write the "
                  "forward with builtins that have int16 kernels." if zoo else
                  f"Deploy int8 instead, or write the layer that uses {ops} with builtins "
                  "that have int16 kernels.")
        return ConversionFailure(
            ConversionStatus.UNSUPPORTED, f"unsupported: op {ops} has no int16 kernel (TFLite "
            f"cannot quantize it to {mode.value})", int16_ops, (), advice, log)
    tf_ops = _select_ops(error, text)
    layers = _layers_in(error, text, layer_names)
    if tf_ops:
        where = f" in layer {', '.join(map(repr, layers))}" if layers else ""
        return ConversionFailure(
            ConversionStatus.FAILED, f"needs TF op {', '.join(tf_ops)}{where}, which no TFLite "
            "builtin implements (it would need Flex/SELECT_TF_OPS, which edgepipe never enables)",
            tf_ops, layers, "Rewrite that layer's call() with ops TFLite has as builtins.", log)
    no_range = _NO_RANGE.search(text)
    if no_range and mode is QuantMode.INT16X8:
        tensor = no_range.group(1)
        named = _INPUT_TENSOR.match(tensor)
        what = (f"the model's integer input {named.group(1)!r} (token ids or indices)" if named
                else f"integer tensor {tensor!r}")
        return ConversionFailure(
            ConversionStatus.UNSUPPORTED, f"unsupported: TFLite's int16x8 quantizer needs a "
            f"calibrated range for every tensor, and calibration records none for {what}",
            (), layers, "Deploy int8, which keeps integer inputs as they are.", log)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return ConversionFailure(ConversionStatus.FAILED, f"converter error: {first[:300]}", (), layers,
                             "", log)


def _select_ops(error: Exception, text: str) -> tuple[str, ...]:
    ops = []
    for err in getattr(error, "errors", None) or ():  # ConverterError's structured records
        name = getattr(getattr(err, "operator", None), "name", "")
        if name:
            ops.append(name.removeprefix("tf."))
    for match in _SELECT_OPS.findall(text):
        ops += [op.strip() for op in match.split(",") if op.strip()]
    return tuple(dict.fromkeys(ops))


def _layers_in(error: Exception, text: str, layer_names) -> tuple[str, ...]:
    """Keras layer names from the converter's locations, e.g. 'functional_1/my_inverse_1/
    MatrixInverse@__inference_...' -> 'my_inverse' (TF adds `_1` to the graph scope)."""
    paths = list(_LOCATION.findall(text))
    for err in getattr(error, "errors", None) or ():
        loc = getattr(err, "location", None)
        for call in getattr(loc, "call", ()) or ():
            paths.append(call.name.split("@")[0])
    known = set(layer_names)
    found = []
    for path in paths:
        for part in path.split("/"):
            base = re.sub(r"_\d+$", "", part)
            for candidate in (part, base):
                if candidate in known and candidate not in found:
                    found.append(candidate)
                    break
    return tuple(found)


def saved_model_gradients(saved_model: Path) -> list[dict]:
    """The custom gradients a SavedModel carries: what the `.tflite` must have dropped."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model) / "saved_model.pb").read_bytes())
    grads = []
    for graph in proto.meta_graphs:
        for g in graph.graph_def.library.registered_gradients:
            grads.append({"op_type": g.registered_op_type, "function": g.gradient_func})
    return grads


@contextmanager
def temporary_export(model, debug: bool = False, batch: int | None = None):
    """A SavedModel of `model` in a temporary folder, removed afterwards (`batch`: a fixed
    batch size, see `export_saved_model`)."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-export-") as tmp:
        yield export_saved_model(model, Path(tmp) / "saved_model", debug, batch)
