"""Per-layer error, the bundle side: each variant's tensors mapped to the Keras layers by name
(fused ops, a tutorial-style layer, a residual Add, a nested model), the per-layer references
written into the bundle and read back by device_tests' loader, the per-layer bounds, and the
simulation of a variant that keeps a layer in higher precision."""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from edgepipe.converters.layer_tensors import map_layers
from edgepipe.converters.modes import QuantMode
from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.converters.variants import convert_model
from edgepipe.device_tests.bundle import BundleError, load_bundle
from edgepipe.device_tests.schema import RunFolder
from edgepipe.models.datasets import load_npz_as_given
from edgepipe.models.loading import fresh_layer_names
from edgepipe.pipeline.bundle import dataset_block, entry, model_block, write_manifest
from edgepipe.pipeline.tolerances import keras_layer_outputs, simulation

L = keras.layers
MODES = (QuantMode.FLOAT32, QuantMode.FLOAT16, QuantMode.INT8)


class Step(keras.layers.Layer):
    """Written the tutorial way: no **kwargs, no get_config, not registered."""

    def __init__(self):
        super().__init__()

    def call(self, x):
        return tf.cast(x > 0, tf.float32)


def fused():
    """A Dense whose ReLU is a layer of its own: the converter fuses both into one op."""
    inputs = keras.Input((6,))
    hidden = L.Dense(16, name="hidden")(inputs)
    return keras.Model(inputs, L.Dense(1, name="out")(L.Activation("relu", name="relu")(hidden)),
                       name="fusedmodel")


def residual():
    """Dense(tanh), a step layer on it, and a skip Add of the two."""
    inputs = keras.Input((6,))
    t = L.Dense(16, activation="tanh", name="d2")(inputs)
    step = Step()
    added = L.Add(name="add")([step(t), t])
    return keras.Model(inputs, L.Dense(1, name="out")(added), name="resmodel")


def nested():
    """A Sequential block inside a functional model."""
    block = keras.Sequential([keras.Input((16,)), L.Dense(16, name="inner"),
                              L.Activation("tanh", name="act")], name="block")
    inputs = keras.Input((6,))
    stem = L.Dense(16, activation="tanh", name="stem")(inputs)
    return keras.Model(inputs, L.Dense(1, name="out")(block(stem)), name="outermodel")


class Mish(keras.layers.Layer):
    """The zoo's mish written in a user's file: x * tanh(softplus(x)) with softplus as
    relu(x) + log(1 + exp(x - 2 relu(x))). The converter fuses the Relu into a second copy of
    the Dense before it: that tensor names both layers and is not the Dense's output."""

    def __init__(self):
        super().__init__()

    def call(self, x):
        r = tf.nn.relu(x)
        return x * tf.tanh(r + tf.math.log(1.0 + tf.exp(x - 2.0 * r)))


def mish():
    inputs = keras.Input((6,))
    hidden = L.Dense(16, name="hidden")(inputs)
    return keras.Model(inputs, L.Dense(1, name="out")(Mish()(hidden)), name="mishmodel")


BUILDERS = {"fused": fused, "residual": residual, "nested": nested, "mish": mish}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 6)).astype(np.float32)
    y = (x @ rng.standard_normal(6) + np.sin(2 * x[:, 0])).astype(np.float32)
    return x[:120], y[:120], x[120:], y[120:]


@pytest.fixture(scope="module")
def converted(data, tmp_path_factory):
    """{name: (model, {mode: Variant})}, each model trained briefly."""
    x_train, y_train, _, _ = data
    out = tmp_path_factory.mktemp("variants")
    made = {}
    for name, build in BUILDERS.items():
        keras.utils.set_random_seed(0)
        with fresh_layer_names():  # `step`, whatever other tests named before in this process
            model = build()
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        model.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
        variants = convert_model(model, name, MODES, out, representative=x_train)
        made[name] = (model, {v.mode: v for v in variants})
    return made


