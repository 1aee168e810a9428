"""Derived tolerances for models that are not a chain: residual adds, branches, shared layers,
nested models, several inputs, a MobileNet-style block; the fallback that names what cannot be
simulated; and the top-1 agreement bound of classifiers in the integer modes."""

import json

import keras
import numpy as np
import pytest

from edgepipe.converters.modes import QuantMode
from edgepipe.converters.variants import convert_model
from edgepipe.device_tests.interpreters import dequantize, quantize
from edgepipe.device_tests.schema import RunFolder
from edgepipe.models.datasets import load_npz_as_given
from edgepipe.pipeline.bundle import entry
from edgepipe.pipeline.config import load_config
from edgepipe.pipeline.tolerances import MIN_TOP1_AGREEMENT, TASK_DELTA, derive, simulation

L = keras.layers
SIMULATED = (QuantMode.FLOAT16, QuantMode.DYNAMIC, QuantMode.INT8, QuantMode.INT16X8)


def residual():
    """Dense -> act -> Dense with a skip Add; 32 x 32 kernels, so dynamic range quantizes them."""
    inputs = keras.Input((32,), name="features")
    stem = L.Dense(32, name="stem")(inputs)
    inner = L.Dense(32, name="outer")(L.Dense(32, name="inner")(L.Activation("relu")(stem)))
    added = L.Add(name="skip")([stem, inner])
    return keras.Model(inputs, L.Dense(3, activation="softmax")(L.Activation("relu")(added)))


def branches():
    inputs = keras.Input((32,))
    a = L.Dense(32, activation="relu")(inputs)
    b = L.Dense(16, activation="tanh")(inputs)
    joined = L.Concatenate()([a, b])
    return keras.Model(inputs, L.Dense(3, activation="softmax")(L.Dense(32)(joined)))


def shared():
    """One Dense layer called twice."""
    inputs = keras.Input((32,))
    twice = L.Dense(32, name="twice")
    hidden = twice(L.Activation("relu")(twice(inputs)))
    return keras.Model(inputs, L.Dense(3, activation="softmax")(hidden))


def nested():
    """A functional block (its own model) called twice inside the outer model."""
    block_in = keras.Input((32,))
    block = keras.Model(block_in, L.Dense(32)(L.Activation("relu")(L.Dense(32)(block_in))),
                        name="block")
    inputs = keras.Input((32,))
    stem = L.Dense(32)(inputs)
    deep = block(block(stem))
    return keras.Model(inputs, L.Dense(3, activation="softmax")(L.Add()([stem, deep])))


def two_inputs():
    features, scalar = keras.Input((32,), name="features"), keras.Input((1,), name="scalar")
    joined = L.Concatenate()([L.Dense(32, activation="relu")(features), L.Dense(4)(scalar)])
    return keras.Model([features, scalar],
                       L.Dense(3, activation="softmax")(L.Dense(32)(joined)))


def mobile_block():
    """Conv -> BN -> ReLU6 -> depthwise -> BN -> ReLU -> squeeze-excite (Multiply) -> 1x1 -> BN."""
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = L.ReLU(6.0)(L.BatchNormalization(momentum=0.5)(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization(momentum=0.5)(x))
    squeeze = L.GlobalAveragePooling2D(keepdims=True)(x)
    excite = L.Conv2D(32, 1, activation="hard_sigmoid")(L.Conv2D(8, 1, activation="relu")(squeeze))
    x = L.Multiply()([x, excite])
    x = L.BatchNormalization(momentum=0.5)(L.Conv2D(32, 1, use_bias=False)(x))
    return keras.Model(inputs, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))


BUILDERS = {"residual": residual, "branches": branches, "shared": shared, "nested": nested,
            "two_inputs": two_inputs, "mobile_block": mobile_block}
# What the derivation says was walked.
SHAPES = {"residual": "over 7 layers (graph with 1 merge)",
          "branches": "over 5 layers (graph with 1 merge)",
          "shared": "over 4 layers (graph with 1 shared layer)",
          "nested": "over 9 layers (graph with 1 merge, 3 shared layers)",
          "two_inputs": "over 5 layers (graph with 1 merge, 2 inputs)",
          "mobile_block": "over 14 layers (graph with 1 merge)"}


