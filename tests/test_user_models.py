"""Users' own models: unregistered tf.keras-style layers via --custom-objects, Keras safe_mode and
--unsafe, and `edgepipe run --model my.keras --data my.npz` through the whole pipeline."""

import json
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from conftest import config_error, import_as, one_line
from typer.testing import CliRunner

from edgepipe.models.datasets import Task, load_npz_as_given
from edgepipe.pipeline.cli import app
from edgepipe.pipeline.config import load_config

runner = CliRunner()
MODES = ("float32", "float16", "dynamic", "int8", "int16x8")

# A user's layer as people write them for tf.keras: not registered, only __init__ and call.
LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    class MyAct(tf.keras.layers.Layer):
        def __init__(self, beta=1.5, **kwargs):
            super().__init__(**kwargs)
            self.beta = beta

        def call(self, x):
            return x * tf.sigmoid(self.beta * x)


    def soft_clip(x):
        return 2.0 * tf.tanh(x / 2.0)


    CUSTOM_OBJECTS = {"soft_clip": soft_clip}
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """layers.py, diabetes.npz (as the models take it), and trained models that use MyAct:
    functional (act.keras), Sequential (seq.keras), a CUSTOM_OBJECTS function (fn.keras), a
    Lambda layer (lam.keras)."""
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("user")
    (root / "layers.py").write_text(LAYERS_PY)
    layers = import_as(root / "layers.py", "user_layers_under_test")
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x[:354].mean(0)) / x[:354].std(0)).astype(np.float32)
    y = ((y - y[:354].mean()) / y[:354].std()).astype(np.float32)
    np.savez(root / "diabetes.npz", x_train=x[:354], y_train=y[:354], x_test=x[354:],
             y_test=y[354:])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = layers.MyAct(beta=1.5)(keras.layers.Dense(16)(inputs))
    models = {
        "act": keras.Model(inputs, keras.layers.Dense(1)(hidden)),
        "seq": keras.Sequential([keras.Input((10,)), keras.layers.Dense(16),
                                 layers.MyAct(beta=1.0), keras.layers.Dense(1)]),
        "fn": keras.Sequential([keras.Input((10,)),
                                keras.layers.Dense(8, activation=layers.soft_clip),
                                keras.layers.Dense(1)]),
        "lam": keras.Sequential([keras.Input((10,)), keras.layers.Dense(8),
                                 keras.layers.Lambda(lambda t: t * 0.5), keras.layers.Dense(1)]),
    }
    for name, model in models.items():
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
        model.fit(x[:354], y[:354], epochs=20, batch_size=32, verbose=0)
        model.save(root / f"{name}.keras")
    return root


def test_unregistered_layer_without_custom_objects_names_the_class(user, tmp_path):
    for args in (["convert", str(user / "act.keras"), "--mode", "float32", "-o",
                  str(tmp_path / "out")],
                 ["check", str(user / "act.keras")]):
        line = one_line(runner.invoke(app, args), 2)
        assert line == (f"error: Cannot load {user / 'act.keras'}: layer class 'MyAct' is not "
                        "known; pass --custom-objects path/to/module.py that defines it (it was "
                        "saved from module 'user_layers_under_test').")
    assert not list((tmp_path / "out").glob("*"))


def test_custom_objects_that_lack_the_class_say_what_they_define(user, tmp_path):
    other = tmp_path / "other.py"
    other.write_text("import keras\n\nclass Other(keras.layers.Layer):\n    pass\n")
    result = runner.invoke(app, ["check", str(user / "act.keras"), "--custom-objects",
                                 str(other)])
    one_line(result, 2, "layer class 'MyAct' is not known",
             f"the --custom-objects files ({other}) define Other")


