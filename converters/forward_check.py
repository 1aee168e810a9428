"""Does the exported float32 model compute the training model's forward?

The float32 `.tflite` must equal Keras' forward up to float32 rounding: custom gradients are
dropped at export and nothing else may change. The bound is on the normwise relative error,
max |tflite - keras| / max |keras|, over a whole test set.
"""

import numpy as np

from ..device_tests.interpreters import ModelInput, arrange_inputs

FORWARD_RTOL = 1e-5


def run_tflite(flatbuffer: bytes, x) -> np.ndarray:
    """Run a float model on `x` with LiteRT's reference kernels, one batch. `x`: one array, or
    {Keras input name: array} for a model with several inputs (matched to the .tflite's inputs
    by name: its order is not the model's). Integer inputs (token ids) are fed as they are."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Reference kernels: what the float32 graph means, free of XNNPACK's reassociation.
    it = Interpreter(model_content=flatbuffer,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    inputs = [ModelInput(d, i) for i, d in enumerate(it.get_input_details())]
    arrays = arrange_inputs(inputs, x, "the converted model")
    for inp, a in zip(inputs, arrays, strict=True):
        it.resize_tensor_input(inp.index, list(a.shape))
    it.allocate_tensors()
    for inp, a in zip(inputs, arrays, strict=True):
        it.set_tensor(inp.index, np.asarray(a).astype(inp.dtype))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def forward_equality(keras_out: np.ndarray, tflite_out: np.ndarray, source: str) -> dict:
    keras_out = np.asarray(keras_out, np.float64)
    tflite_out = np.asarray(tflite_out, np.float64)
    err = np.abs(tflite_out - keras_out)
    scale = float(np.abs(keras_out).max()) or 1.0
    rel = float(err.max() / scale)
    return {"samples": int(len(keras_out)), "data": source, "max_abs_error": float(err.max()),
            "max_rel_error": rel, "bound": FORWARD_RTOL,
            "worst_sample": int(np.unravel_index(err.argmax(), err.shape)[0]),
            "ok": bool(rel <= FORWARD_RTOL)}