def _data(name):
    """(x_train, y_train, x_test, y_test): three separable classes."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 500)
    if name == "mobile_block":
        x = (rng.normal(size=(500, 16, 16, 3)) + y[:, None, None, None] * 0.5).astype(np.float32)
    else:
        centers = rng.normal(scale=2.0, size=(3, 32))
        x = (centers[y] + rng.normal(size=(500, 32))).astype(np.float32)
    if name == "two_inputs":
        scalar = (y[:, None] + rng.normal(size=(500, 1))).astype(np.float32)
        return [x[:300], scalar[:300]], y[:300], [x[300:], scalar[300:]], y[300:]
    return x[:300], y[:300], x[300:], y[300:]


@pytest.fixture(scope="module")
def trained():
    """Every model trained briefly: {name: (model, x_train, x_test, reference)}."""
    models = {}
    for name, build in BUILDERS.items():
        keras.utils.set_random_seed(0)
        model = build()
        x_train, y_train, x_test, _ = _data(name)
        if name == "mobile_block":  # BatchNorm statistics from forward passes over data
            for _ in range(8):
                model(x_train, training=True)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x_train, y_train, epochs=10, verbose=0)
        models[name] = (model, x_train, x_test, np.asarray(model(x_test)))
    return models


def _errors(model, x_train, x_test, reference) -> dict:
    sims = {m: simulation(model, m, x_test, x_train) for m in SIMULATED}
    return sims, {m: float(np.abs(s.outputs[0] - reference).max()) for m, s in sims.items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_graph_is_simulated_and_the_error_grows_with_coarser_formats(trained, name):
    model, x_train, x_test, reference = trained[name]
    before = [w.copy() for w in model.get_weights()]
    sims, err = _errors(model, x_train, x_test, reference)
    assert all(np.isfinite(e) for e in err.values()), err
    assert 0 < err[QuantMode.FLOAT16] < err[QuantMode.INT8], err
    assert 0 < err[QuantMode.DYNAMIC] < err[QuantMode.INT8], err
    assert 0 < err[QuantMode.INT16X8] < err[QuantMode.INT8], err
    for a, b in zip(model.get_weights(), before, strict=True):  # weights restored
        np.testing.assert_array_equal(a, b)
    tol = derive(QuantMode.INT8, reference, sims[QuantMode.INT8], 1 / 256, "accuracy")
    assert tol["max_abs"] == pytest.approx(2 * err[QuantMode.INT8] + 1e-5 * float(
        np.ptp(reference.astype(np.float64))), rel=1e-12, abs=0)
    assert f"int8: 2 x simulated int8 error {err[QuantMode.INT8]:.3g} {SHAPES[name]}" in (
        tol["derivation"])


def _run_variant(path, x, resolver) -> np.ndarray:
    """A converted variant's dequantized outputs on `x`, with LiteRT's `resolver` kernels."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], list(x.shape))
    it.allocate_tensors()
    scale, zero = inp["quantization"]
    it.set_tensor(inp["index"], quantize(x, scale, zero, inp["dtype"]) if scale
                  else x.astype(inp["dtype"]))
    it.invoke()
    scale, zero = out["quantization"]
    raw = it.get_tensor(out["index"])
    return dequantize(raw, scale, zero) if scale else raw


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def converted(trained, root):
    """The residual model in every simulated mode, the shared layer in dynamic range (whose
    inputs the kernels quantize per sample, asymmetrically), the MobileNet-style block in
    dynamic range and int8."""
    out = RunFolder(root).tflite_dir
    variants = {}
    for name, modes in (("residual", SIMULATED), ("shared", (QuantMode.DYNAMIC,)),
                        ("mobile_block", (QuantMode.DYNAMIC, QuantMode.INT8))):
        model, x_train, _, _ = trained[name]
        for v in convert_model(model, name, modes, out, representative=x_train):
            variants[name, v.mode] = v
    return variants


