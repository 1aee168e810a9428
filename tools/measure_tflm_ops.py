"""Measure which TFLite builtin ops (and tensor types) TFLite Micro's Python interpreter runs.

For every case below: build a tiny Keras model around one op, convert it with TensorFlow in each
mode (float32; int8 with int8 input/output; int16x8 with int16 input/output; a few cases also
float16, dynamic-range and int8/int16x8 with float input/output), then, in a child process (a too
small arena or a bad kernel can kill the process), load and run it in `tflite-micro` and in
ai-edge-litert's reference kernels (`OpResolverType.BUILTIN_REF`) on the same inputs.

    .venv/bin/python tools/measure_tflm_ops.py                 # table on stdout, JSON in --out
    .venv/bin/python tools/measure_tflm_ops.py --arena         # + smallest working arena_size
    .venv/bin/python tools/measure_tflm_ops.py --only EXP,SIGN # some cases only
    .venv/bin/python tools/measure_tflm_ops.py --write converters/tflm_ops.py
    .venv/bin/python tools/measure_tflm_ops.py --api-checks    # batch, -1 dims, dtypes

Each model's output is compared three ways on the same inputs: tflite-micro vs the reference
kernels, and each of them vs the Keras model itself (run on the dequantized inputs), in steps of
the output's quantization scale; that tells which of two disagreeing interpreters is wrong.

`--write` replaces the GENERATED block of `converters/tflm_ops.py` (run it on all cases);
`--from-results DIR/results.json --write ...` re-renders it from an earlier run without measuring.
A dev tool: it imports TensorFlow. The child process (`--worker`, `--probe`) imports only numpy,
tflite-micro and ai-edge-litert.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODES = ("float32", "int8", "int16x8")
RAN = ("runs", "op_absent")  # statuses of a model that loaded and ran
EXTRA_MODES = ("float16", "dynamic", "int8-floatio", "int16x8-floatio")
WORKER_TIMEOUT_S = 120
REPRESENTATIVE_SAMPLES = 100
INVOCATIONS = 8  # each model runs this many times on different inputs
MARK = "@@stage "  # the worker writes this to stderr before each stage


# ---------------------------------------------------------------------------------------------
# The child process: no TensorFlow here.

def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _stage(name: str) -> None:
    _flush_c_stdio()
    sys.stdout.flush()
    print(f"\n{MARK}{name}", file=sys.stderr, flush=True)


def _tflm(data: bytes, arena_size):
    from tflite_micro import runtime

    return runtime.Interpreter.from_bytes(data, arena_size=arena_size)


def _run_tflm(interp, batches, n_out):
    outs = []
    for batch in batches:
        for index, x in enumerate(batch):
            interp.set_input(x, index)
        interp.invoke()
        outs.append([np.array(interp.get_output(k)) for k in range(n_out)])
    return outs


def _run_reference(data: bytes, batches):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    results = []
    for batch in batches:
        for detail, x in zip(ins, batch, strict=True):
            interp.set_tensor(detail["index"], x)
        interp.invoke()
        results.append([np.array(interp.get_tensor(d["index"])) for d in outs])
    return results


def _tensors_tflm(data: bytes, batches, n_tensors: int) -> dict:
    """Every tensor of subgraph 0 after each invocation, in TFLM's preserve-all-tensors mode."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(
        data, arena_size=max(16 << 20, 40 * len(data)),
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    saved = {}
    for i, batch in enumerate(batches):
        for index, x in enumerate(batch):
            interp.set_input(x, index)
        interp.invoke()
        for t in range(n_tensors):
            with contextlib.suppress(Exception):  # a tensor TFLM does not keep
                saved[f"tflmT{i}_{t}"] = np.array(interp.GetTensor(t, 0)["tensor_data"])
    return saved


