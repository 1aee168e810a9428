"""Repair by selective precision (issue 15 item 3): converters/selective.py's tools on real Keras
models written the way users write them: float islands through TF's QuantizationDebugger, per-layer
precision through AI Edge Quantizer, and their one-line refusals."""

import importlib.util

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import needs

from edgepipe.converters.convert import convert_saved_model, temporary_export
from edgepipe.converters.modes import QuantMode
from edgepipe.converters.selective import (
    SelectiveFailure,
    ai_edge_quantized,
    float_islands,
    layer_regex,
    layers_of_ops,
    nodes_of_layers,
)
from edgepipe.converters.tflite_file import read_tflite
from edgepipe.device_tests.interpreters import KernelMissing, find_runtime
from edgepipe.device_tests.schema import ConversionStatus

HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
NO_TFLM = "tflite-micro is not installed (pip install 'edgepipe[micro]'; x86-64 Linux only)"
QUANTIZED = ("int8", "int16")


class Step(keras.layers.Layer):
    """The tutorial's Heaviside step with a straight-through gradient."""

    def __init__(self):
        super().__init__()

    def call(self, x):
        @tf.custom_gradient
        def step(x):
            def grad(dy):
                return dy * tf.cast(tf.abs(x) <= 1, tf.float32)

            return tf.cast(x > 0, tf.float32), grad

        return step(x)


def mish(x):
    return x * tf.math.tanh(tf.math.log(1.0 + tf.math.exp(x)))