def mapped(converted, name, mode, x):
    model, variants = converted[name]
    found = keras_layer_outputs(model, x[:4])
    assert variants[mode].path is not None, variants[mode].reason
    return map_layers(read_tflite_file(variants[mode].path), found.paths, found.output_layers)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_relu_layer_fused_into_the_dense_before_it(converted, data, mode):
    rows, fused_layers = mapped(converted, "fused", mode, data[2])
    assert [r["layer"] for r in rows] == ["relu", "out"]
    assert fused_layers == [{"layer": "hidden", "into": "relu"}]
    assert rows[0]["op"] == "FULLY_CONNECTED"
    assert "hidden" in rows[0]["tensor_name"] and "relu" in rows[0]["tensor_name"]
    assert rows[-1]["tensor"] in read_tflite_file(converted["fused"][1][mode].path
                                                  ).subgraphs[0].outputs


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_a_dense_whose_tensor_a_later_layer_took_over_is_fused_into_it(converted, data, mode):
    """The Dense's own output (its unfused copy) is its row, never the tensor that also holds
    the mish's inner Relu: comparing that one with the Dense's Keras output named a false birth
    layer (201 steps against a simulated 5 on the zoo's mlp_mish int8)."""
    rows, fused_layers = mapped(converted, "mish", mode, data[2])
    by_layer = {r["layer"]: r for r in rows}
    assert list(by_layer)[-1] == "out" and "hidden" in by_layer, rows
    assert "Relu" not in by_layer["hidden"]["tensor_name"], by_layer["hidden"]
    model = read_tflite_file(converted["mish"][1][mode].path).subgraphs[0]
    names = [model.tensors[i].name for op in model.operators for i in op.outputs if i >= 0]
    assert any("hidden" in n and "Relu" in n for n in names), names  # the fusion happened
    assert fused_layers == []


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_tanh_dense_tutorial_step_and_residual_add(converted, data, mode):
    rows, fused_layers = mapped(converted, "residual", mode, data[2])
    assert [r["layer"] for r in rows] == ["d2", "step", "add", "out"]
    assert fused_layers == []
    ops = {r["layer"]: r["op"] for r in rows}
    assert ops["d2"] == "TANH" and ops["add"] == "ADD"
    graph = read_tflite_file(converted["residual"][1][mode].path).subgraphs[0]
    for row in rows:  # each row is an operator output of the graph, in the order ops run
        assert graph.tensors[row["tensor"]].buffer_bytes == 0
    producers = [next(op.index for op in graph.operators if r["tensor"] in op.outputs)
                 for r in rows]
    assert producers == sorted(producers)
    if mode is QuantMode.INT8:
        # the step's float output is quantized by an inserted QUANTIZE (tensor `tfl.quantize`)
        assert all(r["dtype"] == "int8" and r["scale"] > 0 for r in rows)
        assert ops["step"] == "QUANTIZE"
    else:
        assert all(r["dtype"] == "float32" and r["scale"] is None for r in rows)


@pytest.mark.parametrize("mode", (QuantMode.FLOAT32, QuantMode.INT8), ids=lambda m: m.value)
def test_nested_model_layers_have_paths(converted, data, mode):
    rows, _ = mapped(converted, "nested", mode, data[2])
    assert [r["layer"] for r in rows] == ["stem", "block/inner", "block/act", "out"]