def test_with_custom_objects_it_loads_converts_and_checks(user):
    result = runner.invoke(app, ["check", str(user / "act.keras"), "--custom-objects",
                                 str(user / "layers.py")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "act.float32.tflite: pass" in result.stdout
    assert result.stderr == ""


def test_custom_objects_dict_provides_functions(user, tmp_path):
    result = runner.invoke(app, ["convert", str(user / "fn.keras"), "--mode", "float32", "-o",
                                 str(tmp_path), "--custom-objects", str(user / "layers.py")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "fn.float32.json").read_text())
    assert record["status"] == "converted" and "TANH" in {op["op"] for op in
                                                          record["audit"]["ops"]}
    without = runner.invoke(app, ["check", str(user / "fn.keras")])
    one_line(without, 2, "function 'soft_clip' is not known", "--custom-objects")


def test_lambda_is_refused_unless_unsafe(user, tmp_path):
    path = user / "lam.keras"
    refused = runner.invoke(app, ["convert", str(path), "--mode", "float32", "-o",
                                  str(tmp_path)])
    assert one_line(refused, 2) == (
        f"error: Cannot load {path}: it holds a Lambda layer ('lambda'), whose Python code "
        "Keras will not run in safe mode; pass --unsafe if you trust this file.")
    allowed = runner.invoke(app, ["convert", str(path), "--mode", "float32", "-o",
                                  str(tmp_path), "--unsafe"])
    one_line(allowed, 0, "--unsafe: Keras safe_mode is off", "load only files you trust",
             prefix="warning: ")
    assert json.loads((tmp_path / "lam.float32.json").read_text())["status"] == "converted"


@pytest.mark.parametrize("content, fragments", [
    pytest.param(None, ["Custom objects file", "missing.py does not exist"], id="missing"),
    pytest.param("import keras\nx = undefined_name + 1\n",
                 ["Cannot import custom objects from", "bad.py (line 2): NameError: name "
                  "'undefined_name' is not defined"], id="name-error"),
    pytest.param("def broken(:\n", ["bad.py (line 1): SyntaxError:"], id="syntax-error"),
    pytest.param("import no_such_module_here\n",
                 ["bad.py (line 1): ModuleNotFoundError: No module named "
                  "'no_such_module_here'"], id="import-error"),
    pytest.param("CUSTOM_OBJECTS = ['MyAct']\n",
                 ["CUSTOM_OBJECTS in", "must be a dict of name -> class or function; got list"],
                 id="custom-objects-not-a-dict"),
])
def test_bad_custom_objects_file_is_one_line_naming_file_and_exception(user, tmp_path, content,
                                                                       fragments):
    path = tmp_path / ("missing.py" if content is None else "bad.py")
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["check", str(user / "act.keras"), "--custom-objects",
                                 f"{user / 'layers.py'},{path}"])
    line = one_line(result, 2, *fragments)
    assert str(path) in line


def test_custom_objects_named_twice_differently_is_refused(user, tmp_path):
    twin = tmp_path / "twin.py"
    twin.write_text(LAYERS_PY)
    (tmp_path / "twin2.py").write_text(LAYERS_PY)
    result = runner.invoke(app, ["check", str(user / "act.keras"), "--custom-objects",
                                 str(twin), "--custom-objects", str(tmp_path / "twin2.py")])
    one_line(result, 2, "Custom object 'MyAct' is defined both in", "pass only one of them")



def test_a_keras_file_is_refused_from_its_stat_and_zip_directory_without_tensorflow(tmp_path):
    """Missing, not a regular file, not a zip, or with members that leave the folder Keras
    extracts into (zip slip): one line, before TensorFlow is imported (it takes ~15 s) and
    before Keras opens the archive (it warned once per member and went on)."""
    import os
    import zipfile

    from conftest import imported_modules

    with zipfile.ZipFile(tmp_path / "slip.keras", "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("../../evil.txt", "outside")
    (tmp_path / "folder.keras").mkdir()
    os.mkfifo(tmp_path / "fifo.keras")
    (tmp_path / "x.tflite").write_bytes(b"")
    cases = {"missing.keras": "Model file {} does not exist",
             "folder.keras": "Model file {} is a folder, not a regular file",
             "fifo.keras": "Model file {} is a FIFO (named pipe), not a regular file",
             "slip.keras": "{} holds 1 member(s) whose names lead out of the folder it is "
                           "extracted into ('../../evil.txt')"}
    code = ["from typer.testing import CliRunner",
            "from edgepipe.pipeline.cli import app"]
    for name, message in cases.items():
        path = tmp_path / name
        code += [f"r = CliRunner().invoke(app, ['check', {str(path)!r}])",
                 f"assert r.exit_code == 2 and {message.format(path)!r} in r.stderr, r.stderr",
                 "assert len(r.stderr.strip().splitlines()) == 1, r.stderr"]
    code += [f"r = CliRunner().invoke(app, ['check', {str(tmp_path / 'x.tflite')!r}, "
             "'--custom-objects', 'missing.py'])",
             "assert r.exit_code == 2 and '--custom-objects applies only to .keras models' in "
             "r.stderr, r.stderr"]
    assert imported_modules("\n".join(code), ("tensorflow", "keras")) == []

@pytest.fixture(scope="module")
def user_run(user, tmp_path_factory):
    out = tmp_path_factory.mktemp("user_run")
    started = time.perf_counter()
    result = runner.invoke(app, ["run", "--model", str(user / "act.keras"), "--model",
                                 str(user / "seq.keras"), "--data", str(user / "diabetes.npz"),
                                 "--custom-objects", str(user / "layers.py"), "--out", str(out)],
                           env={"COLUMNS": "200"})
    return out, result, time.perf_counter() - started


def test_user_models_convert_in_every_mode_and_pass_parity_on_host_and_host_ref(user_run):
    out, result, seconds = user_run
    assert result.exit_code == 0, result.output
    assert seconds < 60, seconds
    merged = json.loads((out / "results.json").read_text())
    keys = {(r["model"], r["mode"], r["target"]): r for r in merged["results"]}
    assert set(keys) == {(m, mode, t) for m in ("act", "seq") for mode in MODES
                         for t in ("host", "host-ref")}
    for key, r in keys.items():
        assert r["status"] == "pass", (key, r["reason"])
    assert merged["summary"]["ok"] and merged["summary"]["pass"] == 20


def test_user_models_in_the_manifest(user_run, user):
    out, _, _ = user_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["act"]["activation"] == "custom"
    assert manifest["models"]["act"]["family"] == "user"
    data = manifest["datasets"]["diabetes"]
    assert (data["task"], data["samples"], data["y_mean"], data["y_std"]) == (
        "regression", 88, 0.0, 1.0)
    # The inputs are the .npz's x_test exactly as given: no standardisation by edgepipe.
    given = np.load(user / "diabetes.npz")["x_test"]
    np.testing.assert_array_equal(np.load(out / data["inputs"]), given)
    for e in manifest["entries"]:
        assert e["status"] == "converted", e
        if e["mode"] != "float32":  # both are chains (one Sequential): simulated, not fallback
            assert f"simulated {e['mode']} error" in e["tolerance"]["derivation"], e


def test_user_model_through_the_run_config(user, tmp_path):
    config = user / "edgepipe.toml"  # paths are relative to the config file
    config.write_text('[run]\nkeras = ["seq.keras"]\ndata = "diabetes.npz"\n'
                      'custom_objects = ["layers.py"]\nmodes = ["float32", "int8"]\n'
                      'targets = ["host"]\n[tolerances.seq.int8]\ntask_delta = 0.05\n')
    result = runner.invoke(app, ["run", "--config", str(config), "--out", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["id"] for r in merged["results"]) == ["seq-float32", "seq-int8"]
    int8 = next(r for r in merged["results"] if r["id"] == "seq-int8")
    assert int8["tolerance"]["task_delta"] == 0.05


def test_user_data_that_does_not_fit_the_model(user, tmp_path):
    x = np.zeros((20, 8), np.float32)
    np.savez(tmp_path / "eight.npz", x_train=x, y_train=np.zeros(20, np.float32),
             x_test=x[:4], y_test=np.zeros(4, np.float32))
    result = runner.invoke(app, ["run", "--model", str(user / "act.keras"), "--data",
                                 str(tmp_path / "eight.npz"), "--custom-objects",
                                 str(user / "layers.py"), "--out", str(tmp_path / "out")])
    one_line(result, 2, "act.keras takes samples of shape (10,) but x_train in",
             "has samples of shape (8,)")
    labels = np.arange(20) % 3  # integer labels: a classifier's data, for a 1-output model
    x = np.zeros((20, 10), np.float32)
    np.savez(tmp_path / "classes.npz", x_train=x, y_train=labels, x_test=x[:3],
             y_test=labels[:3])
    result = runner.invoke(app, ["run", "--model", str(user / "act.keras"), "--data",
                                 str(tmp_path / "classes.npz"), "--custom-objects",
                                 str(user / "layers.py"), "--out", str(tmp_path / "out")])
    one_line(result, 2, "outputs shape (1,) per sample but the integer labels",
             "name 3 classes", "a classifier needs one output per class")
    assert not list((tmp_path / "out").glob("*"))


def test_npz_as_given_infers_the_task_and_keeps_the_values(tmp_path):
    x = np.arange(60, dtype=np.float64).reshape(12, 5)
    np.savez(tmp_path / "c.npz", x_train=x, y_train=np.arange(12) % 4, x_test=x[:2],
             y_test=np.array([0, 3]))
    data = load_npz_as_given(tmp_path / "c.npz")
    assert data.task is Task.CLASSIFICATION and data.num_outputs == 4
    np.testing.assert_array_equal(data.x_train, x.astype(np.float32))
    assert data.x_train.dtype == np.float32 and len(data.x_val) == 0
    np.savez(tmp_path / "r.npz", x_train=x, y_train=np.linspace(0, 1, 12), x_test=x[:2],
             y_test=np.array([0.5, 2.0]))
    data = load_npz_as_given(tmp_path / "r.npz")
    assert data.task is Task.REGRESSION and data.y_test.shape == (2, 1)
    assert (data.y_mean, data.y_std) == (0.0, 1.0)


@pytest.mark.parametrize("text, message", [
    pytest.param('[run]\nkeras = ["m.keras"]\ncustom_object = ["l.py"]\n',
                 "Unknown key 'custom_object' in", id="typo"),
    pytest.param('[run]\nkeras = ["m.keras"]\nmodels = ["mlp_swish"]\ndata = "d.npz"\n',
                 "has both models (zoo) and keras (your own models)", id="both"),
    pytest.param('[run]\nkeras = ["m.keras"]\n', "Your own models need data", id="no-data"),
    pytest.param('[run]\ndata = "d.npz"\n', "data (--data) is the test and calibration data",
                 id="data-without-models"),
    pytest.param('[run]\nkeras = ["nope.keras"]\ndata = "d.npz"\n',
                 "nope.keras does not exist", id="missing-model"),
    pytest.param('[run]\nkeras = [1]\ndata = "d.npz"\n', "to be a list of paths. Received: [1].",
                 id="not-paths"),
    pytest.param('[run]\nkeras = ["m.keras"]\ndata = "d.npz"\nunsafe = "yes"\n',
                 "[run] to be true or false. Received: 'yes'.", id="unsafe-not-bool"),
    pytest.param('[run]\nkeras = ["m.keras"]\ndata = "d.npz"\n[tolerances.mm.int8]\n'
                 'max_abs = 1\n', "Unknown model 'mm'. Valid models: cnn_gelu_tanh,",
                 id="tolerance-name"),
])
def test_user_model_config_errors(tmp_path, text, message):
    (tmp_path / "m.keras").write_bytes(b"")
    assert message in config_error(tmp_path, text)


def test_user_model_config_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"")
    path = tmp_path / "c.toml"
    path.write_text('[run]\nkeras = "m.keras"\ndata = "d.npz"\ncustom_objects = ["l.py"]\n'
                    'unsafe = true\n[tolerances.m.int8]\nmax_abs = 1\n')
    config = load_config(path)
    assert config.keras == (str(tmp_path / "m.keras"),) and config.models == ()
    assert config.data == str(tmp_path / "d.npz")
    assert config.custom_objects == (str(tmp_path / "l.py"),) and config.unsafe
    assert config.user_models == {"m": str(tmp_path / "m.keras")}
    # --model on the command line replaces the zoo models of a config file
    path.write_text('[run]\nmodels = ["mlp_swish"]\n')
    config = load_config(path, keras=[str(tmp_path / "m.keras")], data="x.npz")
    assert config.models == () and config.data == "x.npz"


def test_simulation_of_a_sequential_model_starts_at_its_first_layer(user):
    """A Sequential model does not list its InputLayer: the simulation must not skip layer 0."""
    from edgepipe.converters.modes import QuantMode
    from edgepipe.models.custom_objects import import_custom_objects
    from edgepipe.pipeline.tolerances import simulate

    custom = import_custom_objects([user / "layers.py"])
    model = keras.models.load_model(user / "seq.keras", custom_objects=custom)
    x = np.load(user / "diabetes.npz")["x_test"]
    reference = np.asarray(model(x))
    simulated = simulate(model, QuantMode.FLOAT16, x, None)
    assert simulated is not None and simulated.shape == reference.shape
    assert 0 < np.abs(simulated - reference).max() < 1e-2
    assert sys.modules.get("user_layers_under_test") is None  # never importable by Keras