def _tensors_reference(data: bytes, batches, n_tensors: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=data,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    saved = {}
    for i, batch in enumerate(batches):
        for detail, x in zip(interp.get_input_details(), batch, strict=True):
            interp.set_tensor(detail["index"], x)
        interp.invoke()
        for t in range(n_tensors):
            with contextlib.suppress(Exception):
                saved[f"refT{i}_{t}"] = np.array(interp.get_tensor(t))
    return saved


def worker(model_path: str, inputs_path: str, result_path: str, arena_size: int | None) -> None:
    """Load and run one model in tflite-micro, then in litert's reference kernels; when both
    ran, run both again keeping every tensor (`.tensors.npz`, written last: a runtime that
    dies keeping them loses only that file)."""
    data = Path(model_path).read_bytes()
    arrays = np.load(inputs_path)
    n_in, n_out = int(arrays["n_in"]), int(arrays["n_out"])
    batches = [[arrays[f"x{i}_{k}"] for k in range(n_in)] for i in range(INVOCATIONS)]
    result: dict = {"status": "runs", "stage": None, "error": None}
    saved: dict = {}
    _stage("load")
    try:
        interp = _tflm(data, arena_size)
    except Exception as e:  # the interpreter raises RuntimeError, its details go to stderr
        result.update(status="load_fail", stage="load", error=f"{type(e).__name__}: {e}")
        interp = None
    if interp is not None:
        result["input_details"] = [_details(interp.get_input_details(k)) for k in range(n_in)]
        result["output_details"] = [_details(interp.get_output_details(k))
                                    for k in range(n_out)]
        _stage("invoke")
        try:
            for i, outs in enumerate(_run_tflm(interp, batches, n_out)):
                saved.update({f"tflm{i}_{k}": o for k, o in enumerate(outs)})
        except Exception as e:
            result.update(status="invoke_fail", stage="invoke",
                          error=f"{type(e).__name__}: {e}")
        _stage("allocations")
        if result["status"] == "runs":
            interp.print_allocations()
    _stage("reference")
    try:
        for i, outs in enumerate(_run_reference(data, batches)):
            saved.update({f"ref{i}_{k}": o for k, o in enumerate(outs)})
        result["reference"] = "runs"
    except Exception as e:
        result["reference"] = f"{type(e).__name__}: {e}"
    np.savez(result_path + ".npz", **saved)
    Path(result_path).write_text(json.dumps(result))
    if result["status"] == "runs" and result["reference"] == "runs":
        _stage("tensors")
        n_tensors = int(arrays["n_tensors"])
        tensors = _tensors_tflm(data, batches, n_tensors)
        tensors.update(_tensors_reference(data, batches, n_tensors))
        np.savez(result_path + ".tensors.npz", **tensors)
    _stage("end")


def _details(d: dict) -> dict:
    q = d.get("quantization_parameters", {})
    return {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
            "scales": [float(v) for v in q.get("scales", [])],
            "zero_points": [int(v) for v in q.get("zero_points", [])]}


def probe(model_path: str, inputs_path: str, arena_size: int) -> int:
    """Exit 0 when the model loads and runs once with this arena size."""
    arrays = np.load(inputs_path)
    interp = _tflm(Path(model_path).read_bytes(), arena_size)
    _run_tflm(interp, [[arrays[f"x0_{k}"] for k in range(int(arrays["n_in"]))]],
              int(arrays["n_out"]))
    return 0


# ---------------------------------------------------------------------------------------------
# The cases: one op each (plus what the converter puts around it).

@dataclass(frozen=True)
class Case:
    name: str
    op: str  # the op the case is about; the others in the model are measured too
    build: object  # () -> keras.Model with batch size 1
    low: float = -4.0  # inputs are uniform in [low, high]
    high: float = 4.0
    modes: tuple[str, ...] = DEFAULT_MODES
    sweep: bool = False  # the first inputs are every value of the integer type (`_inputs_for`)


def _fn_model(fn, *shapes, name="fn"):
    """A Keras model whose inputs (batch 1) go through `fn` (TensorFlow ops) in one layer."""
    import keras

    class Fn(keras.layers.Layer):
        def call(self, inputs):
            return fn(*inputs) if isinstance(inputs, list) else fn(inputs)

    inputs = [keras.Input(shape, batch_size=1) for shape in shapes]
    inputs = inputs if len(inputs) > 1 else inputs[0]
    return keras.Model(inputs, Fn(name=name)(inputs))


def _layer_model(layer, shape, dtype="float32"):
    """A Keras model (batch 1) of one layer; `dtype` int32 for token ids."""
    import keras

    inp = keras.Input(shape, batch_size=1, dtype=dtype)
    return keras.Model(inp, layer(inp))


def _flatten_model():
    import keras

    inp = keras.Input((4, 4, 2))  # batch left dynamic on purpose
    return keras.Model(inp, keras.layers.Flatten()(inp))


def _attention_model(dot: bool = False):
    """Self-attention as a transformer block writes it: MultiHeadAttention(x, x), or Keras'
    dot-product Attention([x, x])."""
    import keras

    inp = keras.Input((8, 16), batch_size=1)
    layer = keras.layers.Attention() if dot else keras.layers.MultiHeadAttention(2, 8)
    return keras.Model(inp, layer([inp, inp]) if dot else layer(inp, inp))


def _token_model(layer):
    """A layer on 12 integer token ids (batch 1), as a text or keyword model starts."""
    return _layer_model(layer, (12,), "int32")


def _on_ids(fn):
    """A layer computing `fn` on int32 token ids, its result cast to float32."""
    import keras
    import tensorflow as tf

    class OnIds(keras.layers.Layer):
        def call(self, ids):
            return tf.cast(fn(ids), tf.float32)

    return OnIds()


def _activation_model(cls_name):
    from edgepipe.models import activations

    return _layer_model(getattr(activations, cls_name)(), (64,))


def cases() -> list[Case]:
    import keras
    import tensorflow as tf

    vec, img = (64,), (8, 8, 4)
    layer = keras.layers
    all_modes = DEFAULT_MODES + EXTRA_MODES
    one = [
        Case("fully_connected", "FULLY_CONNECTED",
             lambda: _layer_model(layer.Dense(64), (32,)), modes=all_modes),
        Case("conv_2d", "CONV_2D",
             lambda: _layer_model(layer.Conv2D(32, 3, padding="same"), (8, 8, 16)),
             modes=all_modes),
        Case("depthwise_conv_2d", "DEPTHWISE_CONV_2D",
             lambda: _layer_model(layer.DepthwiseConv2D(3, padding="same"), img)),
        Case("max_pool_2d", "MAX_POOL_2D", lambda: _layer_model(layer.MaxPooling2D(2), img)),
        Case("average_pool_2d", "AVERAGE_POOL_2D",
             lambda: _layer_model(layer.AveragePooling2D(2), img)),
        Case("reshape", "RESHAPE", lambda: _layer_model(layer.Reshape((8, 8)), vec)),
        Case("softmax", "SOFTMAX", lambda: _layer_model(layer.Softmax(), (16,))),
        Case("add", "ADD", lambda: _fn_model(tf.add, vec, vec)),
        Case("add_broadcast", "ADD", lambda: _fn_model(tf.add, (4, 16), (1, 16))),
        Case("mul", "MUL", lambda: _fn_model(tf.multiply, vec, vec)),
        Case("mul_const", "MUL", lambda: _fn_model(lambda x: 0.37 * x, vec)),
        Case("sub", "SUB", lambda: _fn_model(tf.subtract, vec, vec)),
        Case("logistic", "LOGISTIC", lambda: _fn_model(tf.sigmoid, vec)),
        Case("tanh", "TANH", lambda: _fn_model(tf.tanh, vec)),
        # Every int16 input of the lookup-table kernels once, at two input scales.
        Case("logistic_sweep", "LOGISTIC", lambda: _fn_model(tf.sigmoid, (65536,)), sweep=True),
        Case("logistic_sweep_wide", "LOGISTIC", lambda: _fn_model(tf.sigmoid, (65536,)),
             low=-12.0, high=12.0, sweep=True),
        Case("tanh_sweep", "TANH", lambda: _fn_model(tf.tanh, (65536,)), sweep=True),
        Case("tanh_sweep_wide", "TANH", lambda: _fn_model(tf.tanh, (65536,)),
             low=-12.0, high=12.0, sweep=True),
        Case("softmax_10", "SOFTMAX", lambda: _layer_model(layer.Softmax(), (10,)),
             low=-8.0, high=8.0),
        Case("dense_softmax", "SOFTMAX",
             lambda: _layer_model(layer.Dense(10, activation="softmax"), (32,))),
        Case("leaky_relu", "LEAKY_RELU", lambda: _fn_model(lambda x: tf.nn.leaky_relu(x, 0.1),
                                                            vec)),
        Case("relu", "RELU", lambda: _fn_model(tf.nn.relu, vec)),
        Case("relu6", "RELU6", lambda: _fn_model(tf.nn.relu6, vec)),
        Case("maximum", "MAXIMUM", lambda: _fn_model(tf.maximum, vec, vec)),
        Case("maximum_scaled", "MAXIMUM", lambda: _fn_model(lambda x: tf.maximum(x, 0.1 * x),
                                                            vec)),
        Case("minimum", "MINIMUM", lambda: _fn_model(tf.minimum, vec, vec)),
        Case("greater_cast", "CAST",
             lambda: _fn_model(lambda x: tf.cast(x > 0, x.dtype), vec)),
        # Same-shape branches lower to SELECT; a scalar branch (broadcast) to SELECT_V2.
        Case("select", "SELECT", lambda: _fn_model(lambda x: tf.where(x > 0, x, 0.1 * x), vec)),
        Case("select_v2", "SELECT_V2", lambda: _fn_model(lambda x: tf.where(x > 0, x, 0.0),
                                                         vec)),
        Case("sign", "SIGN", lambda: _fn_model(tf.sign, vec)),
        Case("hard_swish", "HARD_SWISH",
             lambda: _fn_model(lambda x: x * tf.nn.relu6(x + 3) / 6, vec)),
        Case("gelu_tanh", "GELU",
             lambda: _fn_model(lambda x: tf.nn.gelu(x, approximate=True), vec)),
        Case("gelu_erf", "GELU",
             lambda: _fn_model(lambda x: tf.nn.gelu(x, approximate=False), vec)),
        Case("exp", "EXP", lambda: _fn_model(tf.exp, vec), low=-4.0, high=2.0),
        Case("log", "LOG", lambda: _fn_model(tf.math.log, vec), low=0.1, high=4.0),
        Case("mean", "MEAN", lambda: _layer_model(layer.GlobalAveragePooling2D(), img)),
        Case("concatenation", "CONCATENATION",
             lambda: _fn_model(lambda a, b: tf.concat([a, b], -1), vec, vec)),
        Case("pad", "PAD", lambda: _layer_model(layer.ZeroPadding2D(1), img)),
        Case("strided_slice", "STRIDED_SLICE", lambda: _fn_model(lambda x: x[:, 2:50:2], vec)),
        # Keras Flatten with a dynamic batch (as edgepipe's zoo CNNs have): SHAPE,
        # STRIDED_SLICE, PACK and RESHAPE on int32 shape tensors.
        Case("flatten", "SHAPE", lambda: _flatten_model()),
        Case("squared_difference", "SQUARED_DIFFERENCE",
             lambda: _fn_model(tf.math.squared_difference, vec, vec)),
        Case("rsqrt", "RSQRT", lambda: _fn_model(tf.math.rsqrt, vec), low=0.1, high=4.0),
        Case("sqrt", "SQRT", lambda: _fn_model(tf.sqrt, vec), low=0.0, high=4.0),
        Case("batch_matmul", "BATCH_MATMUL", lambda: _fn_model(tf.matmul, (4, 8), (8, 3))),
        # Not in edgepipe's models today but common in Keras models.
        Case("div", "DIV", lambda: _fn_model(tf.divide, vec, vec), low=0.5, high=4.0),
        Case("abs", "ABS", lambda: _fn_model(tf.abs, vec)),
        Case("neg", "NEG", lambda: _fn_model(tf.negative, vec)),
        Case("square", "SQUARE", lambda: _fn_model(tf.square, vec)),
        Case("sum", "SUM", lambda: _fn_model(lambda x: tf.reduce_sum(x, -1, keepdims=True),
                                             vec)),
        Case("reduce_max", "REDUCE_MAX", lambda: _layer_model(layer.GlobalMaxPooling2D(), img)),
        Case("transpose", "TRANSPOSE", lambda: _layer_model(layer.Permute((2, 1)), (4, 16))),
        Case("pack", "PACK", lambda: _fn_model(lambda a, b: tf.stack([a, b], 1), vec, vec)),
        # Both outputs used: with one left unused, int8 conversion keeps SPLIT in float32.
        Case("split", "SPLIT", lambda: _fn_model(lambda x: tf.split(x, 2, -1), vec)),
        Case("split_v", "SPLIT_V", lambda: _fn_model(lambda x: tf.split(x, [24, 40], -1), vec)),
        Case("resize_nearest_neighbor", "RESIZE_NEAREST_NEIGHBOR",
             lambda: _fn_model(lambda x: tf.image.resize(x, (16, 16), "nearest"), img)),
        # Keras' UpSampling2D (nearest) lowers to RESHAPE and TILE, not RESIZE_NEAREST_NEIGHBOR.
        Case("upsampling2d_nearest", "TILE", lambda: _layer_model(layer.UpSampling2D(2), img)),
        Case("resize_bilinear", "RESIZE_BILINEAR",
             lambda: _layer_model(layer.UpSampling2D(2, interpolation="bilinear"), img)),
        Case("prelu", "PRELU", lambda: _layer_model(
            layer.PReLU(alpha_initializer=keras.initializers.Constant(0.2)), vec)),
        Case("elu", "ELU", lambda: _fn_model(tf.nn.elu, vec)),
        Case("log_softmax", "LOG_SOFTMAX", lambda: _fn_model(tf.nn.log_softmax, (16,))),
        Case("l2_normalization", "L2_NORMALIZATION",
             lambda: _fn_model(lambda x: tf.math.l2_normalize(x, -1), vec)),
        Case("transpose_conv", "TRANSPOSE_CONV",
             lambda: _layer_model(layer.Conv2DTranspose(4, 3, strides=2, padding="same"), img)),
        Case("softplus", "(tf.nn.softplus)", lambda: _fn_model(tf.nn.softplus, vec)),
        Case("pow", "POW", lambda: _fn_model(lambda x: tf.pow(x, 3.0), vec)),
        Case("sin", "SIN", lambda: _fn_model(tf.sin, vec)),
        Case("floor", "FLOOR", lambda: _fn_model(tf.floor, vec)),
        Case("tile", "TILE", lambda: _fn_model(lambda x: tf.tile(x, [1, 2]), vec)),
        Case("arg_max", "ARG_MAX",
             lambda: _fn_model(lambda x: tf.cast(tf.argmax(x, -1), tf.float32), vec)),
        Case("arg_max_int32", "ARG_MAX", lambda: _fn_model(
            lambda x: tf.cast(tf.argmax(x, -1, output_type=tf.int32), tf.float32), vec)),
        Case("less", "LESS", lambda: _fn_model(lambda x: tf.where(x < 1.0, 1.0, 0.0), vec)),
        Case("relu_n1_to_1", "RELU_N1_TO_1",
             lambda: _fn_model(lambda x: tf.clip_by_value(x, -1.0, 1.0), vec)),
        # Comparisons and logic, as users write steps and masks (constant branches).
        Case("greater_equal", "GREATER_EQUAL",
             lambda: _fn_model(lambda x: tf.where(x >= 0.5, 1.0, 0.0), vec)),
        Case("less_equal", "LESS_EQUAL",
             lambda: _fn_model(lambda x: tf.where(x <= 0.5, 1.0, 0.0), vec)),
        Case("equal", "EQUAL", lambda: _fn_model(
            lambda x: tf.where(tf.equal(tf.round(x), 1.0), 1.0, 0.0), vec)),
        Case("not_equal", "NOT_EQUAL", lambda: _fn_model(
            lambda x: tf.where(tf.not_equal(tf.round(x), 1.0), 1.0, 0.0), vec)),
        Case("logical_and", "LOGICAL_AND", lambda: _fn_model(
            lambda x: tf.where(tf.logical_and(x > -1.0, x < 1.0), 1.0, 0.0), vec)),
        Case("logical_or", "LOGICAL_OR", lambda: _fn_model(
            lambda x: tf.where(tf.logical_or(x < -1.0, x > 1.0), 1.0, 0.0), vec)),
        Case("logical_not", "LOGICAL_NOT", lambda: _fn_model(
            lambda x: tf.where(tf.logical_not(x > 0.5), 1.0, 0.0), vec)),
        Case("round", "ROUND", lambda: _fn_model(tf.round, vec)),
        Case("ceil", "CEIL", lambda: _fn_model(tf.math.ceil, vec)),
        Case("cos", "COS", lambda: _fn_model(tf.cos, vec)),
        Case("floor_div", "FLOOR_DIV", lambda: _fn_model(lambda x: tf.math.floordiv(x, 0.7), vec)),
        Case("floor_mod", "FLOOR_MOD", lambda: _fn_model(lambda x: tf.math.floormod(x, 0.7), vec)),
        # Reductions, slicing and shape ops.
        Case("reduce_min", "REDUCE_MIN",
             lambda: _fn_model(lambda x: tf.reduce_min(x, -1, keepdims=True), vec)),
        Case("reduce_prod", "REDUCE_PROD",
             lambda: _fn_model(lambda x: tf.reduce_prod(x, -1, keepdims=True), (8,)),
             low=0.5, high=1.5),
        Case("arg_min", "ARG_MIN", lambda: _fn_model(
            lambda x: tf.cast(tf.argmin(x, -1, output_type=tf.int32), tf.float32), vec)),
        Case("cumsum", "CUMSUM", lambda: _fn_model(lambda x: tf.cumsum(x, -1), vec)),
        Case("slice", "SLICE", lambda: _fn_model(lambda x: tf.slice(x, [0, 3], [-1, 20]), vec)),
        Case("gather", "GATHER", lambda: _fn_model(lambda x: tf.gather(x, [5, 1, 9, 3], axis=-1),
                                                   vec)),
        Case("unpack", "UNPACK", lambda: _fn_model(
            lambda x: tf.add_n(tf.unstack(tf.reshape(x, (-1, 4, 16)), axis=1)), vec)),
        Case("expand_dims", "EXPAND_DIMS",
             lambda: _fn_model(lambda x: tf.expand_dims(x, 1) * 1.5, vec)),
        Case("squeeze", "SQUEEZE", lambda: _fn_model(lambda x: tf.squeeze(x, 1), (1, 64))),
        Case("broadcast_to", "BROADCAST_TO", lambda: _fn_model(
            lambda x: tf.broadcast_to(tf.reshape(x, (-1, 1, 64)), (1, 3, 64)), vec)),
        Case("depth_to_space", "DEPTH_TO_SPACE",
             lambda: _fn_model(lambda x: tf.nn.depth_to_space(x, 2), img)),
        Case("space_to_depth", "SPACE_TO_DEPTH",
             lambda: _fn_model(lambda x: tf.nn.space_to_depth(x, 2), img)),
        Case("mirror_pad", "MIRROR_PAD", lambda: _fn_model(
            lambda x: tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"), img)),
        Case("cropping2d", "STRIDED_SLICE", lambda: _layer_model(layer.Cropping2D(1), img)),
        Case("dilated_conv_2d", "SPACE_TO_BATCH_ND", lambda: _layer_model(
            layer.Conv2D(8, 3, dilation_rate=2, padding="same"), img)),
        # Keras layers of sequence and attention models, and their pooling.
        Case("conv_1d", "CONV_2D", lambda: _layer_model(layer.Conv1D(8, 3), (16, 4))),
        Case("max_pool_1d", "MAX_POOL_2D", lambda: _layer_model(layer.MaxPooling1D(2), (16, 4))),
        Case("average_pool_1d", "AVERAGE_POOL_2D",
             lambda: _layer_model(layer.AveragePooling1D(2), (16, 4))),
        Case("global_average_pool_1d", "MEAN",
             lambda: _layer_model(layer.GlobalAveragePooling1D(), (16, 4))),
        Case("global_max_pool_1d", "REDUCE_MAX",
             lambda: _layer_model(layer.GlobalMaxPooling1D(), (16, 4))),
        Case("layer_normalization", "(keras LayerNormalization)",
             lambda: _layer_model(layer.LayerNormalization(), (8, 16))),
        Case("multi_head_attention", "(keras MultiHeadAttention)",
             lambda: _attention_model(), low=-2.0, high=2.0),
        Case("dot_attention", "(keras Attention)", lambda: _attention_model(dot=True)),
        Case("dense_on_sequence", "FULLY_CONNECTED",
             lambda: _layer_model(layer.Dense(8), (8, 16))),
        Case("lstm", "UNIDIRECTIONAL_SEQUENCE_LSTM",
             lambda: _layer_model(layer.LSTM(8), (10, 4)), low=-1.0, high=1.0),
        Case("reshape_bool", "RESHAPE", lambda: _fn_model(
            lambda x: tf.where(tf.reshape(x > 0.5, (-1, 8, 8)), 1.0, 0.0), vec)),
        Case("embedding", "GATHER", lambda: _token_model(layer.Embedding(50, 8)),
             low=0.0, high=49.0),
        # Integer arithmetic on token ids, one op each (Embedding's index handling holds them).
        Case("add_int32", "ADD", lambda: _token_model(_on_ids(lambda i: i + 3)), high=49.0),
        Case("less_int32", "LESS", lambda: _token_model(_on_ids(lambda i: i < 25)), high=49.0),
        Case("concatenation_int32", "CONCATENATION", lambda: _token_model(
            _on_ids(lambda i: tf.concat([i, i], axis=1))), high=49.0),
        Case("gather_int32", "GATHER", lambda: _token_model(
            _on_ids(lambda i: tf.gather(i, [0, 3, 5], axis=1))), high=49.0),
    ]
    acts = [Case(f"activation_{cls.lower()}", "(edgepipe activation)",
                 lambda cls=cls: _activation_model(cls))
            for cls in ("Swish", "PiecewiseLinear", "Step", "HardSwish", "Mish", "GeluTanh")]
    return one + acts


# ---------------------------------------------------------------------------------------------
# Conversion.

def _error_line(exc: Exception) -> str:
    """The informative line of a converter error, without `loc(...)` noise."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    picked = [ln for ln in lines if "error:" in ln] or lines[-1:] or [type(exc).__name__]
    line = picked[0]
    line = re.sub(r"^.*?error:\s*", "", line)
    line = re.sub(r"loc\((?:[^()]|\([^()]*\))*\):\s*", "", line)
    return line[:300]


def convert(model, mode: str, rng: np.random.Generator, low: float, high: float,
            fixed_batch: bool = False) -> bytes:
    """`model` converted exactly as the pipeline converts it (converters/convert.py: a
    SavedModel export, then the mode's settings), so that the table measures what edgepipe
    makes. `<mode>-floatio` is `<mode>` with float input and output, a variant the pipeline
    does not make: only the I/O types differ. `fixed_batch` (the API checks only) converts the
    Keras model directly, with the same settings: the export makes every batch size dynamic."""
    import tensorflow as tf

    from edgepipe.converters.convert import configure, make_converter, temporary_export
    from edgepipe.converters.modes import QuantMode

    base = QuantMode(mode.removesuffix("-floatio"))
    # Keyed by input name: a list is matched to the .tflite file's input order, which for a
    # two-input Keras model is not the Keras order (it changes with the auto-generated names).
    shapes = {t.name: (tuple(1 if d is None else d for d in t.shape), _dtype(t))
              for t in model.inputs}

    def representative():
        for _ in range(REPRESENTATIVE_SAMPLES):
            yield {name: rng.uniform(low, high, s).astype(dtype)
                   for name, (s, dtype) in shapes.items()}

    with contextlib.ExitStack() as stack:
        if fixed_batch:
            conv = configure(tf.lite.TFLiteConverter.from_keras_model(model), base,
                             representative)
        else:
            saved_model = stack.enter_context(temporary_export(model))
            conv = make_converter(saved_model, base, representative)
        if mode.endswith("-floatio"):
            conv.inference_input_type = conv.inference_output_type = tf.float32
        return conv.convert()


# ---------------------------------------------------------------------------------------------
# Running one converted model.

@dataclass
class Outcome:
    case: str
    op: str
    mode: str
    status: str  # runs, convert_fail, load_fail, invoke_fail, crash, op_absent
    message: str = ""
    ops: list = field(default_factory=list)  # [(name, kernel_type, types)] in model order
    failed_op: tuple | None = None  # (name, kernel_type) the error names
    # Largest difference over all outputs and invocations, in quantization steps of the output
    # (integer outputs, or float outputs that a final DEQUANTIZE makes), else absolute.
    diff_unit: str = ""
    vs_reference: float | None = None  # tflm vs litert's reference kernels
    vs_keras: float | None = None  # tflm vs the Keras model on the same (dequantized) inputs
    reference_vs_keras: float | None = None
    reference: str = ""  # "runs" or why litert's reference kernels did not run the model
    model_bytes: int = 0
    default_arena_ok: bool | None = None
    arena_min: int | None = None
    arena_recorded: int | None = None  # "Arena allocation total" from print_allocations
    arena_probes: dict = field(default_factory=dict)  # probe exit code -> count
    # [op, kernel type, largest TFLM-vs-reference difference in output steps, invocations]
    # for the ops that got identical inputs on both runtimes (`op_differences`)
    kernel_steps: list = field(default_factory=list)
    kernel_note: str = ""  # why no op was compared, when keeping every tensor failed
    io: list = field(default_factory=list)
    model_path: str = ""
    inputs_path: str = ""


def _dtype(tensor) -> str:
    """A Keras input's dtype as numpy names it: float32, or int32 for token ids."""
    return str(getattr(tensor.dtype, "name", tensor.dtype))


def _inputs_for(model, rng, low, high, sweep: bool = False) -> tuple[dict, list]:
    """Uniform inputs in [low, high]; `sweep`: the first invocation's are every value of the
    input's integer type in turn (every float from low to high for a float input)."""
    arrays, batches = {}, []
    ins = model.input_tensors()
    for i in range(INVOCATIONS):
        batch = []
        for k, t in enumerate(ins):
            x = rng.uniform(low, high, t.shape).astype(np.float32)
            if sweep and i == 0 and t.dtype in ("int8", "int16"):
                info = np.iinfo(t.dtype)
                x = np.resize(np.arange(info.min, info.max + 1), t.shape).astype(t.dtype)
            elif sweep and i == 0:
                x = np.linspace(low, high, x.size).reshape(x.shape).astype(t.dtype)
            elif t.dtype in ("int8", "int16"):
                info = np.iinfo(t.dtype)
                q = np.round(x / t.scales[0]) + t.zero_points[0]
                x = np.clip(q, info.min, info.max).astype(t.dtype)
            else:
                x = x.astype(t.dtype)
            arrays[f"x{i}_{k}"] = x
            batch.append(x)
        batches.append(batch)
    arrays["n_in"] = np.array(len(ins))
    arrays["n_out"] = np.array(len(model.output_tensors()))
    arrays["n_tensors"] = np.array(len(model.subgraphs[0].tensors))
    return arrays, batches


def _split_stages(log: str) -> dict[str, str]:
    stages, current = {}, "start"
    for line in log.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK):].strip()
            continue
        if line.strip():
            stages.setdefault(current, []).append(line.rstrip())
    return {k: "\n".join(v) for k, v in stages.items()}


_NODE = re.compile(r"Node (\w+) \(number (\d+)\w?\) failed to (prepare|invoke)")
_MISSING = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


def _failed_op(text: str, ops: list) -> tuple | None:
    m = _MISSING.search(text)
    if m:
        types = [o[1] for o in ops if o[0] == m.group(1)]
        return (m.group(1), types[0] if types else "")
    m = _NODE.search(text)
    if m:
        number = int(m.group(2))
        if number < len(ops) and ops[number][0] == m.group(1):
            return (m.group(1), ops[number][1])
        return (m.group(1), "")
    return None


def _tflm_message(text: str) -> str:
    """The interpreter's own lines, without allocator chatter, joined on one line."""
    keep = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith("[RecordingMicroAllocator]")]
    return " | ".join(keep)[:400]


def _worker_cmd(*args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *map(str, args)]


def run_model(data: bytes, parsed, case: Case, rng, workdir: Path, tag: str, truth,
              outcome: Outcome) -> None:
    model_path = workdir / f"{tag}.tflite"
    model_path.write_bytes(data)
    arrays, batches = _inputs_for(parsed, rng, case.low, case.high, case.sweep)
    inputs_path = workdir / f"{tag}.inputs.npz"
    np.savez(inputs_path, **arrays)
    outcome.model_path, outcome.inputs_path = str(model_path), str(inputs_path)
    result_path = workdir / f"{tag}.result.json"
    tensors_path = Path(str(result_path) + ".tensors.npz")
    for stale in (result_path, tensors_path):  # a crashed worker must not leave old ones behind
        stale.unlink(missing_ok=True)
    arena_size = None
    for attempt in range(2):
        args = ["--worker", model_path, inputs_path, result_path]
        if arena_size:
            args += ["--arena-size", arena_size]
        proc = subprocess.run(_worker_cmd(*args), capture_output=True, text=True,
                              timeout=WORKER_TIMEOUT_S, cwd=REPO)
        stages = _split_stages(proc.stderr)
        if f"{MARK}tensors" in proc.stderr and not tensors_path.exists():  # died keeping them
            outcome.kernel_note = (f"keeping every tensor: worker exited {proc.returncode}: "
                                   f"{_tflm_message(stages.get('tensors', ''))[:200]}")
        elif proc.returncode != 0 or not result_path.exists():
            outcome.status = "crash"
            stage = [s for s in ("load", "invoke", "allocations", "reference") if s in stages]
            outcome.message = (f"worker exited {proc.returncode} during "
                               f"{stage[-1] if stage else 'start'}: "
                               f"{_tflm_message(proc.stderr.split(MARK)[-1])}")
            return
        result = json.loads(result_path.read_text())
        outcome.reference = result.get("reference", "")
        if attempt == 0:
            outcome.default_arena_ok = result["status"] == "runs"
        stage_text = stages.get(result["stage"] or "", "")
        too_small = re.search("allocate|resize buffer", stage_text, re.I)
        if (result["status"] == "load_fail" and too_small and attempt == 0
                and "Didn't find op" not in stage_text):
            arena_size = 4 << 20  # the default (10x the model size) was too small: retry
            continue
        break
    outcome.status = result["status"]
    outcome.io = [result.get("input_details"), result.get("output_details")]
    m = re.search(r"Arena allocation total (\d+) bytes", stages.get("allocations", ""))
    outcome.arena_recorded = int(m.group(1)) if m else None
    if result["status"] != "runs":
        outcome.message = (_tflm_message(stage_text) + " | " + result["error"]).strip(" |")
        outcome.failed_op = _failed_op(stage_text, outcome.ops)
        return
    saved = np.load(str(result_path) + ".npz")
    compare(outcome, parsed, saved, batches, truth)
    if tensors_path.exists():
        outcome.kernel_steps = op_differences(parsed, np.load(tensors_path))


def op_differences(parsed, tensors) -> list:
    """[op, kernel type, largest difference, invocations compared] for each op of subgraph 0
    with an int8 or int16 output that got the same inputs from both runtimes: what one
    invocation of TFLM's kernel and of the reference kernel differ by, in its output's
    quantization steps (raw integer units). An op whose inputs already differ is not compared:
    its difference would be its producers'."""
    from edgepipe.converters.tflm_ops import kernel_type

    graph = parsed.subgraphs[0]
    found: dict[tuple, list] = {}
    for i in range(INVOCATIONS):
        def pair(t, i=i):
            a, b = tensors.get(f"tflmT{i}_{t}"), tensors.get(f"refT{i}_{t}")
            return (a, b) if a is not None and b is not None and a.shape == b.shape else None

        for op in graph.operators:
            ins = [t for t in op.inputs if t >= 0 and not graph.tensors[t].buffer_bytes]
            outs = [t for t in op.outputs if t >= 0]
            if not outs or any(graph.tensors[t].dtype not in ("int8", "int16") for t in outs):
                continue
            pairs = [pair(t) for t in ins + outs]
            if any(p is None for p in pairs) or any(not np.array_equal(*p)
                                                    for p in pairs[:len(ins)]):
                continue
            steps = max(int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
                        if a.size else 0 for a, b in pairs[len(ins):])
            types = ([graph.tensors[t].dtype for t in op.inputs if t >= 0],
                     [graph.tensors[t].dtype for t in outs])
            key = (op.name, kernel_type(op.name, *types))
            worst, count = found.get(key, (0, 0))
            found[key] = (max(worst, steps), count + 1)
    return [[op, ktype, worst, count] for (op, ktype), (worst, count) in sorted(found.items())]


def _real(q: np.ndarray, tensor) -> np.ndarray:
    """Integer tensor values to the real numbers they stand for; floats unchanged."""
    if tensor.dtype in ("int8", "int16") and tensor.scales:
        return (q.astype(np.float64) - tensor.zero_points[0]) * tensor.scales[0]
    return q.astype(np.float64)


def compare(outcome: Outcome, parsed, saved, batches, truth) -> None:
    """tflm vs litert's reference kernels vs the Keras model, in output quantization steps."""
    ins, outs = parsed.input_tensors(), parsed.output_tensors()
    steps = _output_steps(parsed)
    keras_outs = [truth([_real(x, t) for x, t in zip(batch, ins, strict=True)])
                  for batch in batches]
    worst = {"vs_reference": None, "vs_keras": None, "reference_vs_keras": None}
    # The converter may order outputs differently from Keras (SPLIT's two halves come out
    # swapped): pair each output with a Keras output of its size, and when several fit, with
    # the one nearest to what the interpreters computed on the first inputs.
    sizes = [np.asarray(o).size for o in keras_outs[0]]
    pairing, used = [], set()
    for k, tensor in enumerate(outs):
        size = int(np.prod(tensor.shape))
        fits = [j for j, n in enumerate(sizes) if n == size and j not in used]
        got = saved.get(f"ref0_{k}", saved.get(f"tflm0_{k}"))
        if len(fits) > 1 and got is not None:
            real = _real(got, tensor).ravel()
            fits.sort(key=lambda j: float(np.max(np.abs(
                np.asarray(keras_outs[0][j], np.float64).ravel() - real))))
        j = fits[0] if fits else None
        used.add(j)
        pairing.append(j)

    def note(key, a, b, step):
        if a.shape != b.shape:
            return
        d = float(np.max(np.abs(a - b))) / step if a.size else 0.0
        worst[key] = max(d, worst[key] or 0.0)

    for k, tensor in enumerate(outs):
        step = float(tensor.scales[0]) if tensor.scales else steps[k]
        if tensor.dtype in ("int8", "int16"):
            info = np.iinfo(tensor.dtype)
            lo, hi = _real(np.array(info.min), tensor), _real(np.array(info.max), tensor)
        else:
            lo, hi = -np.inf, np.inf
        for i in range(INVOCATIONS):
            j = pairing[k]
            # the integer range saturates: that is the quantized model's right answer
            want = None if j is None else np.clip(np.asarray(keras_outs[i][j], np.float64),
                                                   lo, hi)
            tflm = _real(saved[f"tflm{i}_{k}"], tensor) if f"tflm{i}_{k}" in saved else None
            ref = _real(saved[f"ref{i}_{k}"], tensor) if f"ref{i}_{k}" in saved else None
            if tflm is not None and ref is not None:
                note("vs_reference", tflm, ref, step)
            if tflm is not None and want is not None:
                note("vs_keras", tflm, want.reshape(tflm.shape), step)
            if ref is not None and want is not None:
                note("reference_vs_keras", ref, want.reshape(ref.shape), step)
        outcome.diff_unit = "steps" if step != 1.0 or tensor.scales else "abs"
    for key, value in worst.items():
        setattr(outcome, key, None if value is None else round(value, 4))


def _output_steps(parsed) -> list[float]:
    """Per model output: 1.0, or the quantization step of the tensor a final DEQUANTIZE reads
    (so float outputs of an int8 model with float I/O compare in quantization steps)."""
    main = parsed.subgraphs[0]
    steps = []
    for index in main.outputs:
        step = 1.0
        for op in main.operators:
            if index in op.outputs and op.name == "DEQUANTIZE":
                src = parsed.inputs_of(op)[0]
                if src.scales and src.dtype in ("int8", "int16"):
                    step = float(src.scales[0])
        steps.append(step)
    return steps


def smallest_arena(outcome: Outcome) -> None:
    """Binary search on arena_size, one child process per probe: a too small arena can kill the
    interpreter's process (SIGSEGV) instead of raising. Starts near print_allocations' total."""

    def ok(size: int) -> bool:
        proc = subprocess.run(_worker_cmd("--probe", outcome.model_path, outcome.inputs_path,
                                          size),
                              capture_output=True, timeout=WORKER_TIMEOUT_S, cwd=REPO)
        code = str(proc.returncode)
        outcome.arena_probes[code] = outcome.arena_probes.get(code, 0) + 1
        return proc.returncode == 0

    guess = outcome.arena_recorded or 1024
    hi = guess + 512
    while not ok(hi):
        hi *= 2
        if hi > 64 << 20:
            return
    lo = max(0, guess - 64)
    if ok(lo):
        lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    outcome.arena_min = hi


def measure(case: Case, mode: str, workdir: Path, seed: int) -> Outcome:
    import keras

    from edgepipe.converters.tflite_file import read_tflite
    from edgepipe.converters.tflm_ops import kernel_type

    outcome = Outcome(case.name, case.op, mode, "runs")
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)  # the weights' initializers: same model on every run
    model = case.build()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Saved artifact at ..." and more
            data = convert(model, mode, rng, case.low, case.high)
    except Exception as e:  # ConverterError, RuntimeError, ValueError: all are findings
        outcome.status, outcome.message = "convert_fail", _error_line(e)
        return outcome
    parsed = read_tflite(data, f"{case.name}-{mode}")
    outcome.model_bytes = len(data)
    for op in parsed.operators:
        ins, outs = ([t.dtype for t in f(op)] for f in (parsed.inputs_of, parsed.outputs_of))
        outcome.ops.append((op.name, kernel_type(op.name, ins, outs), ins + outs))
    if case.op.isupper() and case.op not in {o[0] for o in outcome.ops}:
        outcome.status = "op_absent"
        outcome.message = f"the converter did not emit {case.op}"
    tag = f"{case.name}-{mode}"
    status = outcome.status
    run_model(data, parsed, case, rng, workdir, tag, _truth(model, parsed), outcome)
    if status == "op_absent" and outcome.status == "runs":
        outcome.status = "op_absent"  # ran, but without the op the case is about
    return outcome