def test_keeping_a_layer_in_float32_removes_its_rounding(converted):
    model, _ = converted["nested"]
    # binary features: the int8 grid of the input holds 0 and 1 exactly, so what a kept layer
    # still differs by is its own rounding only
    x = (np.random.default_rng(1).random((60, 6)) > 0.5).astype(np.float32)
    rows = list(range(0, 60, 5))
    keras_out = keras_layer_outputs(model, x[rows]).outputs

    def error(keep, layer):
        sim = simulation(model, QuantMode.INT8, x, x, keep=keep, layer_rows=rows)
        return float(np.abs(sim.layer_outputs[layer] - keras_out[layer]).max())

    assert error(None, "stem") > 1e-3
    assert error({"stem": "float32"}, "stem") < 1e-5
    assert error({"block/inner": "int16"}, "block/inner") < error(None, "block/inner")
    everything = {layer: "float32" for layer in keras_out}
    sim = simulation(model, QuantMode.INT8, x, x, keep=everything, layer_rows=rows)
    assert all(np.abs(sim.layer_outputs[layer] - keras_out[layer]).max() < 1e-5
               for layer in ("stem", "block/inner", "block/act"))
    # the output tensor is int8 still: the output layer's values lie on its grid
    out = sim.outputs[0]
    step = (max(out.max(), 0) - min(out.min(), 0)) / 255
    assert np.allclose(out / step, np.round(out / step), rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="does not call"):
        simulation(model, QuantMode.INT8, x, x, keep={"nope": "float32"})


@pytest.fixture(scope="module")
def bundle(converted, data, tmp_path_factory):
    """A run folder with the residual model's blocks, written as the bundle stage writes them."""
    x_train, y_train, x_test, y_test = data
    root = tmp_path_factory.mktemp("bundle")
    np.savez(root / "res.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    model, _ = converted["residual"]
    variants = {v.mode: v for v in convert_model(model, "residual", MODES,
                                                 RunFolder(root).tflite_dir, x_train)}
    model.save(root / "res.keras")
    dataset = load_npz_as_given(root / "res.npz")
    block, reference = model_block(root, "residual", "custom", "user", model, dataset,
                                   root / "res.keras", x_train, layer_samples=8)
    entries = [entry(root, variants[m], model, dataset, reference, x_train, {},
                     layers=block.get("layers")) for m in MODES]
    write_manifest(root, {dataset.name: dataset_block(root, dataset)}, {"residual": block},
                   entries, 0)
    return root


def test_layer_references_are_written_and_verified_by_the_loader(bundle, data):
    loaded = load_bundle(bundle)
    layers = loaded.model("residual")["layers"]
    samples = layers["samples"]
    assert len(samples) == 8 and samples == sorted(set(samples))
    assert samples[0] == 0 and samples[-1] == len(data[2]) - 1  # spread over the test split
    assert [o["layer"] for o in layers["outputs"]] == ["d2", "step", "add", "out"]
    assert layers["outputs"][1]["class"] == "Step"
    for i, output in enumerate(layers["outputs"]):
        assert output["path"] == RunFolder(bundle).rel(RunFolder(bundle).layer_reference(
            "residual", i))
        values = loaded.array(output["path"], output["sha256"], "test")
        assert list(values.shape) == output["shape"] and values.shape[0] == 8
        assert output["range"] == pytest.approx(float(np.ptp(values)) or 1.0)
    # a sample outside the test split is refused with the field named
    manifest = json.loads(RunFolder(bundle).manifest.read_text())
    manifest["models"]["residual"]["layers"]["samples"][-1] = 10 ** 6
    bad = shutil.copytree(bundle, bundle.parent / "bad")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"models\.residual\.layers\.samples"):
        load_bundle(bad)


def test_entries_carry_per_layer_bounds(bundle):
    manifest = load_bundle(bundle).manifest
    by_mode = {e["mode"]: e for e in manifest["entries"]}
    int8 = by_mode["int8"]["layers"]
    assert [r["layer"] for r in int8] == ["d2", "step", "add", "out"]
    for row in int8:
        assert row["simulated"] is not None and row["bound"] > 0
        assert row["bound"] >= row["scale"]  # never below one step of its tensor
    assert by_mode["int8"]["layers_fused"] == []
    assert all(r["simulated"] is not None for r in by_mode["float16"]["layers"])
    float32 = by_mode["float32"]["layers"]
    assert all(r["simulated"] is None and 0 < r["bound"] < 1e-3 for r in float32)
