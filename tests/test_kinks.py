"""Thresholds and kinks found from what a layer computes (pipeline/kinks.py), whatever the
layer's class is called, and the boundary analysis they give users' own models."""

import json
import textwrap

import keras
import numpy as np
import pytest
from conftest import import_as
from typer.testing import CliRunner

from edgepipe.converters.modes import QuantMode
from edgepipe.pipeline.boundary import analyse
from edgepipe.pipeline.bundle import boundary_block
from edgepipe.pipeline.cli import app
from edgepipe.pipeline.kinks import kinked_layers

# Activations as users write them for tf.keras: not registered, __init__ and call only.
LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    @tf.custom_gradient
    def fire(x):
        def grad(dy):  # straight-through near the threshold, so the layers below learn
            return dy * tf.cast(tf.abs(x - 0.3) <= 1.0, x.dtype)

        return tf.where(x > 0.3, 1.0, 0.0), grad


    class MyStep(tf.keras.layers.Layer):
        """Fires above 0.3."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def call(self, x):
            return fire(x)


    class MyLeaky(tf.keras.layers.Layer):
        """Leaky with its corner at x = -0.5: slope 0.1 below, 1 above."""

        def call(self, x):
            return tf.maximum(x, 0.1 * x - 0.45)


    class TwoCorners(tf.keras.layers.Layer):
        """Piecewise linear: slope 0.2 below -1, 1 between, 0.5 above 2."""

        def call(self, x):
            low = 0.2 * (x + 1.0) - 1.0
            high = 2.0 + 0.5 * (x - 2.0)
            return tf.where(x < -1.0, low, tf.where(x > 2.0, high, x))


    class MySwish(tf.keras.layers.Layer):
        def call(self, x):
            return x * tf.sigmoid(x)
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """layers.py, digits.npz (standardised as the models take them) and two trained models:
    step.keras (Dense, MyStep, Dense) and leaky.keras (Dense, MyLeaky, Dense)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("kinks")
    (root / "layers.py").write_text(LAYERS_PY)
    layers = import_as(root / "layers.py", "user_kink_layers_under_test")
    x, y = load_digits(return_X_y=True)
    x = ((x - x[:1400].mean(0)) / (x[:1400].std(0) + 1e-6)).astype(np.float32)
    np.savez(root / "digits.npz", x_train=x[:1400], y_train=y[:1400], x_test=x[1400:1500],
             y_test=y[1400:1500])
    keras.utils.set_random_seed(0)
    models = {}
    for name, act in (("step", layers.MyStep), ("leaky", layers.MyLeaky)):
        models[name] = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16), act(),
                                         keras.layers.Dense(10, activation="softmax")])
        models[name].compile(optimizer=keras.optimizers.Adam(3e-3),
                             loss="sparse_categorical_crossentropy")
        models[name].fit(x[:1400], y[:1400], epochs=3, batch_size=64, verbose=0)
        models[name].save(root / f"{name}.keras")
    return root, layers, models, x


def _kinks(model, x):
    return {k.layer.name: [(kink.at, kink.kind) for kink in k.kinks]
            for k in kinked_layers(model, x[1400:], x[:200])}


def test_a_users_step_and_leaky_are_found_where_their_threshold_and_corner_are(user):
    _, layers, models, x = user
    step = kinked_layers(models["step"], x[1400:], x[:200])
    assert [k.layer.name for k in step] == [models["step"].layers[1].name]
    (kink,) = step[0].kinks
    assert kink.kind == "jump" and abs(kink.at - 0.3) < 1e-4
    assert kink.height == pytest.approx(1.0, rel=0, abs=1e-6)
    assert kink.slopes == (0.0, 0.0)
    leaky = kinked_layers(models["leaky"], x[1400:], x[:200])
    (kink,) = leaky[0].kinks
    assert kink.kind == "slope" and abs(kink.at + 0.5) < 1e-4 and kink.height == 0.0
    assert kink.slopes == pytest.approx((0.1, 1.0), rel=1e-3, abs=0)


def test_several_corners_and_keras_own_kinked_activations(user):
    _, layers, _, x = user
    inputs = keras.Input((64,))
    h = keras.layers.Dense(16)(inputs)
    outs = [layers.TwoCorners(name="two")(h), keras.layers.ReLU(name="relu")(h),
            keras.layers.LeakyReLU(negative_slope=0.2, name="leaky")(h),
            keras.layers.Activation("hard_swish", name="hswish")(keras.layers.Rescaling(3.0)(h))]
    model = keras.Model(inputs, keras.layers.Concatenate()(outs))
    found = {k.layer.name: k.kinks for k in kinked_layers(model, x[1400:], x[:200])}
    assert set(found) == {"two", "relu", "leaky", "hswish"}
    assert [(k.kind, k.slopes) for k in found["two"]] == [("slope", (0.2, 1.0)),
                                                         ("slope", (1.0, 0.5))]
    assert [k.at for k in found["two"]] == pytest.approx([-1.0, 2.0], rel=0, abs=1e-4)
    assert [(k.at, k.kind) for k in found["relu"]] == [(0.0, "slope")]
    assert found["leaky"][0].slopes == pytest.approx((0.2, 1.0), rel=1e-3, abs=0)
    assert [k.at for k in found["hswish"]] == pytest.approx([-3.0, 3.0], rel=0, abs=1e-4)


