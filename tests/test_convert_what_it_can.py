"""`edgepipe convert --mode all` without representative data converts the float modes, records
the integer ones as needing --rep-data (with the shape to pass) and exits 1, not 2; a finding
that holds in every mode (an op no builtin has) is printed once."""

import json
import textwrap

import pytest
from conftest import import_as
from typer.testing import CliRunner

from edgepipe.pipeline.cli import app

runner = CliRunner()

# A user's model file as they write it: a layer that calls an op TFLite has no builtin for.
MODEL_PY = textwrap.dedent('''
    import keras
    import tensorflow as tf


    class Inverse(keras.layers.Layer):
        def call(self, x):
            m = tf.reshape(x, [-1, 2, 2]) + 3.0 * tf.eye(2)
            return tf.reshape(tf.linalg.inv(m), [-1, 4])


    def build(path, flex):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        h = keras.layers.Dense(4)(inputs)
        h = Inverse()(h) if flex else keras.layers.Activation("swish")(h)
        keras.Model(inputs, keras.layers.Dense(2)(h)).save(path)
''')


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    (root / "layers.py").write_text(MODEL_PY)
    module = import_as(root / "layers.py", "partial_layers")
    module.build(root / "plain.keras", flex=False)
    module.build(root / "flex.keras", flex=True)
    return root


def _convert(models, name, mode, out):
    return runner.invoke(app, ["convert", str(models / f"{name}.keras"), "--mode", mode,
                               "-o", str(out), "--custom-objects", str(models / "layers.py")],
                         env={"COLUMNS": "250"})


def test_without_rep_data_the_float_modes_convert_and_the_integer_ones_say_what_to_pass(
        models, tmp_path):
    result = _convert(models, "plain", "all", tmp_path)
    assert result.exit_code == 1, result.output
    records = {m: json.loads((tmp_path / f"plain.{m}.json").read_text())
               for m in ("float32", "float16", "dynamic", "int8", "int16x8")}
    for mode in ("float32", "float16", "dynamic"):
        assert records[mode]["status"] == "converted", records[mode]["reason"]
        assert (tmp_path / f"plain.{mode}.tflite").is_file()
    for mode in ("int8", "int16x8"):
        assert records[mode]["status"] == "failed"
        assert "--rep-data samples.npy (shape (N, 4))" in records[mode]["reason"]
        assert not (tmp_path / f"plain.{mode}.tflite").exists()
    # one line for both integer modes
    lines = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(lines) == 1 and "(int8, int16x8)" in lines[0], result.output


def test_only_integer_modes_without_rep_data_is_still_bad_input(models, tmp_path):
    result = _convert(models, "plain", "int8,int16x8", tmp_path)
    assert result.exit_code == 2, result.output
    assert "--rep-data samples.npy (shape (N, 4))" in result.output
    assert not list(tmp_path.glob("*.tflite"))


def test_the_flex_finding_is_shown_once_for_every_float_mode(models, tmp_path):
    result = _convert(models, "flex", "all", tmp_path)
    assert result.exit_code == 1, result.output
    flex = [line for line in result.output.splitlines()
            if line.startswith("failed:") and "MatrixInverse" in line]
    assert len(flex) == 1 and "(float32, float16, dynamic)" in flex[0], result.output
    record = json.loads((tmp_path / "flex.float32.json").read_text())
    assert record["ops"] == ["MatrixInverse"]
