"""Target-aware lowering (issue 15, item 4): a layer's declared alternative replaces it in a copy of
the model, which converts without the avoided op, computes what the original computes, and runs
on TFLite Micro."""

import importlib.util
import textwrap

import keras
import numpy as np
import pytest
from conftest import import_as, needs

from edgepipe.converters.forward_check import FORWARD_RTOL
from edgepipe.converters.modes import QuantMode
from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.converters.variants import convert_model
from edgepipe.core.errors import EdgepipeError
from edgepipe.models.activations import GeluTanh, HardSwish, Swish
from edgepipe.models.architectures import build_model
from edgepipe.models.datasets import load_builtin
from edgepipe.models.loading import LoadOptions, load_keras
from edgepipe.models.lowering import (
    LoweredLayer,
    declared_lowerings,
    lowered_model,
    output_change,
)
from edgepipe.models.registry import ACTIVATIONS
from edgepipe.models.zoo import ZOO

HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
NO_TFLM = "tflite-micro is not installed (pip install 'edgepipe[micro]'; x86-64 Linux only)"
MODES = [QuantMode.FLOAT32, QuantMode.INT8, QuantMode.INT16X8]
X = np.concatenate([np.linspace(-8, 8, 4001), np.linspace(-1e-3, 1e-3, 101)]).astype(np.float32)

# A user's layers written the tutorial way: a step as relu(sign(x)) (SIGN, which TFLite Micro
# lacks) declaring the exact tf.where rewrite, and a layer that declares nothing.
LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    class SignStep(tf.keras.layers.Layer):
        lowerings = {"where": {"method": "where_form", "avoids": ["SIGN"]}}

        def __init__(self):
            super(SignStep, self).__init__()

        def call(self, x):
            return tf.nn.relu(tf.sign(x))

        def where_form(self, x):
            return tf.where(x > 0, 1.0, 0.0)


    class Swish(tf.keras.layers.Layer):
        def __init__(self):
            super(Swish, self).__init__()

        def call(self, x):
            return x * tf.sigmoid(x)