@pytest.mark.parametrize("name, mode", [
    *[pytest.param("residual", m, id=f"residual-{m.value}") for m in SIMULATED],
    pytest.param("shared", QuantMode.DYNAMIC, id="shared-dynamic"),
    pytest.param("mobile_block", QuantMode.INT8, id="mobile_block-int8")])
def test_the_real_variant_is_within_the_derived_bound(trained, converted, name, mode):
    from ai_edge_litert.interpreter import OpResolverType

    model, x_train, x_test, reference = trained[name]
    variant = converted[name, mode]
    assert variant.path is not None, variant.reason
    scale = variant.record["outputs"][0]["scale"]
    tol = derive(mode, reference, simulation(model, mode, x_test, x_train),
                 scale[0] if scale else None, "accuracy")
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_REF):  # host, host-ref
        real = _run_variant(variant.path, x_test, resolver)
        error = float(np.abs(real.astype(np.float64) - reference).max())
        assert 0 < error <= tol["max_abs"], (resolver, error, tol["derivation"])
        agreement = float(np.mean(real.argmax(1) == reference.argmax(1)))
        if mode.integer_only:
            assert agreement >= tol["min_top1_agreement"], (resolver, agreement)


@pytest.mark.parametrize("name", ["shared", "mobile_block"])
def test_dynamic_range_simulation_reproduces_the_reference_kernels(trained, converted, name):
    """Hybrid FULLY_CONNECTED and CONV_2D quantize their float input per sample on an asymmetric
    grid: simulated that way, the variant's outputs are reproduced to float32 rounding (where
    the converter does not rewrite the graph), so the bound holds on the reference kernels."""
    from ai_edge_litert.interpreter import OpResolverType

    model, x_train, x_test, _ = trained[name]
    real = _run_variant(converted[name, QuantMode.DYNAMIC].path, x_test,
                        OpResolverType.BUILTIN_REF)
    simulated = simulation(model, QuantMode.DYNAMIC, x_test, x_train).outputs[0]
    np.testing.assert_allclose(simulated, real, rtol=0, atol=1e-5)


def test_a_saturated_softmax_costs_one_output_step(tmp_path):
    """TFLite fixes SOFTMAX's int8 output grid (1/256 from 0, whatever the calibration): a
    probability of 1.0 comes out as 255/256. The simulation rounds to that grid, so a confident
    classifier's bound is not below what the format can represent."""
    from ai_edge_litert.interpreter import OpResolverType

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Softmax()(L.Dense(3)(inputs)))
    kernel, bias = model.layers[1].get_weights()
    model.layers[1].set_weights([kernel * 60, bias])
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    reference = np.asarray(model(x))
    saturated = reference == 1.0
    assert saturated.sum() > 100
    sim = simulation(model, QuantMode.INT8, x, x)
    np.testing.assert_array_equal(sim.outputs[0][saturated], 255 / 256)
    variant = convert_model(model, "confident", [QuantMode.INT8], tmp_path, representative=x)[0]
    tol = derive(QuantMode.INT8, reference, sim, variant.record["outputs"][0]["scale"][0],
                 "accuracy")
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_REF):
        real = _run_variant(variant.path, x, resolver)
        assert float(np.abs(real.astype(np.float64) - reference).max()) <= tol["max_abs"]


class Net(keras.Model):
    """A subclassed model: its call is Python, not a graph of layers."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = L.Dense(16, activation="relu"), L.Dense(3, activation="softmax")

    def call(self, x):
        return self.out(self.hidden(x))


class Mix(keras.layers.Layer):
    """A user's layer with its own kernel: its layout is not known to the simulation."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 8), initializer="glorot_uniform")

    def call(self, x):
        return keras.ops.matmul(x, self.w)


