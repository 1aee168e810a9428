"""Which TFLite builtin ops TFLite Micro runs on the host, and for which tensor types: measured.

Pure data and two small helpers; no TensorFlow, no interpreter. The op audit asks
`tflm_verdict(op_name, input_types, output_types)` for every operator of a `.tflite` file: it
runs, it is refused (measured), or it is unknown (no measured model held it: the runtime
decides).

Where the data comes from: `tools/measure_tflm_ops.py` builds a tiny Keras model around each op,
converts it with the pinned TensorFlow (float32; full int8 with int8 input and output and a
representative dataset; int16x8 with `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`
and int16 input and output; plus float16, dynamic-range and float-I/O variants for a few ops),
runs it in the `tflite-micro` Python interpreter and in ai-edge-litert's reference kernels (then
both again keeping every tensor, to compare each op on identical inputs), and writes the block
between the GENERATED markers below. The version, the date and the machine are in that block.
Nothing here was copied from documentation: an op/type pair is listed only when a model holding
it loaded and ran.

Last measured: tflite-micro 0.dev20261023182759-g8f6596d,
2026-12-03, x86_64 Linux, Python 3.11.7, numpy 2.4.6.

Regenerate (about 10 minutes on 2 cores with `--arena`, which also binary-searches the smallest
working `arena_size` of every model; the table and all numbers land in `--out`/results.json):

    .venv/bin/pip install "tflite-micro==<version>"
    .venv/bin/python tools/measure_tflm_ops.py --arena --write converters/tflm_ops.py

What is here:
- `TFLM_KERNELS`: op -> the tensor types (named by `kernel_type` below: the one type that decides
  which kernel runs) for which a model holding that op loaded and ran in tflite-micro.
- `TFLM_REFUSED`: op -> the types for which every model holding that op failed to load or run
  ("any": no kernel is registered for the op).
- `TFLM_INACCURATE`: op -> types for which it ran but its output was more than 2 quantization
  steps from the Keras model while litert's reference kernels were not.
- `TFLM_KERNEL_STEPS`: op -> type -> the largest difference between TFLM's kernel and the
  reference kernel over the invocations where both got the same inputs (every tensor kept), in
  steps of the op's output; 0: compared and never different. The bound between `tflm` and
  `host-ref` is derived from these (pipeline/kernel_bounds.py).
- `TFLM_NOTES`: why an op or type did not run (the interpreter's own message), or how it is wrong.
- `CONVERTER_NOTES`: what the pinned TensorFlow converter did with an op (no int16x8 version,
  left in float inside an int8 model): not tflite-micro's doing, but it decides what reaches it.
"""

from __future__ import annotations

# The types a kernel is keyed by, from the most to the least specific. "hybrid" is a float32 op
# with int8 weights (dynamic-range quantization); "float16" is a float16 tensor feeding an op
# (the DEQUANTIZE at the front of a float16-weights model).
KERNEL_TYPES = ("int16", "hybrid", "int8", "float16", "float32")
ANY_TYPE = "any"  # in TFLM_REFUSED: no kernel is registered for the op, in any type
_EDGE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def kernel_type(op: str, inputs, outputs) -> str:
    """The tensor type an op instance computes in, from the types of its inputs and outputs.

    int16x8 ops hold int16 activations next to int8 weights and int64 biases: "int16". An int8
    op holds int8 and int32 (bias, shape) tensors: "int8". QUANTIZE and DEQUANTIZE are named by
    their integer side. A float op with int8 weights is "hybrid". Ops on int32 or bool tensors
    only are named by their output's type (SELECT_V2 of int32 values: int32), or by their first
    input's when the output is bool (a comparison of int32s: int32; a RESHAPE of bools: bool).
    """
    types = set(inputs) | set(outputs)
    if "int16" in types:
        return "int16"
    if "int8" in types:
        if "float32" in types and op not in _EDGE_OPS:
            return "hybrid"
        return "int8"
    for name in ("float16", "float32"):
        if name in types:
            return name
    data = [t for t in outputs if t != "bool"] or list(inputs)
    return next(iter(data), "unknown")


RUNS, WRONG, REFUSES, UNKNOWN = "runs", "wrong", "refuses", "unknown"