''')


def ops_of(variant) -> set:
    return set(read_tflite_file(variant.path).op_names())


def convert(model, name, x, out, modes=MODES) -> dict:
    variants = convert_model(model, name, modes, out, representative=x, check_data=x)
    return {v.mode: v for v in variants}


def tflm_outputs(variant, x) -> np.ndarray:
    from edgepipe.device_tests.interpreters import find_runtime

    return find_runtime("tflite_micro").load(variant.path.read_bytes()).run(x)[0]


@pytest.fixture(scope="module")
def zoo_gelu(tmp_path_factory):
    """The zoo's mlp_gelu_tanh, trained a few epochs on diabetes, its lowering for GELU, and both
    converted."""
    keras.utils.set_random_seed(0)
    data = load_builtin("diabetes")
    model = build_model(ZOO["mlp_gelu_tanh"], data.x_train.shape[1:], 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(data.x_train, data.y_train, epochs=5, batch_size=32, verbose=0)
    lowered, records = lowered_model(model, {"GELU"})
    x = data.x_test.astype(np.float32)
    out = tmp_path_factory.mktemp("gelu")
    return (model, lowered, records, x, convert(lowered, "lowered", x, out),
            convert(model, "plain", x, out, [QuantMode.INT8]))


def test_registry_lowerings_are_the_layers_declarations():
    declaring = {name for name, spec in ACTIVATIONS.items() if spec.lowerings}
    assert declaring == {"gelu_tanh", "hard_swish"}
    for spec in ACTIVATIONS.values():
        declared = declared_lowerings(spec.build())
        assert {(s.name, frozenset(s.avoids)) for s in spec.lowerings} == \
            {(d.name, d.avoids) for d in declared.values()}, spec.name
        for s in spec.lowerings:  # what it avoids is what the layer's own call lowers to
            assert set(s.avoids) <= set(spec.tflite_ops) and not set(s.avoids) & set(s.tflite_ops)


@pytest.mark.parametrize("name", ["gelu_tanh", "hard_swish"])
def test_registry_lowering_forward_equals_the_layer(name):
    """The rewrite against the layer's call on [-8, 8]: equal to float32 rounding (measured: 9.5e-7
    for GELU at x = 4.3, 2 ulps; 4.8e-7 for HardSwish)."""
    layer = ACTIVATIONS[name].build()
    (lowering,) = declared_lowerings(layer).values()
    got = np.asarray(getattr(layer, lowering.method)(X))
    np.testing.assert_allclose(got, np.asarray(layer(X)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["gelu_tanh", "hard_swish"])
def test_registry_lowering_converts_without_the_avoided_op(name, tmp_path):
    spec = ACTIVATIONS[name]
    inputs = keras.Input((10,), name="x")
    hidden = spec.build(name="act")(keras.layers.Dense(16, name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden), name="m")
    x = np.random.default_rng(0).normal(0, 2, (64, 10)).astype(np.float32)
    lowered, records = lowered_model(model, set(spec.lowerings[0].avoids))
    assert records == [{"layer": "act", "lowering": spec.lowerings[0].name,
                        "avoids": sorted(spec.lowerings[0].avoids)}]
    variants = convert(lowered, "m", x, tmp_path)
    for mode, variant in variants.items():  # int16x8 too: HARD_SWISH had none
        assert variant.path is not None, (mode, variant.reason)
        ops = ops_of(variant)
        assert not ops & set(spec.lowerings[0].avoids), (mode, ops)
        assert set(spec.lowerings[0].tflite_ops) <= ops, (mode, ops)
        names = [t.name for t in read_tflite_file(variant.path).subgraphs[0].tensors]
        assert any(n.startswith("m_1/act_1/") for n in names), names  # the layer path is kept


def test_zoo_gelu_lowers_to_tanh_mul_add_in_every_type(zoo_gelu):
    model, lowered, records, x, variants, plain = zoo_gelu
    assert records == [{"layer": "gelu_tanh_1", "lowering": "tanh", "avoids": ["GELU"]}]
    assert "GELU" in ops_of(plain[QuantMode.INT8])
    for mode in MODES:
        ops = ops_of(variants[mode])
        assert "GELU" not in ops and {"TANH", "MUL", "ADD"} <= ops, (mode, ops)
        assert ops - {"TANH", "MUL", "ADD", "FULLY_CONNECTED", "QUANTIZE"} == set(), ops
    assert variants[QuantMode.FLOAT32].record["forward_check"]["ok"]


def test_zoo_gelu_lowered_outputs_equal_the_originals(zoo_gelu):
    """Keras: the tanh lowering against tf.nn.gelu(approximate=True), to float32 rounding; the
    float32 .tflite against the original Keras model, to the converter's forward bound."""
    model, lowered, _, x, variants, _ = zoo_gelu
    change = output_change(model, lowered, x)
    assert change["samples"] == len(x) and change["range"] > 0
    assert change["max_abs"] <= FORWARD_RTOL * change["range"], change
    want = np.asarray(model(x))
    np.testing.assert_allclose(np.asarray(lowered(x)), want, rtol=1e-5,
                               atol=FORWARD_RTOL * change["range"])
    assert [w.shape for w in lowered.get_weights()] == [w.shape for w in model.get_weights()]
    for mine, theirs in zip(lowered.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    from edgepipe.converters.forward_check import run_tflite

    got = run_tflite(variants[QuantMode.FLOAT32].path.read_bytes(), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=FORWARD_RTOL * change["range"])


def test_zoo_gelu_lowered_runs_on_tflite_micro(zoo_gelu):
    needs(HAVE_TFLM, NO_TFLM)
    from edgepipe.device_tests.interpreters import KernelMissing

    model, _, _, x, variants, plain = zoo_gelu
    with pytest.raises(KernelMissing, match="GELU"):
        tflm_outputs(plain[QuantMode.INT8], x[:4])
    want = np.asarray(model(x[:16]))
    spread = float(np.ptp(np.asarray(model(x))))
    np.testing.assert_allclose(tflm_outputs(variants[QuantMode.FLOAT32], x[:16]), want,
                               rtol=1e-5, atol=FORWARD_RTOL * spread)
    int8 = tflm_outputs(variants[QuantMode.INT8], x[:16])
    assert np.abs(int8 - want).max() <= 0.05 * spread  # int8 rounding, not a wrong graph


def test_lowered_model_saves_and_loads(zoo_gelu, tmp_path):
    model, lowered, _, x, _, _ = zoo_gelu
    lowered.save(tmp_path / "lowered.keras")
    again = keras.models.load_model(tmp_path / "lowered.keras")
    assert isinstance(again.get_layer("gelu_tanh_1"), LoweredLayer)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(lowered(x)), rtol=0, atol=0)


@pytest.fixture(scope="module")
def user_layers(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "layers.py"
    path.write_text(LAYERS_PY)
    return path, import_as(path, "user_lowering_layers")


def _user_model(layers):
    inputs = keras.Input((6,), name="x")
    hidden = layers.Swish()(keras.layers.Dense(8, name="hidden")(inputs))
    step = layers.SignStep()(keras.layers.Dense(8, name="pre")(hidden))
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(step), name="user")


def test_user_layer_lowering_survives_keras_save_and_load(user_layers, tmp_path):
    path, layers = user_layers
    keras.utils.set_random_seed(1)
    model = _user_model(layers)
    model.save(tmp_path / "user.keras")
    loaded = load_keras(tmp_path / "user.keras", LoadOptions.from_files([path]))
    step_name = next(layer.name for layer in loaded.layers if declared_lowerings(layer))
    lowered, records = lowered_model(loaded, {"SIGN"})
    assert records == [{"layer": step_name, "lowering": "where", "avoids": ["SIGN"]}]
    x = np.random.default_rng(2).normal(size=(64, 6)).astype(np.float32)
    change = output_change(loaded, lowered, x)
    assert change["max_abs"] == 0.0, change  # the where form is the step exactly
    variants = convert(lowered, "user", x, tmp_path / "tflite", [QuantMode.FLOAT32,
                                                                 QuantMode.INT8])
    for mode, variant in variants.items():
        ops = ops_of(variant)
        assert "SIGN" not in ops and {"GREATER", "SELECT_V2"} <= ops, (mode, ops)
        assert not variant.record["findings"], variant.record["findings"]  # int8 end to end
    if HAVE_TFLM:
        want = np.asarray(loaded(x[:8]))
        np.testing.assert_allclose(tflm_outputs(variants[QuantMode.FLOAT32], x[:8]), want,
                                   rtol=1e-5, atol=1e-5 * max(1.0, float(np.ptp(want))))


def test_a_layer_declaring_nothing_is_left_as_it_is(user_layers):
    _, layers = user_layers
    model = _user_model(layers)
    assert lowered_model(model, {"GELU", "EXP"}) == (None, [])  # nobody avoids those
    lowered, records = lowered_model(model, {"SIGN", "LOGISTIC"})
    assert [r["lowering"] for r in records] == ["where"]
    kept = [layer for layer in model.layers[1:] if not declared_lowerings(layer)]  # not Input
    assert len(kept) == 4
    for layer in kept:  # every other layer is the original object, weights and all
        assert lowered.get_layer(layer.name) is layer
    assert sum(isinstance(layer, LoweredLayer) for layer in lowered.layers) == 1
    assert lowered_model(keras.Sequential([keras.Input((4,)), Swish()]), {"GELU"}) == (None, [])


def test_sequential_and_nested_models_are_lowered_by_path():
    block = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), GeluTanh(name="gelu"),
                              HardSwish(name="hs")], name="block")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(block(inputs)))
    lowered, records = lowered_model(model, {"GELU"})
    assert records == [{"layer": "block/gelu", "lowering": "tanh", "avoids": ["GELU"]}]
    inner = lowered.get_layer("block")
    assert [type(layer) for layer in inner.layers] == [keras.layers.Dense, LoweredLayer,
                                                       HardSwish]
    x = np.random.default_rng(3).normal(size=(32, 4)).astype(np.float32)
    assert output_change(model, lowered, x)["max_abs"] <= 1e-6
    seq, records = lowered_model(block, {"HARD_SWISH"})
    assert isinstance(seq, keras.Sequential)
    assert records == [{"layer": "hs", "lowering": "clip", "avoids": ["HARD_SWISH"]}]


def test_bad_declarations_and_subclassed_models_are_named():
    class NoMethod(keras.layers.Layer):
        lowerings = {"tanh": {"method": "missing", "avoids": ["GELU"]}}

        def call(self, x):
            return x

    class NoAvoids(keras.layers.Layer):
        lowerings = {"tanh": "tanh_form"}

        def call(self, x):
            return x

    with pytest.raises(EdgepipeError, match="'missing', which the layer does not have"):
        declared_lowerings(NoMethod(name="mine"))
    with pytest.raises(EdgepipeError, match=r"'avoids': \[TFLite op names\]"):
        declared_lowerings(NoAvoids())

    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gelu = GeluTanh(name="gelu")

        def call(self, x):
            return self.gelu(x)

    model = Subclassed()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(EdgepipeError, match="'gelu'.*functional API"):
        lowered_model(model, {"GELU"})
