"""Users' models as they come: layers written the tutorial way, Lambda errors, legacy .h5 files and
SavedModel folders, and the formats edgepipe cannot take (issue 14, items 1, 7 and 10)."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import import_as, one_line
from typer.testing import CliRunner

from edgepipe.models.loading import LoadOptions, load_keras
from edgepipe.pipeline.cli import app

runner = CliRunner()
# The step's model: the Dense before a step gets no gradient (what a step does), said by Keras.
pytestmark = pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")

# Exactly the tutorial style: __init__ without **kwargs calling super(Class, self).__init__(),
# no get_config or one returning only super's, not registered, a module-level
# @tf.custom_gradient function called from call, and a step written as a cast of a comparison.
LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    class Swish(tf.keras.layers.Layer):
        def __init__(self):
            super(Swish, self).__init__()

        def call(self, x):
            return x * tf.sigmoid(x)


    @tf.custom_gradient
    def leaky_kink(x):
        y = tf.where(x > 0.5, x, 0.2 * x + 0.4)

        def grad(dy):
            return dy * tf.where(x > 0.5, 1.0, 0.2)

        return y, grad


    class LeakyKink(tf.keras.layers.Layer):
        def __init__(self):
            super(LeakyKink, self).__init__()

        def call(self, x):
            return leaky_kink(x)

        def get_config(self):
            return super().get_config()


    class StepUp(tf.keras.layers.Layer):
        def __init__(self):
            super(StepUp, self).__init__()

        def call(self, x):
            return tf.cast(tf.greater(x, 0), tf.float32)


    class Scaled(tf.keras.layers.Layer):
        def __init__(self, alpha):
            super(Scaled, self).__init__()
            self.alpha = alpha

        def call(self, x):
            return self.alpha * x

        def get_config(self):
            return super().get_config()
''')
TUTORIAL = ("Swish", "LeakyKink", "StepUp")


def _trained(model, x, y):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """layers.py; per tutorial layer a trained model saved as <Class>.keras (Swish twice in its
    model: one note per class, not per layer) with its predictions on x (<Class>.npy); scaled.keras
    (a layer that still cannot load); Lambdas calling tf.sigmoid (lambda*.keras, lambda.h5);
    tutorial.h5; two SavedModel folders."""
    root = tmp_path_factory.mktemp("tutorial")
    (root / "layers.py").write_text(LAYERS_PY)
    layers = import_as(root / "layers.py", "tutorial_layers_under_test")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = np.tanh(x[:, :1] - x[:, 1:2]).astype(np.float32)
    np.save(root / "x.npy", x)
    keras.utils.set_random_seed(0)

    def chain(*middle):
        return _trained(keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), *middle,
                                          keras.layers.Dense(1)]), x, y)

    models = {"Swish": chain(layers.Swish(), keras.layers.Dense(8), layers.Swish()),
              "LeakyKink": chain(layers.LeakyKink()),
              "StepUp": chain(layers.StepUp())}
    for name, model in models.items():
        model.save(root / f"{name}.keras")
        np.save(root / f"{name}.npy", model.predict(x, verbose=0))
    chain(layers.Scaled(2.0)).save(root / "scaled.keras")
    sigmoid = keras.layers.Lambda(lambda t: tf.sigmoid(t))
    keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), sigmoid,
                      keras.layers.Dense(1)]).save(root / "lambda.keras")
    keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                      keras.layers.Lambda(lambda t: tf.sigmoid(t)),
                      keras.layers.Dense(1)]).save(root / "lambda.h5")
    inputs = keras.Input((6,))
    hidden = keras.layers.Lambda(lambda t: tf.sigmoid(t))(keras.layers.Dense(8)(inputs))
    keras.Model(inputs, keras.layers.Dense(1)(hidden)).save(root / "lambda_functional.keras")
    tutorial = chain(layers.LeakyKink(), keras.layers.Dense(8), layers.Swish())
    tutorial.save(root / "tutorial.h5")
    tutorial.export(str(root / "exported"), verbose=False)

    class Scorer(tf.Module):  # a SavedModel written with TensorFlow, not Keras
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features")])
        def serve(self, features):
            return {"score": self.model(features)}

    scorer = Scorer(models["Swish"])
    tf.saved_model.save(scorer, str(root / "tf_saved"), signatures={"serving_default":
                                                                    scorer.serve})
    tf.saved_model.save(scorer, str(root / "other_signature"), signatures={"score":
                                                                           scorer.serve})
    yield root
    keras.backend.clear_session()  # later modules' layers get their first names ('lambda')


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note: ")]


@pytest.mark.parametrize("name", TUTORIAL)
def test_tutorial_layer_loads_with_one_note_and_the_original_outputs(user, tmp_path, name):
    result = runner.invoke(app, ["convert", str(user / f"{name}.keras"), "--mode", "float32",
                                 "-o", str(tmp_path), "--custom-objects",
                                 str(user / "layers.py")])
    assert result.exit_code == 0, result.output
    notes = _notes(result.stderr)
    assert len(notes) == 1, result.stderr  # Swish's model has two Swish layers: one note
    assert f"layer class {name!r} ({user / 'layers.py'})" in notes[0]
    assert "def __init__(self, **kwargs): super().__init__(**kwargs)" in notes[0]
    assert "edgepipe_custom_objects" not in result.output
    record = json.loads((tmp_path / f"{name}.float32.json").read_text())
    assert record["status"] == "converted", record
    model = load_keras(user / f"{name}.keras", LoadOptions.from_files([user / "layers.py"]))
    np.testing.assert_allclose(model.predict(np.load(user / "x.npy"), verbose=0),
                               np.load(user / f"{name}.npy"), rtol=1e-6, atol=1e-6)


def test_check_loads_tutorial_layers_and_restores_base_attributes(user):
    result = runner.invoke(app, ["check", str(user / "LeakyKink.keras"), "--custom-objects",
                                 str(user / "layers.py")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "LeakyKink.float32.tflite: pass" in result.stdout
    assert len(_notes(result.stderr)) == 1
    saved = json.loads(__import__("zipfile").ZipFile(user / "LeakyKink.keras").read(
        "config.json"))["config"]["layers"][2]["config"]
    layer = load_keras(user / "LeakyKink.keras",
                       LoadOptions.from_files([user / "layers.py"])).layers[1]
    assert type(layer).__name__ == "LeakyKink"
    assert (layer.name, layer.trainable, layer.dtype_policy.name) == (saved["name"], True,
                                                                       "float32")


def test_a_layer_that_still_cannot_load_names_its_class_file_and_innermost_cause(user):
    layers = user / "layers.py"
    result = runner.invoke(app, ["check", str(user / "scaled.keras"), "--custom-objects",
                                 str(layers)])
    line = one_line(result, 2)
    assert line == (f"error: Cannot load {user / 'scaled.keras'}: layer class 'Scaled' from "
                    f"{layers} raised TypeError: Scaled.__init__() missing 1 required "
                    "positional argument: 'alpha'; return 'alpha' from Scaled.get_config() or "
                    "give it a default in __init__, then save the model again.")


@pytest.mark.parametrize("name, layer", [
    pytest.param("lambda.keras", "Lambda layer 'lambda", id="sequential"),
    pytest.param("lambda_functional.keras", "a Lambda layer ('lambda", id="functional"),
    pytest.param("lambda.h5", "Lambda layer 'lambda", id="legacy-h5"),
])
def test_lambda_errors_quote_the_innermost_exception(user, tmp_path, name, layer):
    result = runner.invoke(app, ["convert", str(user / name), "--mode", "float32", "-o",
                                 str(tmp_path), "--unsafe"])
    assert result.exit_code == 2, result.output
    error = result.stderr.strip().splitlines()[-1]
    for fragment in (f"Cannot load {user / name}: {layer}", "raised NameError: name 'tf' is "
                     "not defined while the model was built", "--custom-objects"):
        assert fragment in error, error
    assert "no defined inputs" not in result.output


def test_legacy_h5_keeps_safe_mode(user):
    result = runner.invoke(app, ["check", str(user / "lambda.h5")])
    one_line(result, 2, "it holds a Lambda layer ('lambda", "pass --unsafe")


@pytest.mark.parametrize("name", ["tutorial.h5", "exported", "tf_saved"])
def test_h5_and_saved_model_folders_convert_in_float32(user, tmp_path, name):
    result = runner.invoke(app, ["convert", str(user / name), "--mode", "float32", "-o",
                                 str(tmp_path), "--custom-objects", str(user / "layers.py")])
    assert result.exit_code == 0, result.output
    stem = name.removesuffix(".h5")
    record = json.loads((tmp_path / f"{stem}.float32.json").read_text())
    assert record["status"] == "converted", record
    assert record["forward_check"]["ok"], record["forward_check"]


def test_saved_model_reference_is_its_serving_signature(user):
    model = load_keras(user / "tf_saved")
    x = np.load(user / "x.npy")
    assert [t.name for t in model.inputs] == ["features"]
    np.testing.assert_allclose(model.predict(x, verbose=0), np.load(user / "Swish.npy"),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make, command, fragments", [
    pytest.param(lambda d: (d / "m.tflite").write_bytes(b"TFL3"), "convert",
                 ["m.tflite is a .tflite file, which cannot be converted",
                  "pass the Keras model it came from with --model and the .tflite with "
                  "--tflite"], id="tflite"),
    pytest.param(lambda d: (d / "saved_model.pb").write_bytes(b"\n\x00"), "check",
                 ["saved_model.pb is the graph file of a SavedModel: pass the folder"],
                 id="saved-model-pb-alone"),
    pytest.param(lambda d: (d / "frozen.pb").write_bytes(b"\n\x00"), "check",
                 ["frozen.pb is a TensorFlow graph file (.pb) outside a SavedModel folder",
                  "pass the model it came from"], id="frozen-graph"),
    pytest.param(lambda d: (d / "half" / "variables").mkdir(parents=True), "convert",
                 ["half looks like a SavedModel folder but has no saved_model.pb"],
                 id="folder-without-saved-model-pb"),
    pytest.param(lambda d: (d / "m.h5").write_text("<html>404</html>"), "check",
                 ["m.h5 is not a legacy .h5 model, which is an HDF5 file: it starts with text"],
                 id="h5-not-hdf5"),
    pytest.param(lambda d: keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
                 .save_weights(d / "w.weights.h5"), "check",
                 ["w.weights.h5 holds weights only (model.save_weights), not a model"],
                 id="h5-weights-only"),
])
def test_formats_that_are_not_a_keras_model_are_refused_saying_what_they_are(
        tmp_path, make, command, fragments):
    make(tmp_path)
    target = next(p for p in sorted(tmp_path.iterdir()))
    args = [command, str(target)] + (["-o", str(tmp_path / "out")] if command == "convert"
                                     else [])
    one_line(runner.invoke(app, args), 2, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_saved_model_without_serving_signature_says_which_it_has(user, tmp_path):
    result = runner.invoke(app, ["check", str(user / "other_signature")])
    one_line(result, 2, "has no 'serving_default' signature (it has: score)",
             "tf.saved_model.save(obj, 'folder', signatures={'serving_default': fn})")


def test_run_takes_h5_and_saved_model_folders(user, tmp_path):
    from edgepipe.pipeline.config import load_config

    x = np.load(user / "x.npy")
    y = np.tanh(x[:, :1] - x[:, 1:2]).ravel()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    config = load_config(None, keras=[str(user / "tutorial.h5")], data=str(tmp_path / "d.npz"))
    assert list(config.user_models) == ["tutorial"]
    out = tmp_path / "run"
    (tmp_path / "run.toml").write_text('[run]\nmodes = ["float32", "float16"]\n')
    result = runner.invoke(app, ["run", "--model", str(user / "exported"), "--data",
                                 str(tmp_path / "d.npz"), "--out", str(out), "--config",
                                 str(tmp_path / "run.toml")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["id"] for e in manifest["entries"]] == ["exported-float32", "exported-float16"]
    # the reference is the serving signature's output on the test split
    serve = tf.saved_model.load(str(user / "exported")).signatures["serving_default"]
    expected = next(iter(serve(tf.constant(x)).values())).numpy()
    reference = np.load(out / manifest["models"]["exported"]["reference"])
    np.testing.assert_allclose(reference, expected, rtol=1e-6, atol=1e-6)
    merged = json.loads((out / "results.json").read_text())
    assert {r["status"] for r in merged["results"]} == {"pass"}