@pytest.fixture(scope="module")
def diabetes():
    """sklearn's diabetes, standardised on the training split, then put on the int8 grid:
    integers clipped to [-128, 127], which the training split reaches at both ends, so the int8
    input is calibrated to scale 1 and holds them exactly. With real-valued inputs the int8
    input's own rounding flips step units within ~0.01 of 0 in every variant (the variants' I/O
    is int8), which no precision inside the model can undo; this keeps the error born inside."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x = (x - x[:354].mean(0)) / x[:354].std(0)
    x = np.clip(np.round(x * 60), -128, 127).astype(np.float32)
    y = ((y - y[:354].mean()) / y[:354].std()).astype(np.float32)
    assert x[:354].min() == -128 and x[:354].max() == 127
    return x[:354], y[:354], x[354:]


def calibration(diabetes):
    """The representative samples of both the plain and the repaired variants: every input,
    test split too, so that the output's int8 range clips no test sample in either (it did,
    calibrated on the training split alone: an error both share, which would hide the one the
    repair removes)."""
    return np.concatenate([diabetes[0], diabetes[2]])


def train(model, x, y, epochs=60):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(0.003), "mse")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def step_model(diabetes):
    """Dense -> step -> Dense on diabetes: (model, plain int8 variant, float32 variant)."""
    x, y, _ = diabetes
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(16, name="hidden")(inputs)
    outputs = keras.layers.Dense(1, name="out")(Step()(hidden))
    model = train(keras.Model(inputs, outputs), x, y)
    with temporary_export(model) as saved:
        plain, _ = convert_saved_model(saved, QuantMode.INT8, calibration(diabetes))
        f32, _ = convert_saved_model(saved, QuantMode.FLOAT32)
    return model, plain, f32


def producers(flatbuffer: bytes) -> dict:
    """{op output tensor name: (op name, [input dtypes], [output dtypes])}."""
    m = read_tflite(flatbuffer)
    return {t.name: (op.name, [i.dtype for i in m.inputs_of(op)],
                     [o.dtype for o in m.outputs_of(op)])
            for op in m.subgraphs[0].operators for t in m.outputs_of(op)}


def max_delta(flatbuffer: bytes, x, reference) -> float:
    out, _ = find_runtime().load(flatbuffer).run(x)
    return float(np.abs(out - reference).max())


def test_float_islands_keep_the_steps_dense_and_greater_in_float(step_model, diabetes):
    model, plain, _ = step_model
    x, x_test = calibration(diabetes), diabetes[2]
    step = model.layers[2].name
    nodes = nodes_of_layers(plain, ["hidden", step])
    assert [producers(plain)[n][0] for n in nodes] == ["FULLY_CONNECTED", "GREATER", "CAST"]
    repaired = float_islands(model, x, nodes)

    ops = producers(repaired)
    for node in nodes:
        op, inputs, outputs = ops[node]
        assert not set(inputs + outputs) & set(QUANTIZED), (node, op, inputs, outputs)
    assert producers(plain)[nodes[0]][2] == ["int8"]  # the plain variant quantized it
    m = read_tflite(repaired)
    assert [t.dtype for t in m.input_tensors() + m.output_tensors()] == ["int8", "int8"]

    reference = model.predict(x_test, verbose=0)
    plain_delta = max_delta(plain, x_test, reference)
    repaired_delta = max_delta(repaired, x_test, reference)
    print(f"\nstep: plain int8 {len(plain)} B max|d| {plain_delta:.4f}; float islands "
          f"{len(repaired)} B max|d| {repaired_delta:.4f}")
    # Measured: 0.416 plain (step units within half an int8 step of the Dense's output of 0
    # flip) against 0.0103 (the weights' and the output's int8 rounding): 40 times lower.
    assert plain_delta > 0.3
    assert repaired_delta < plain_delta / 10


def test_float_islands_refuse_a_node_the_variant_lacks(step_model, diabetes):
    """The debugger ignores unknown names and would hand back the plain variant."""
    model, _, _ = step_model
    with pytest.raises(SelectiveFailure) as e:
        float_islands(model, calibration(diabetes), ["functional_1/hidden_1/MatMul1"])
    assert "'functional_1/hidden_1/MatMul1' are not operator outputs" in str(e.value)
    assert "\n" not in str(e.value)


def test_nodes_of_layers_names_a_layer_without_operators(step_model):
    _, plain, _ = step_model
    with pytest.raises(SelectiveFailure, match="belongs to layer.s. 'hiden'"):
        nodes_of_layers(plain, ["hiden"])
    assert nodes_of_layers(plain, ["out"], output_layer="out") == \
        [t.name for t in read_tflite(plain).output_tensors()]


@pytest.fixture(scope="module")
def mish_model(diabetes):
    x, y, _ = diabetes
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, activation=mish),
                              keras.layers.Dense(1)])
    return train(model, x / 60, y, epochs=30)


def test_mish_with_exp_and_log_in_float_runs_on_tflite_micro(mish_model, diabetes):
    needs(HAVE_TFLM, NO_TFLM)
    x, _, x_test = diabetes
    x, x_test = x / 60, x_test / 60
    with temporary_export(mish_model) as saved:
        plain, _ = convert_saved_model(saved, QuantMode.INT8, x)
        ops = producers(plain)
        nodes = [name for name, (op, _, _) in ops.items() if op in ("EXP", "LOG")]
        assert sorted(ops[n][0] for n in nodes) == ["EXP", "LOG"]
        dense = mish_model.layers[0].name  # mish is the Dense's activation: in its scope
        assert layers_of_ops(plain, ["EXP"], [layer.name for layer in mish_model.layers]) == \
            [dense]
        repaired = float_islands(saved, x, nodes)
    exps = [v for v in producers(repaired).values() if v[0] == "EXP"]
    assert exps and all(not set(i + o) & set(QUANTIZED) for _, i, o in exps)

    micro = find_runtime("tflite_micro")
    with pytest.raises(KernelMissing, match="EXP"):
        micro.load(plain)
    reference = mish_model.predict(x_test, verbose=0)
    on_micro, _ = micro.load(repaired).run(x_test)
    on_host, _ = find_runtime().load(repaired).run(x_test)
    step = read_tflite(repaired).output_tensors()[0].scales[0]
    print(f"\nmish: plain int8 {len(plain)} B (tflm: no int8 EXP), float islands "
          f"{len(repaired)} B, tflm max|d| {np.abs(on_micro - reference).max():.4f}, host "
          f"max|d| {max_delta(plain, x_test, reference):.4f} plain, "
          f"{np.abs(on_host - reference).max():.4f} repaired")
    # The same variant on TFLM's reference kernels and on LiteRT: at most one output step apart.
    assert np.abs(on_micro - on_host).max() <= step * 1.0001


def output_range(flatbuffer: bytes) -> tuple:
    t = read_tflite(flatbuffer).output_tensors()[0]
    info = np.iinfo(t.dtype)
    return ((info.min - t.zero_points[0]) * t.scales[0],
            (info.max - t.zero_points[0]) * t.scales[0], t.scales[0])


@pytest.mark.parametrize("precision", ["int16", "float32"])
def test_ai_edge_quantizer_keeps_one_layer_at_the_asked_precision(step_model, diabetes,
                                                                  precision):
    model, plain, f32 = step_model
    x, x_test = calibration(diabetes), diabetes[2]
    regex = layer_regex(["hidden"], f32)
    mixed = ai_edge_quantized(f32, x, "int8", {regex: precision})

    ops = producers(mixed)
    hidden = [ops[name] for name in nodes_of_layers(f32, ["hidden"])]
    assert [(op, outputs) for op, _, outputs in hidden] == [("FULLY_CONNECTED", [precision])]
    assert ops[read_tflite(mixed).output_tensors()[0].name] == \
        ("FULLY_CONNECTED", ["int8", "int8", "int32"], ["int8"])  # the rest stays int8

    # Global min/max: the output's int8 range covers every Keras output it was calibrated on.
    low, high, scale = output_range(mixed)
    reference = model.predict(x, verbose=0)
    assert low <= reference.min() + scale / 2 and reference.max() - scale / 2 <= high
    reference_test = model.predict(x_test, verbose=0)
    print(f"\nai-edge-quantizer int8+{precision}[hidden]: {len(mixed)} B max|d| "
          f"{max_delta(mixed, x_test, reference_test):.4f} (plain int8 {len(plain)} B "
          f"max|d| {max_delta(plain, x_test, reference_test):.4f})")


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_one_calibration_serves_every_try_and_changes_no_byte(step_model, diabetes, mode):
    """A repair search's tries share a dict of calibrations: each float32 model is calibrated
    once for the whole model, and each try's recipe takes the tensors it quantizes. Every
    variant is byte for byte the one calibrated on its own."""
    model, _, f32 = step_model
    x = calibration(diabetes)
    step = next(layer.name for layer in model.layers if isinstance(layer, Step))  # step_N
    tries = [{}, {layer_regex(["hidden"], f32): "float32"},
             {layer_regex(["hidden"], f32): "int16"},
             {layer_regex(["hidden", step], f32): "float32"}]
    alone = [ai_edge_quantized(f32, x, mode, overrides) for overrides in tries]
    calibrations = {}
    shared = [ai_edge_quantized(f32, x, mode, overrides, calibrations=calibrations)
              for overrides in tries]
    assert shared == alone and len(set(alone)) >= 2  # the overrides change the variant
    assert len(calibrations) == 1


@pytest.mark.filterwarnings("ignore:Warning. Enabling .experimental_preserve_all_tensors")
def test_ai_edge_quantizers_default_calibration_clips_the_output(step_model, diabetes):
    """What the global min/max above is for: AEQ's own calibration (a moving average of min and
    max) gives this model an output range that misses the Keras outputs it saw."""
    from ai_edge_quantizer import quantizer, recipe

    model, _, f32 = step_model
    x = calibration(diabetes)
    quant = quantizer.Quantizer(f32, recipe.static_wi8_ai8())
    name = model.inputs[0].name  # the signature names the input after the Keras tensor
    qsvs = quant.calibrate({"serving_default": [{name: s[None]} for s in x]})
    default = bytes(quant.quantize(qsvs, enable_progress_report=False).quantized_model)
    low, high, scale = output_range(default)
    reference = model.predict(x, verbose=0)
    assert reference.min() < low - scale or reference.max() > high + scale


def test_ai_edge_quantizer_refuses_an_override_that_matches_nothing(step_model, diabetes):
    _, _, f32 = step_model
    with pytest.raises(SelectiveFailure) as e:
        ai_edge_quantized(f32, calibration(diabetes), "int8", {"/hiden_\\d+/": "float32"})
    assert str(e.value) == ("not converted: override regex '/hiden_\\\\d+/' matches no "
                            "operator's output tensor names in the float32 variant")


def test_float_islands_refuse_int16x8_in_one_line(step_model, diabetes):
    model, plain, _ = step_model
    with pytest.raises(SelectiveFailure) as e:
        float_islands(model, calibration(diabetes), nodes_of_layers(plain, ["hidden"]),
                      mode="int16x8")
    assert e.value.status == ConversionStatus.UNSUPPORTED
    assert "\n" not in str(e.value)
    assert str(e.value) == ("unsupported: TF's QuantizationDebugger keeps nodes in float in "
                            "int8 variants only, not int16x8 (tensorflow/tensorflow#56899); use "
                            "ai_edge_quantized for int16 activations")