def tflm_verdict(op: str, inputs, outputs) -> tuple[str, str]:
    """(RUNS, ""), (WRONG, why), (REFUSES, why) or (UNKNOWN, why) for `op` with inputs and
    outputs of these types. WRONG: it runs, but was measured to compute it wrong.

    REFUSES only for what was measured: every model holding the op in this kernel type failed
    to load or run in tflite-micro. An op or type no measured model held is UNKNOWN, never a
    refusal: the table cannot say, and the runtime decides."""
    ktype = kernel_type(op, inputs, outputs)
    note = TFLM_NOTES.get(op)
    if ktype in TFLM_INACCURATE.get(op, ()):
        return WRONG, (f"tflite-micro {TFLM_VERSION} runs {op} on {ktype} but was measured to "
                       f"compute it wrong ({note})")
    if ktype in TFLM_KERNELS.get(op, ()):
        return RUNS, ""
    refused = TFLM_REFUSED.get(op, frozenset())
    if ANY_TYPE in refused or ktype in refused:
        return REFUSES, f"tflite-micro {TFLM_VERSION}: {note}"
    ran = TFLM_KERNELS.get(op)
    measured = (f"it was measured to run {op} on {', '.join(sorted(ran))}" if ran
                else f"no measured model held {op}")
    return UNKNOWN, (f"{op} on {ktype} was not measured on tflite-micro {TFLM_VERSION} "
                     f"({measured}): TFLite Micro decides when it runs; add a case to "
                     "tools/measure_tflm_ops.py to know before")