def test_a_model_that_cannot_be_walked_falls_back_and_says_why():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    net = Net()
    reference = np.asarray(net(x))
    sim = simulation(net, QuantMode.INT8, x, x)
    assert sim.outputs is None
    assert sim.reason == ("'net' (Net) is a subclassed model: its call() is Python code, with no "
                          "graph of layers to walk")
    tol = derive(QuantMode.INT8, reference, sim, 0.01, "accuracy")
    assert tol["max_abs"] is None and tol["task_delta"] == TASK_DELTA["accuracy"]
    assert tol["min_top1_agreement"] == MIN_TOP1_AGREEMENT
    assert tol["derivation"] == (f"int8: no simulation ({sim.reason}); only the task metric is "
                                 "bounded: accuracy may drop by 0.01; top-1 agreement with Keras "
                                 "at least 0.97")
    inputs = keras.Input((8,))
    mixed = keras.Model(inputs, L.Dense(3)(Mix(name="mix")(inputs)))
    sim = simulation(mixed, QuantMode.FLOAT16, x, x)
    assert sim.outputs is None and sim.reason == (
        "layer 'mix' (Mix) has weights of shape (8, 8) with no known rounding rule (Dense and "
        "convolution kernels are known)")


@pytest.fixture(scope="module")
def bundled(trained, root):
    """The residual model saved with its data as a user brings them, for entry() and the config."""
    model, x_train, x_test, reference = trained["residual"]
    _, y_train, _, y_test = _data("residual")
    np.savez(root / "residual.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)
    model.save(root / "residual.keras")
    return load_npz_as_given(root / "residual.npz")


def test_integer_classifiers_bound_top1_agreement_and_the_config_overrides_it(
        trained, converted, bundled, root):
    data = bundled
    model, x_train, _, reference = trained["residual"]

    def tolerance(mode, overrides):
        return entry(root, converted["residual", mode], model, data, reference, x_train,
                     overrides)["tolerance"]

    for mode in (QuantMode.INT8, QuantMode.INT16X8):
        tol = tolerance(mode, {})
        assert tol["min_top1_agreement"] == 0.97
        assert tol["derivation"].endswith("; top-1 agreement with Keras at least 0.97")
        assert "(graph with 1 merge)" in tol["derivation"]
        json.dumps(tol, allow_nan=False)  # goes into the manifest as it is
    assert tolerance(QuantMode.FLOAT16, {})["min_top1_agreement"] is None
    regression = derive(QuantMode.INT8, reference[:, :1], reference[:, :1], 0.01, "r2")
    assert regression["min_top1_agreement"] is None

    toml = root / "edgepipe.toml"
    toml.write_text('[run]\nkeras = ["residual.keras"]\ndata = "residual.npz"\n'
                    "[tolerances.residual.int8]\nmin_top1_agreement = 0.9\n")
    config = load_config(toml)
    tol = tolerance(QuantMode.INT8, config.tolerances["residual"])
    assert tol["min_top1_agreement"] == 0.9
    assert tol["derivation"].endswith("; min_top1_agreement set to 0.9 by the config")
    assert tolerance(QuantMode.INT16X8, config.tolerances["residual"])[
        "min_top1_agreement"] == 0.97


def test_the_run_checks_top1_agreement_on_the_target(bundled, root, tmp_path):
    from typer.testing import CliRunner

    from edgepipe.pipeline.cli import app

    config = tmp_path / "edgepipe.toml"
    config.write_text(f'[run]\nkeras = ["{root / "residual.keras"}"]\n'
                      f'data = "{root / "residual.npz"}"\nmodes = ["int8", "int16x8"]\n'
                      'targets = ["host"]\n[tolerances.residual.int8]\nmin_top1_agreement = 0.99\n')
    result = CliRunner().invoke(app, ["run", "--config", str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    results = json.loads(RunFolder(tmp_path / "run").results.read_text())["results"]
    checks = {r["mode"]: {c["name"]: c for c in r["checks"]} for r in results}
    assert checks["int8"]["min_top1_agreement"]["bound"] == 0.99
    assert checks["int16x8"]["min_top1_agreement"]["bound"] == 0.97
    assert all(c["min_top1_agreement"]["ok"] for c in checks.values())