def test_smooth_activations_and_softmax_have_no_kink(user):
    _, layers, _, x = user
    inputs = keras.Input((64,))
    h = keras.layers.Rescaling(4.0)(keras.layers.Dense(16)(inputs))  # tails and bend at once
    outs = [keras.layers.Activation(a, name=a)(h) for a in ("swish", "tanh", "gelu", "sigmoid",
                                                           "mish", "elu", "softplus")]
    outs += [layers.MySwish(name="my_swish")(h), keras.layers.Softmax(name="softmax")(h),
             keras.layers.Dropout(0.5, name="dropout")(h)]
    model = keras.Model(inputs, keras.layers.Concatenate()(outs))
    assert kinked_layers(model, x[1400:], x[:200]) == []


def test_zoo_step_and_piecewise_found_by_probing_with_todays_figures(user, tmp_path):
    """The zoo's Step and PiecewiseLinear are found by what they compute, with the kink at
    exactly 0 and the same input steps as the class-name table gave: the same figures."""
    from edgepipe.models.activations.piecewise_linear import PiecewiseLinear
    from edgepipe.models.activations.step import Step

    _, _, _, x = user
    keras.utils.set_random_seed(1)
    inputs = keras.Input((64,))
    h1 = Step(name="step_1")(keras.layers.Dense(16)(inputs))
    h2 = PiecewiseLinear(name="pwl_1")(keras.layers.Dense(8)(h1))
    model = keras.Model(inputs, keras.layers.Dense(1)(h2))
    test, rep = x[1400:], x[:200]
    block = boundary_block(tmp_path, "zoo_like", model, test, rep)
    assert block["layers"] == ["step_1", "pwl_1"]
    assert [[(k["at"], k["kind"]) for k in kinks] for kinks in block["kinks"]] == [
        [(0.0, "jump")], [(0.0, "slope")]]
    probe = keras.Model(inputs, [model.get_layer(n).input for n in ("step_1", "pwl_1")])
    calib = [np.asarray(c) for c in probe(rep)]
    preacts = [np.load(tmp_path / p) for p in block["preact"]]
    for mine, theirs in zip(preacts, probe(test), strict=True):
        np.testing.assert_array_equal(mine, np.asarray(theirs))
    lo_hi = [(min(float(c.min()), 0.0), max(float(c.max()), 0.0)) for c in calib]
    assert block["input_steps"]["int8"] == [(hi - lo) / 255.0 for lo, hi in lo_hi]
    assert block["input_steps"]["int16x8"] == [max(-lo, hi) / 32767.0 for lo, hi in lo_hi]
    assert block["input_steps"]["float16"] == [
        float(np.spacing(np.float16(np.abs(c).max()))) for c in calib]
    reference = np.asarray(model(test))
    variant = reference + np.random.default_rng(0).normal(0, 0.01, reference.shape)
    steps = block["input_steps"][QuantMode.INT8.value]
    today = analyse(preacts, steps, 0.0, variant, reference)  # one kink for every layer
    probed = analyse(preacts, steps, block["kinks"], variant, reference)
    assert probed == today and probed["kinks"] == [[0.0], [0.0]]


@pytest.fixture(scope="module")
def user_run(user, tmp_path_factory):
    root = user[0]
    out = tmp_path_factory.mktemp("kinks_run")
    config = root / "edgepipe.toml"
    config.write_text('[run]\nkeras = ["step.keras", "leaky.keras"]\ndata = "digits.npz"\n'
                      'custom_objects = ["layers.py"]\nmodes = ["float16", "int8", "int16x8"]\n'
                      'targets = ["host", "host-ref"]\n')
    result = CliRunner().invoke(app, ["run", "--config", str(config), "--out", str(out)],
                                env={"COLUMNS": "200"})
    return out, result


def test_user_models_get_the_boundary_analysis_in_float16_and_integer_modes(user_run):
    out, result = user_run
    assert result.exit_code in (0, 1), result.output
    manifest = json.loads((out / "manifest.json").read_text())
    kinks = {name: manifest["models"][name]["boundary"]["kinks"] for name in ("step", "leaky")}
    assert [(k["at"], k["kind"]) for k in kinks["step"][0]] == [(0.3, "jump")]
    assert [(k["at"], k["kind"]) for k in kinks["leaky"][0]] == [(-0.5, "slope")]
    for name in ("step", "leaky"):
        assert set(manifest["models"][name]["boundary"]["input_steps"]) == {
            "int8", "int16x8", "float16"}
    results = json.loads((out / "results.json").read_text())["results"]
    ran = {(r["model"], r["mode"], r["target"]): r for r in results
           if r["status"] in ("pass", "fail")}
    # every variant that ran carries the analysis; the leaky model runs in every mode
    assert {("leaky", m, t) for m in ("float16", "int8", "int16x8")
            for t in ("host", "host-ref")} | {("step", m, t) for m in ("float16", "int8")
                                              for t in ("host", "host-ref")} <= set(ran)
    for key, r in ran.items():
        boundary = r["metrics"]["boundary"]
        assert boundary["samples"] == 100, key
        assert boundary["kinks"] == [[0.3]] if key[0] == "step" else [[-0.5]], key
        assert 0 <= boundary["near_error_share"] <= 1, key