# BEGIN GENERATED by tools/measure_tflm_ops.py: do not edit by hand
TFLM_VERSION = "0.dev20261023182759-g8f6596d"
MEASURED = "2026-12-03, x86_64 Linux, Python 3.11.7, numpy 2.4.6"
TFLM_KERNELS: dict[str, frozenset[str]] = {
    "ABS": frozenset({"float32", "int8", "int16"}),
    "ADD": frozenset({"float32", "int8", "int16", "int32"}),
    "ADD_N": frozenset({"float32"}),
    "ARG_MAX": frozenset({"float32", "int8"}),
    "ARG_MIN": frozenset({"float32", "int8"}),
    "AVERAGE_POOL_2D": frozenset({"float32", "int8", "int16"}),
    "BATCH_MATMUL": frozenset({"float32", "int8", "int16"}),
    "BATCH_TO_SPACE_ND": frozenset({"float32", "int8"}),
    "BROADCAST_TO": frozenset({"float32", "int8", "int16"}),
    "CAST": frozenset({"float32"}),
    "CEIL": frozenset({"float32"}),
    "CONCATENATION": frozenset({"float32", "int8", "int16", "int32"}),
    "CONV_2D": frozenset({"float32", "int8", "int16"}),
    "COS": frozenset({"float32"}),
    "CUMSUM": frozenset({"float32"}),
    "DEPTHWISE_CONV_2D": frozenset({"float32", "int8", "int16"}),
    "DEPTH_TO_SPACE": frozenset({"float32", "int8"}),
    "DEQUANTIZE": frozenset({"int8", "int16"}),
    "DIV": frozenset({"float32", "int8"}),
    "ELU": frozenset({"float32"}),
    "EQUAL": frozenset({"float32", "int8"}),
    "EXP": frozenset({"float32"}),
    "EXPAND_DIMS": frozenset({"float32", "int8", "int16"}),
    "FLOOR": frozenset({"float32"}),
    "FLOOR_DIV": frozenset({"float32"}),
    "FLOOR_MOD": frozenset({"float32"}),
    "FULLY_CONNECTED": frozenset({"float32", "int8", "int16"}),
    "GATHER": frozenset({"float32", "int8"}),
    "GREATER": frozenset({"float32", "int8"}),
    "GREATER_EQUAL": frozenset({"float32", "int8"}),
    "HARD_SWISH": frozenset({"float32", "int8"}),
    "L2_NORMALIZATION": frozenset({"float32", "int8"}),
    "LEAKY_RELU": frozenset({"float32", "int8", "int16"}),
    "LESS": frozenset({"float32", "int8", "int32"}),
    "LESS_EQUAL": frozenset({"float32", "int8"}),
    "LOG": frozenset({"float32"}),
    "LOGICAL_AND": frozenset({"bool"}),
    "LOGICAL_OR": frozenset({"bool"}),
    "LOGISTIC": frozenset({"float32", "int8", "int16"}),
    "LOG_SOFTMAX": frozenset({"float32", "int8"}),
    "MAXIMUM": frozenset({"float32", "int8", "int16"}),
    "MAX_POOL_2D": frozenset({"float32", "int8", "int16"}),
    "MEAN": frozenset({"float32", "int8", "int16"}),
    "MINIMUM": frozenset({"float32", "int8", "int16"}),
    "MIRROR_PAD": frozenset({"float32", "int8"}),
    "MUL": frozenset({"float32", "int8", "int16"}),
    "NEG": frozenset({"float32"}),
    "NOT_EQUAL": frozenset({"float32"}),
    "PACK": frozenset({"float32", "int8", "int16", "int32"}),
    "PAD": frozenset({"float32", "int8", "int16"}),
    "PRELU": frozenset({"float32", "int8"}),
    "QUANTIZE": frozenset({"int8", "int16"}),
    "REDUCE_MAX": frozenset({"float32", "int8"}),
    "REDUCE_MIN": frozenset({"float32", "int8"}),
    "RELU": frozenset({"float32", "int8", "int16"}),
    "RELU6": frozenset({"float32", "int8", "int16"}),
    "RESHAPE": frozenset({"float32", "int8", "int16", "bool"}),
    "RESIZE_BILINEAR": frozenset({"float32", "int8"}),
    "RESIZE_NEAREST_NEIGHBOR": frozenset({"float32", "int8", "int16"}),
    "ROUND": frozenset({"float32"}),
    "RSQRT": frozenset({"float32", "int8", "int16"}),
    "SELECT_V2": frozenset({"float32", "int8"}),
    "SHAPE": frozenset({"float32", "int8", "int16"}),
    "SIN": frozenset({"float32"}),
    "SLICE": frozenset({"float32", "int8", "int16"}),
    "SOFTMAX": frozenset({"float32", "int8", "int16"}),
    "SPACE_TO_BATCH_ND": frozenset({"float32", "int8"}),
    "SPACE_TO_DEPTH": frozenset({"float32", "int8"}),
    "SPLIT": frozenset({"float32", "int8", "int16"}),
    "SPLIT_V": frozenset({"float32", "int8", "int16"}),
    "SQRT": frozenset({"float32"}),
    "SQUARE": frozenset({"float32"}),
    "SQUARED_DIFFERENCE": frozenset({"float32", "int8", "int16"}),
    "STRIDED_SLICE": frozenset({"float32", "int8", "int16", "int32"}),
    "SUB": frozenset({"float32", "int8", "int16"}),
    "SUM": frozenset({"float32", "int8", "int16"}),
    "TANH": frozenset({"float32", "int8", "int16"}),
    "TRANSPOSE": frozenset({"float32", "int8", "int16"}),
    "TRANSPOSE_CONV": frozenset({"float32", "int8", "int16"}),
    "UNPACK": frozenset({"float32", "int8"}),
}
TFLM_REFUSED: dict[str, frozenset[str]] = {
    "CONV_2D": frozenset({"hybrid"}),
    "DEQUANTIZE": frozenset({"float16"}),
    "EXP": frozenset({"int8", "int16"}),
    "FULLY_CONNECTED": frozenset({"hybrid"}),
    "GATHER": frozenset({"int16", "int32"}),
    "GELU": frozenset({"any"}),
    "LOG": frozenset({"int8", "int16"}),
    "MIRROR_PAD": frozenset({"int16"}),
    "POW": frozenset({"any"}),
    "REDUCE_MAX": frozenset({"int16"}),
    "REDUCE_MIN": frozenset({"int16"}),
    "REDUCE_PROD": frozenset({"any"}),
    "RELU_N1_TO_1": frozenset({"any"}),
    "RESIZE_BILINEAR": frozenset({"int16"}),
    "SELECT_V2": frozenset({"int32"}),
    "SIGN": frozenset({"any"}),
    "SPACE_TO_BATCH_ND": frozenset({"int16"}),
    "SQRT": frozenset({"int8"}),
    "TILE": frozenset({"any"}),
}
TFLM_INACCURATE: dict[str, frozenset[str]] = {
    "RELU6": frozenset({"int8"}),
    "SPACE_TO_BATCH_ND": frozenset({"int8"}),
}
TFLM_KERNEL_STEPS: dict[str, dict[str, int]] = {
    "ABS": {"int16": 0, "int8": 0},
    "ADD": {"int16": 0, "int8": 0},
    "AVERAGE_POOL_2D": {"int16": 0, "int8": 0},
    "BATCH_MATMUL": {"int16": 0, "int8": 0},
    "BROADCAST_TO": {"int16": 0, "int8": 0},
    "CONCATENATION": {"int16": 0, "int8": 0},
    "CONV_2D": {"int16": 0, "int8": 0},
    "DEPTHWISE_CONV_2D": {"int16": 0, "int8": 0},
    "DIV": {"int8": 0},
    "EXPAND_DIMS": {"int16": 0, "int8": 0},
    "FULLY_CONNECTED": {"int16": 1, "int8": 1},
    "GATHER": {"int8": 0},
    "HARD_SWISH": {"int8": 0},
    "L2_NORMALIZATION": {"int8": 0},
    "LEAKY_RELU": {"int16": 0, "int8": 0},
    "LOGISTIC": {"int16": 0, "int8": 0},
    "LOG_SOFTMAX": {"int8": 0},
    "MAXIMUM": {"int16": 0, "int8": 0},
    "MAX_POOL_2D": {"int16": 0, "int8": 0},
    "MEAN": {"int16": 0, "int8": 0},
    "MINIMUM": {"int16": 0, "int8": 0},
    "MIRROR_PAD": {"int8": 0},
    "MUL": {"int16": 0, "int8": 0},
    "PACK": {"int16": 0, "int8": 0},
    "PAD": {"int16": 0, "int8": 0},
    "PRELU": {"int8": 0},
    "QUANTIZE": {"int16": 0, "int8": 0},
    "REDUCE_MAX": {"int8": 0},
    "REDUCE_MIN": {"int8": 0},
    "RELU": {"int16": 0, "int8": 0},
    "RELU6": {"int16": 0, "int8": 127},
    "RESHAPE": {"int16": 0, "int8": 0},
    "RESIZE_BILINEAR": {"int8": 0},
    "RESIZE_NEAREST_NEIGHBOR": {"int16": 0, "int8": 0},
    "RSQRT": {"int16": 544, "int8": 0},
    "SELECT_V2": {"int8": 0},
    "SLICE": {"int16": 0, "int8": 0},
    "SOFTMAX": {"int16": 0, "int8": 0},
    "SPACE_TO_DEPTH": {"int8": 0},
    "SPLIT": {"int16": 0, "int8": 0},
    "SPLIT_V": {"int16": 0, "int8": 0},
    "SQUARED_DIFFERENCE": {"int8": 0},
    "STRIDED_SLICE": {"int16": 0, "int8": 0},
    "SUB": {"int16": 0, "int8": 0},
    "SUM": {"int16": 36608, "int8": 110},
    "TANH": {"int16": 0, "int8": 0},
    "TRANSPOSE": {"int16": 0, "int8": 0},
    "TRANSPOSE_CONV": {"int16": 0, "int8": 0},
    "UNPACK": {"int8": 0},
}
TFLM_NOTES: dict[str, str] = {
    "ARG_MAX": (
        "float32 restricted: arg_max/float32 fails at invoke (Only int32_t are supported "
        "currently, got INT64.), other float32 models run; int8 restricted: arg_max/int8 fails "
        "at invoke (Only int32_t are supported currently, got INT64.), other int8 models run"
    ),
    "CONV_2D": (
        "hybrid fails at load: tensorflow/lite/micro/kernels/conv_common.cc Hybrid models are "
        "not supported on TFLite Micro."
    ),
    "DEQUANTIZE": (
        "float16 fails at load: dequantize_common.cc:42 input->type == kTfLiteInt8"
    ),
    "EXP": (
        "int16 fails at load: exp.cc:41 input->type != kTfLiteFloat32 (INT16 != FLOAT32); int8 "
        "fails at load: exp.cc:41 input->type != kTfLiteFloat32 (INT8 != FLOAT32)"
    ),
    "FULLY_CONNECTED": (
        "hybrid fails at load: Input type: FLOAT32 with filter type: INT8 not supported."
    ),
    "GATHER": (
        "int16 fails at load: Type 'INT16' is not supported by gather.; int32 fails at load: "
        "Type 'INT32' is not supported by gather."
    ),
    "GELU": (
        "no kernel registered for GELU (Didn't find op for builtin opcode)"
    ),
    "LOG": (
        "int16 fails at invoke: elementwise.cc:202 input->type != expected_type (INT16 != "
        "FLOAT32); int8 fails at invoke: elementwise.cc:202 input->type != expected_type (INT8 "
        "!= FLOAT32)"
    ),
    "MIRROR_PAD": (
        "int16 fails at invoke: Node MIRROR_PAD (number 0) failed to invoke with status 1"
    ),
    "POW": (
        "no kernel registered for POW (Didn't find op for builtin opcode)"
    ),
    "REDUCE_MAX": (
        "int16 fails at invoke: Only float32 and int8 types are supported."
    ),
    "REDUCE_MIN": (
        "int16 fails at invoke: Only float32 and int8 types are supported."
    ),
    "REDUCE_PROD": (
        "no kernel registered for REDUCE_PROD (Didn't find op for builtin opcode)"
    ),
    "RELU6": (
        "int8 runs but computes wrong: relu6/int8: output 127 steps from Keras (litert "
        "reference kernels: 0.0266); its int8/int16 Prepare (activations_common.cc) computes "
        "the clamp bounds from the input's scale and zero point only and never requantizes to "
        "the output's, so the output is wrong whenever the converter gives RELU6 its own "
        "output parameters"
    ),
    "RELU_N1_TO_1": (
        "no kernel registered for RELU_N1_TO_1 (Didn't find op for builtin opcode)"
    ),
    "RESIZE_BILINEAR": (
        "int16 fails at invoke: Output type is 7, requires float or int8."
    ),
    "RSQRT": (
        "int16: litert's reference kernel is the one that computes wrong: rsqrt/int16x8: "
        "output 544 steps from Keras (tflite-micro: 0.922)"
    ),
    "SELECT_V2": (
        "int32 fails at invoke: Does not support type other than int8"
    ),
    "SIGN": (
        "no kernel registered for SIGN (Didn't find op for builtin opcode)"
    ),
    "SPACE_TO_BATCH_ND": (
        "int16 fails at invoke: Type INT16 (7) not supported.; int8 runs but computes wrong: "
        "dilated_conv_2d/int8: output 212 steps from Keras (litert reference kernels: 0.862)"
    ),
    "SQRT": (
        "int8 fails at invoke: elementwise.cc:202 input->type != expected_type (INT8 != "
        "FLOAT32)"
    ),
    "SUM": (
        "int8: litert's reference kernel is the one that computes wrong: sum/int8: output 110 "
        "steps from Keras (tflite-micro: 0.394); int16: litert's reference kernel is the one "
        "that computes wrong: sum/int16x8: output 3.58e+04 steps from Keras (tflite-micro: "
        "0.0092)"
    ),
    "TILE": (
        "no kernel registered for TILE (Didn't find op for builtin opcode)"
    ),
}
CONVERTER_NOTES: dict[str, str] = {
    "ADD_N": (
        "int8 conversion leaves ADD_N in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'ADD_N'.)"
    ),
    "CAST": (
        "int8 conversion leaves CAST in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'CAST'.)"
    ),
    "CEIL": (
        "int8 conversion leaves CEIL in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'CEIL'.)"
    ),
    "COS": (
        "int8 conversion leaves COS in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'COS'.)"
    ),
    "CUMSUM": (
        "int8 conversion leaves CUMSUM in float32 between DEQUANTIZE and QUANTIZE; int16x8 "
        "does not convert (Quantization to 16x8-bit not yet supported for op: 'CUMSUM'.)"
    ),
    "DEPTH_TO_SPACE": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'DEPTH_TO_SPACE'.)"
    ),
    "DIV": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: 'DIV'.)"
    ),
    "ELU": (
        "int8 conversion leaves ELU in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'ELU'.)"
    ),
    "FLOOR": (
        "int8 conversion leaves FLOOR in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'FLOOR'.)"
    ),
    "FLOOR_DIV": (
        "int8 conversion leaves FLOOR_DIV in float32 between DEQUANTIZE and QUANTIZE; int16x8 "
        "does not convert (Quantization to 16x8-bit not yet supported for op: 'FLOOR_DIV'.)"
    ),
    "FLOOR_MOD": (
        "int8 conversion leaves FLOOR_MOD in float32 between DEQUANTIZE and QUANTIZE; int16x8 "
        "does not convert (Quantization to 16x8-bit not yet supported for op: 'FLOOR_MOD'.)"
    ),
    "GATHER": (
        "int16x8 does not convert (Empty min/max for tensor serving_default_keras_tensor_713:0)"
    ),
    "HARD_SWISH": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'HARD_SWISH'.)"
    ),
    "L2_NORMALIZATION": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'L2_NORMALIZATION'.)"
    ),
    "LESS": (
        "int16x8 does not convert (Empty min/max for tensor serving_default_keras_tensor_725:0)"
    ),
    "LOGICAL_NOT": (
        "float32: the converter did not emit LOGICAL_NOT for logical_not; int8: the converter "
        "did not emit LOGICAL_NOT for logical_not"
    ),
    "LOG_SOFTMAX": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'LOG_SOFTMAX'.)"
    ),
    "NEG": (
        "int8 conversion leaves NEG in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'NEG'.)"
    ),
    "NOT_EQUAL": (
        "int8 conversion leaves NOT_EQUAL in float32 between DEQUANTIZE and QUANTIZE"
    ),
    "POW": (
        "int8 conversion leaves POW in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'POW'.)"
    ),
    "PRELU": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: 'PRELU'.)"
    ),
    "RELU_N1_TO_1": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'RELU_N1_TO_1'.)"
    ),
    "ROUND": (
        "int8 conversion leaves ROUND in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'ROUND'.)"
    ),
    "SELECT": (
        "float32: the converter did not emit SELECT for select; int8: the converter did not "
        "emit SELECT for select"
    ),
    "SELECT_V2": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'SELECT_V2'.)"
    ),
    "SIGN": (
        "int8 conversion leaves SIGN in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'SIGN'.)"
    ),
    "SIN": (
        "int8 conversion leaves SIN in float32 between DEQUANTIZE and QUANTIZE; int16x8 does "
        "not convert (Quantization to 16x8-bit not yet supported for op: 'SIN'.)"
    ),
    "SPACE_TO_DEPTH": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: "
        "'SPACE_TO_DEPTH'.)"
    ),
    "SQRT": (
        "int16x8 does not convert (Quantization to 16x8-bit not yet supported for op: 'SQRT'.)"
    ),
    "SQUARE": (
        "int8 conversion leaves SQUARE in float32 between DEQUANTIZE and QUANTIZE; int16x8 "
        "does not convert (Quantization to 16x8-bit not yet supported for op: 'SQUARE'.)"
    ),
    "SQUEEZE": (
        "float32: the converter did not emit SQUEEZE for squeeze; int8: the converter did not "
        "emit SQUEEZE for squeeze; int16x8: the converter did not emit SQUEEZE for squeeze"
    ),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (
        "float32 does not convert (loc(callsite(fused['TensorListReserve:', "
        "'functional_329_1/lstm_1/TensorArrayV2_1@__inference___call___85547'] at "
        "callsite(fused['StatefulPa); int8 does not convert "
        "(loc(callsite(fused['TensorListReserve:', "
        "'functional_330_1/lstm_1_1/TensorArrayV2_1@__inference___call___86837'] at "
        "callsite(fused['Stateful); int16x8 does not convert "
        "(loc(callsite(fused['TensorListReserve:', "
        "'functional_331_1/lstm_2_1/TensorArrayV2_1@__inference___call___88127'] at "
        "callsite(fused['Stateful)"
    ),
}
# END GENERATED