def _truth(model, parsed):
    """The Keras model as a function of the .tflite inputs (in the file's order, as floats),
    giving a list of outputs. The file may order the inputs differently; its input tensors are
    named "serving_default_<Keras input name>:0"."""
    names = [t.name for t in parsed.input_tensors()]
    order = []
    for k_input in model.inputs:
        wanted = f"serving_default_{k_input.name}:0"
        order.append(names.index(wanted) if wanted in names else len(order))

    def run(xs):
        xs = [xs[i] for i in order]
        out = model(xs if len(xs) > 1 else xs[0], training=False)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    return run


# ---------------------------------------------------------------------------------------------
# Summaries.

def aggregate(outcomes: list[Outcome]) -> tuple[dict, dict]:
    """op -> kernel types that ran; (op, kernel type) -> [(case/mode, status, message)]."""
    runs: dict[str, set] = {}
    fails: dict[tuple, list] = {}
    for o in outcomes:
        if o.status in ("runs", "op_absent"):
            for name, ktype, _ in o.ops:
                runs.setdefault(name, set()).add(ktype)
        elif o.failed_op:
            fails.setdefault(o.failed_op, []).append((f"{o.case}/{o.mode}", o.status, o.message))
    return runs, fails


def kernel_differences(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """op -> kernel type -> the largest difference between one invocation of TFLM's kernel and
    of the reference kernel on the same inputs, in output steps, over every model measured
    (`op_differences`); an op/type that was compared and never differed has 0."""
    out: dict[str, dict[str, int]] = {}
    for o in outcomes:
        for op, ktype, steps, _ in o.kernel_steps:
            per_op = out.setdefault(op, {})
            per_op[ktype] = max(per_op.get(ktype, 0), int(steps))
    return out


def refused(runs: dict, fails: dict) -> dict[str, set]:
    """op -> the kernel types every model holding it failed in ("any": no kernel registered
    for the op). A type that ran in another model is restricted, not refused (TFLM_NOTES)."""
    from edgepipe.converters.tflm_ops import ANY_TYPE

    out: dict[str, set] = {}
    for (op, ktype), msgs in fails.items():
        if any(_MISSING.search(message) for _, _, message in msgs):
            out.setdefault(op, set()).add(ANY_TYPE)
        elif ktype not in runs.get(op, ()):
            out.setdefault(op, set()).add(ktype)
    return out


def _short_reason(message: str) -> str:
    m = _MISSING.search(message)
    if m:
        return f"no kernel registered for {m.group(1)} (Didn't find op for builtin opcode)"
    lines = [p.strip() for p in message.split("|")]
    checks = [p for p in lines if re.search(r"\.cc:\d+", p)]
    if checks:
        return re.sub(r"^.*?kernels/", "", checks[0])
    return lines[0] if lines else message


def inaccurate(outcomes: list[Outcome], reference: bool = False) -> dict[str, dict[str, str]]:
    """op -> kernel type -> how far off, where tflm ran a one-op model but its output is more
    than 2 quantization steps from the Keras model while litert's reference kernels ran it
    within 2. `reference`: the other way round (the reference kernel is the wrong one)."""
    found: dict[str, dict[str, str]] = {}
    for o in outcomes:
        if o.status not in RAN or not o.op.isupper() or o.diff_unit != "steps":
            continue
        mine, ref = o.vs_keras, o.reference_vs_keras
        if reference:
            mine, ref = ref, mine
        if mine is None or mine <= 2:
            continue
        # Wrong only against a reference that ran and is close: without one, a far output
        # may be the quantized model's own (a comparison flipped by rounding, an int16 output
        # whose steps are finer than its int8 weights), not the kernel's doing.
        if ref is None or ref > 2:
            continue
        other = "tflite-micro" if reference else "litert reference kernels"
        for name, ktype, _ in o.ops:
            if name == o.op:
                found.setdefault(name, {})[ktype] = (
                    f"{o.case}/{o.mode}: output {mine:.3g} steps from Keras ({other}: "
                    f"{ref:.3g})")
    return found


# Causes read in tflite-micro's source (tensorflow/lite/micro/kernels/), added to the measured
# symptom. Keep each to what the source shows; delete one when a new version measures clean.
CAUSES = {
    "RELU6": "its int8/int16 Prepare (activations_common.cc) computes the clamp bounds from the "
             "input's scale and zero point only and never requantizes to the output's, so the "
             "output is wrong whenever the converter gives RELU6 its own output parameters",
}


def tflm_notes(outcomes: list[Outcome], runs: dict, fails: dict) -> dict[str, str]:
    """Per op: the kernel types tflite-micro refused (and how), the restrictions seen (a type
    that ran in one model and failed in another), and kernels measured to compute wrong."""
    out: dict[str, list] = {}
    for (op, ktype), msgs in sorted(fails.items()):
        case, status, message = msgs[0]
        reason = _short_reason(message)
        when = {"load_fail": "fails at load", "invoke_fail": "fails at invoke"}.get(status, status)
        if "no kernel" in reason:
            label = reason
        elif ktype in runs.get(op, ()):
            label = f"{ktype} restricted: {case} {when} ({reason}), other {ktype} models run"
        else:
            label = f"{ktype} {when}: {reason}"
        out.setdefault(op, []).append(label)
    for op, per_type in inaccurate(outcomes).items():
        for ktype, text in per_type.items():
            cause = f"; {CAUSES[op]}" if op in CAUSES else ""
            out.setdefault(op, []).append(f"{ktype} runs but computes wrong: {text}{cause}")
    for op, per_type in inaccurate(outcomes, reference=True).items():
        for ktype, text in per_type.items():
            out.setdefault(op, []).append(f"{ktype}: litert's reference kernel is the one "
                                          f"that computes wrong: {text}")
    return {op: "; ".join(dict.fromkeys(v)) for op, v in sorted(out.items())}


_NOT_SUPPORTED = re.compile(r"not yet supported for op: '(\w+)'")


def converter_notes(outcomes: list[Outcome]) -> dict[str, str]:
    """Per op: what the pinned TensorFlow converter did with it (not tflite-micro's doing)."""
    out: dict[str, list] = {}
    for o in outcomes:
        if o.status == "convert_fail":
            m = _NOT_SUPPORTED.search(o.message)
            op = m.group(1) if m else o.op
            if op.isupper():
                out.setdefault(op, []).append(f"{o.mode} does not convert ({o.message[:140]})")
        if o.status == "op_absent" and o.op.isupper():
            out.setdefault(o.op, []).append(f"{o.mode}: the converter did not emit {o.op} for "
                                            f"{o.case}")
        if o.ops:  # converted, whether or not tflite-micro then ran it
            for name, ktype, _ in o.ops:
                if o.mode in ("int8", "int16x8") and ktype == "float32":
                    out.setdefault(name, []).append(
                        f"{o.mode} conversion leaves {name} in float32 between DEQUANTIZE and "
                        "QUANTIZE")
    return {op: "; ".join(dict.fromkeys(v)) for op, v in sorted(out.items())}


def print_table(outcomes: list[Outcome], file=sys.stdout) -> None:
    modes = list(dict.fromkeys(o.mode for o in outcomes))
    by = {(o.case, o.mode): o for o in outcomes}
    case_names = list(dict.fromkeys(o.case for o in outcomes))
    print("| case | op | " + " | ".join(modes) + " |", file=file)
    print("|---|---|" + "---|" * len(modes), file=file)
    for name in case_names:
        first = next(o for o in outcomes if o.case == name)
        cells = []
        for mode in modes:
            o = by.get((name, mode))
            if o is None:
                cells.append("")
                continue
            cell = o.status
            if o.status in ("runs", "op_absent"):
                kt = sorted({k for n, k, _ in o.ops if n == o.op})
                cell += f" [{','.join(kt)}]" if kt else ""
                unit = "st" if o.diff_unit == "steps" else ""
                for label, value in (("ref", o.vs_reference), ("keras", o.vs_keras)):
                    cell += f" {label}={value:.3g}{unit}" if value is not None else ""
                if o.vs_reference is None:
                    cell += " (litert ref: no run)"
                if o.arena_min:
                    cell += f" arena={o.arena_min}"
            else:
                cell += f": {_short_reason(o.message)[:90]}" if o.message else ""
            cells.append(cell)
        print(f"| {name} | {first.op} | " + " | ".join(cells) + " |", file=file)


def _dict_lines(name: str, mapping: dict[str, str]) -> list[str]:
    lines = [f"{name}: dict[str, str] = {{"]
    for op, text in sorted(mapping.items()):
        lines.append(f'    "{op}": (')
        for chunk in _wrap(text.replace("\\", "/").replace('"', "'"), 86):
            lines.append(f'        "{chunk}"')
        lines.append("    ),")
    lines.append("}")
    return lines


def render_block(runs: dict, refusals: dict, note_map: dict, conv_notes: dict, wrong: dict,
                 steps: dict, version: str, when: str) -> str:
    lines = ["# BEGIN GENERATED by tools/measure_tflm_ops.py: do not edit by hand",
             f'TFLM_VERSION = "{version}"',
             f'MEASURED = "{when}"']
    order = {t: i for i, t in enumerate(reversed(KERNEL_ORDER))}
    for name, table in (("TFLM_KERNELS", runs), ("TFLM_REFUSED", refusals),
                        ("TFLM_INACCURATE", wrong)):
        lines.append(f"{name}: dict[str, frozenset[str]] = {{")
        for op in sorted(table):
            types = sorted(table[op], key=lambda t: (order.get(t, -1), t), reverse=True)
            items = ", ".join(f'"{t}"' for t in types)
            lines.append(f'    "{op}": frozenset({{{items}}}),')
        lines.append("}")
    lines.append("TFLM_KERNEL_STEPS: dict[str, dict[str, int]] = {")
    for op in sorted(steps):
        items = ", ".join(f'"{t}": {n}' for t, n in sorted(steps[op].items()))
        lines.append(f'    "{op}": {{{items}}},')
    lines.append("}")
    lines += _dict_lines("TFLM_NOTES", note_map)
    lines += _dict_lines("CONVERTER_NOTES", conv_notes)
    lines.append("# END GENERATED")
    return "\n".join(lines) + "\n"


KERNEL_ORDER = ("float32", "float16", "int8", "hybrid", "int16")


def _wrap(text: str, width: int) -> list[str]:
    chunks = []
    while len(text) > width:
        cut = text.rfind(" ", 0, width)
        cut = width if cut <= 0 else cut + 1
        chunks.append(text[:cut])
        text = text[cut:]
    chunks.append(text)
    return chunks


def write_block(path: Path, block: str, version: str, when: str) -> None:
    """Replace the GENERATED block and the docstring's "Last measured:" line."""
    text = path.read_text()
    start = text.index("# BEGIN GENERATED")
    end = text.index("# END GENERATED")
    end = text.index("\n", end) + 1
    text = text[:start] + block + text[end:]
    text = re.sub(r"(?m)^Last measured: .*(\n[^\n]+)*$",
                  f"Last measured: tflite-micro {version},\n{when}.", text, count=1)
    path.write_text(text)


# ---------------------------------------------------------------------------------------------
# What the Python interpreter accepts: batch sizes, dynamic dims, dtypes.

def api_checks(workdir: Path) -> None:
    import keras

    models = {}
    rng = np.random.default_rng(0)
    for batch in (None, 1, 4):
        inp = keras.Input((8,), batch_size=batch)
        m = keras.Model(inp, keras.layers.Dense(3)(inp))
        with contextlib.redirect_stdout(io.StringIO()):
            models[f"dense_batch_{batch}"] = convert(m, "float32", rng, -4.0, 4.0, True)
            if batch == 4:
                models["dense_batch_4_int8"] = convert(m, "int8", rng, -4.0, 4.0, True)
    script = r'''
import sys, numpy as np
from tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(data)
shape = tuple(int(v) for v in it.get_input_details(0)["shape"])
print("input shape reported:", shape)
dtype = it.get_input_details(0)["dtype"]
print("input dtype reported:", np.dtype(dtype).name)
tries = {"as reported": np.zeros(shape, dtype),
         "batch 4": np.zeros((4, 8), dtype), "batch 2": np.zeros((2, 8), dtype),
         "float64": np.zeros(shape, np.float64), "int8": np.zeros(shape, np.int8)}
for name, x in tries.items():
    try:
        it.set_input(x, 0); it.invoke()
        print(f"  {name} {x.shape} {x.dtype}: runs, output {it.get_output(0).shape}")
    except Exception as e:
        print(f"  {name} {x.shape} {x.dtype}: {type(e).__name__}: {e}")
'''
    for name, data in models.items():
        path = workdir / f"{name}.tflite"
        path.write_bytes(data)
        from edgepipe.converters.tflite_file import read_tflite

        t = read_tflite(data).input_tensors()[0]
        print(f"{name}: file shape {t.shape}, shape_signature {t.shape_signature}")
        proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                              text=True, timeout=WORKER_TIMEOUT_S)
        print(proc.stdout.rstrip(), _tflm_message(proc.stderr))


# ---------------------------------------------------------------------------------------------

def tflm_version() -> str:
    out = subprocess.run([sys.executable, "-c",
                          "import tflite_micro; print(tflite_micro.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "edgepipe-tflm-ops",
                        help="folder for the models, inputs and results.json")
    parser.add_argument("--only", default="", help="comma-separated case names or op names")
    parser.add_argument("--modes", default="", help="comma-separated modes (default: per case)")
    parser.add_argument("--arena", action="store_true",
                        help="binary-search the smallest arena_size of every model that runs")
    parser.add_argument("--write", type=Path, help="rewrite the GENERATED block of this file")
    parser.add_argument("--api-checks", action="store_true",
                        help="only check batch sizes, -1 dims and input dtypes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-results", type=Path,
                        help="summarize (and --write) a results.json of an earlier run")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.write and only:
        parser.error("--write needs every case: drop --only")
    wanted = [m for m in args.modes.split(",") if m]
    selected, outcomes = [], []
    if args.from_results:  # summarize an earlier run: no TensorFlow, no measuring
        saved = json.loads(args.from_results.read_text())
        version, when = saved["tflite_micro"], saved["measured"]
        outcomes = [Outcome(**{**o, "ops": [tuple(x) for x in o["ops"]],
                               "failed_op": tuple(o["failed_op"]) if o["failed_op"] else None})
                    for o in saved["outcomes"]]
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        models_dir = args.out / "models"  # not a run folder: the tool's own --out
        models_dir.mkdir(exist_ok=True)
        if args.api_checks:
            api_checks(models_dir)
            return 0
        selected = [c for c in cases() if not only or c.name in only or c.op in only]
        if not selected:
            parser.error(f"no case matches --only {args.only!r}")
        version = tflm_version()
        when = (f"{datetime.date.today().isoformat()}, {platform.machine()} "
                f"{platform.system()}, Python {platform.python_version()}, "
                f"numpy {np.__version__}")
    for case in selected:
        for mode in (wanted or case.modes):
            o = measure(case, mode, models_dir, args.seed)
            outcomes.append(o)
            print(f"{case.name:24s} {mode:16s} {o.status:12s} {o.message[:120]}",
                  file=sys.stderr, flush=True)
    if args.arena and selected:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
            list(pool.map(smallest_arena, [o for o in outcomes if o.status in RAN]))
    runs, fails = aggregate(outcomes)
    note_map = tflm_notes(outcomes, runs, fails)
    conv_notes = converter_notes(outcomes)
    results = {"tflite_micro": version, "measured": when,
               "outcomes": [o.__dict__ for o in outcomes],
               "kernels": {k: sorted(v) for k, v in sorted(runs.items())},
               "refused": {k: sorted(v) for k, v in sorted(refused(runs, fails).items())},
               "notes": note_map,
               "kernel_steps": kernel_differences(outcomes),
               "converter_notes": conv_notes}
    if not args.from_results:
        out = args.out / "results.json"  # not a run folder: the tool's own --out
        out.write_text(json.dumps(results, indent=1, default=str))
    print_table(outcomes)
    print(f"\ntflite-micro {version}; {when}")
    if args.write:
        block = render_block(runs, refused(runs, fails), note_map, conv_notes,
                             inaccurate(outcomes), kernel_differences(outcomes), version, when)
        write_block(args.write, block, version, when)
        print(f"wrote the GENERATED block of {args.write}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        size = int(sys.argv[6]) if len(sys.argv) > 6 else None
        worker(sys.argv[2], sys.argv[3], sys.argv[4], size)
    elif len(sys.argv) > 1 and sys.argv[1] == "--probe":
        sys.exit(probe(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        sys.exit(main())
