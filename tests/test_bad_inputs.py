"""Bad input through the commands where it arises: one stderr line (what, where, what to do),
exit 2 for bad input and 1 for a failed check, no traceback, nothing half-written.

Cases covered elsewhere and not repeated here: malformed .tflite files
(tests/test_tflite_file.py), bundle integrity and NaN inputs on the runner
(tests/test_device_runner.py), the .npz checks one by one (tests/test_datasets.py), config typos
in-process (tests/test_run_config.py), user-model loading (tests/test_user_models.py).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import typer
from conftest import one_line
from tiny_bundle import REPO, put_array, read_manifest, write_manifest
from typer.testing import CliRunner

from edgepipe.core.files import sha256_file
from edgepipe.pipeline.cli import app, guarded

runner = CliRunner()

INVERSE_PY = textwrap.dedent('''
    import keras
    import tensorflow as tf


    class MyInverse(keras.layers.Layer):
        """tf.linalg.inv: MatrixInverse has no TFLite builtin (only Flex)."""

        def call(self, x):
            m = tf.reshape(x, [-1, 2, 2]) + 3.0 * tf.eye(2)
            return tf.reshape(tf.linalg.inv(m), [-1, 4])
''')


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small models (random weights: nothing here needs a trained one) and a Flex .tflite."""
    import importlib.util

    import tensorflow as tf

    root = tmp_path_factory.mktemp("bad_inputs")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    wide = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Dense(256, activation="relu", name="hidden")(inputs)))  # ~13 KB float32
    wide.save(root / "wide.keras")
    weights = wide.get_weights()
    weights[0][3, 7] = np.nan
    wide.set_weights(weights)
    wide.save(root / "nan_weights.keras")

    (root / "inverse_layers.py").write_text(INVERSE_PY)
    spec = importlib.util.spec_from_file_location("inverse_layers_under_test",
                                                  root / "inverse_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = keras.Input((4,))
    inverse = keras.Model(inputs, keras.layers.Dense(2)(module.MyInverse(name="my_inverse")(
        keras.layers.Dense(4)(inputs))))
    inverse.save(root / "inverse.keras")
    converter = tf.lite.TFLiteConverter.from_keras_model(inverse)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    (root / "inverse.tflite").write_bytes(converter.convert())
    return root


def _npz(path: Path, **change) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(40, 10)), "y_train": rng.normal(size=40),
              "x_test": rng.normal(size=(8, 10)), "y_test": rng.normal(size=8), **change}
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- wrong input shape or dtype


def test_train_data_of_the_wrong_dtype(tmp_path):
    path = _npz(tmp_path / "d.npz", x_train=np.array([["a"] * 10] * 40))
    result = runner.invoke(app, ["train", "mlp_swish", "--data", str(path), "--out",
                                 str(tmp_path / "out")])
    one_line(result, 2, f"Data file {path}: x_train holds text (dtype <U1); expected real "
             "numbers (integers or floats): convert it, e.g. x_train.astype('float32').")


@pytest.mark.parametrize("samples, fragments", [
    pytest.param(np.zeros((20, 8), np.float32),
                 ["expected samples of shape (10,) (array shape (N, 10)), got array shape "
                  "(20, 8)"], id="shape"),
    pytest.param(np.array([["x"] * 10] * 5), ["expected real numbers (float32), got dtype <U1"],
                 id="dtype"),
    pytest.param(np.zeros((0, 10), np.float32),
                 ["representative dataset is empty; the int8 and int16x8 modes need samples of "
                  "shape (10,) to calibrate"], id="empty"),
    pytest.param(np.where(np.arange(200).reshape(20, 10) == 75, np.nan, 0.5),
                 ["sample 7 contains NaN or Inf (1 of 20 samples do); remove them"], id="nan"),
    pytest.param(np.where(np.arange(200).reshape(20, 10) >= 190, np.inf, 0.5),
                 ["sample 19 contains NaN or Inf"], id="inf"),
])
def test_representative_data_is_refused_naming_the_problem(files, tmp_path, samples, fragments):
    rep = tmp_path / "rep.npy"
    np.save(rep, samples)
    result = runner.invoke(app, ["convert", str(files / "wide.keras"), "--mode", "int8",
                                 "--rep-data", str(rep), "-o", str(tmp_path / "out")])
    line = one_line(result, 2, *fragments)
    assert line.startswith(f"error: {rep}: ")
    assert not list((tmp_path / "out").iterdir())  # refused before anything was written


def test_run_with_data_that_does_not_fit_the_model(files, tmp_path):
    path = _npz(tmp_path / "d.npz", x_train=np.zeros((40, 8)), x_test=np.zeros((8, 8)))
    result = runner.invoke(app, ["run", "--model", str(files / "wide.keras"), "--data",
                                 str(path), "--out", str(tmp_path / "out")])
    one_line(result, 2, "wide.keras takes samples of shape (10,) but x_train in",
             "has samples of shape (8,); give data shaped as the model's input")


@pytest.mark.parametrize("array, words", [
    pytest.param(np.zeros((48, 5), np.float32), "expects (N, 4)", id="shape"),
    pytest.param(np.zeros((48, 4), np.float64), "Received: float64", id="dtype"),
])
def test_runner_command_with_wrong_inputs(tiny_bundle, tmp_path, array, words):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], bundle)
    manifest = read_manifest(bundle)
    manifest["datasets"]["reg"]["inputs_sha256"] = put_array(bundle, "data/reg.inputs.npy", array)
    write_manifest(bundle, manifest)
    done = subprocess.run([sys.executable, "-m", "device_tests.runner", str(bundle), "--out",
                           str(tmp_path / "r.json"), "--only", "mlp-float32"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    entry = [line for line in lines if line.startswith("mlp-float32: error ")]
    assert len(entry) == 1 and words in entry[0], done.stderr
    assert lines[-1].endswith("0 pass, 0 fail, 0 unsupported, 1 error"), done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- NaN / Inf


def test_train_data_with_inf_names_the_sample(tmp_path):
    x_test = np.zeros((8, 10))
    x_test[3, 2] = np.inf
    path = _npz(tmp_path / "d.npz", x_test=x_test)
    result = runner.invoke(app, ["train", "mlp_swish", "--data", str(path), "--out",
                                 str(tmp_path / "out")])
    one_line(result, 2, f"Data file {path}: x_test has NaN or Inf at sample 3 (1 bad samples). "
             "Clean or drop them.")


def test_run_data_with_nan_names_the_sample(files, tmp_path):
    x_train = np.zeros((40, 10))
    x_train[5, 0] = np.nan
    path = _npz(tmp_path / "d.npz", x_train=x_train)
    result = runner.invoke(app, ["run", "--model", str(files / "wide.keras"), "--data",
                                 str(path), "--out", str(tmp_path / "out")])
    one_line(result, 2, "x_train has NaN or Inf at sample 5")


@pytest.mark.parametrize("command", ["convert", "check", "run"])
def test_nan_weights_are_refused_naming_the_layer(files, tmp_path, command):
    path = files / "nan_weights.keras"
    npz = _npz(tmp_path / "d.npz")
    args = {"convert": ["convert", str(path), "--mode", "float32", "-o", str(tmp_path / "out")],
            "check": ["check", str(path)],
            "run": ["run", "--model", str(path), "--data", str(npz), "--out",
                    str(tmp_path / "out")]}[command]
    line = one_line(runner.invoke(app, args), 2)
    assert line == (f"error: {path}: the weights of layer 'hidden' hold NaN or Inf "
                    "(hidden/kernel: 1 of 2560 values); retrain the model or fix those weights "
                    "before converting.")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ---------------------------------------------------------------- Flex ops


def test_convert_names_the_flex_op_and_layer(files, tmp_path):
    result = runner.invoke(app, ["convert", str(files / "inverse.keras"), "--mode", "float32",
                                 "--custom-objects", str(files / "inverse_layers.py"), "-o",
                                 str(tmp_path)], env={"COLUMNS": "200"})
    one_line(result, 1, "failed: inverse (float32): needs TF op MatrixInverse in layer "
             "'my_inverse', which no TFLite builtin implements (it would need "
             "Flex/SELECT_TF_OPS, which edgepipe never enables). Rewrite that layer's call()",
             prefix="failed: ")
    assert not (tmp_path / "inverse.float32.tflite").exists()


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_check_on_a_flex_tflite_says_so(files, as_json):
    path = files / "inverse.tflite"
    result = runner.invoke(app, ["check", str(path), *(["--json"] if as_json else [])],
                           env={"COLUMNS": "200"})
    one_line(result, 1, f"failed: {path}: op ", "(FlexMatrixInverse) in subgraph 0 is a Flex "
             "(TF Select) op: it needs the TensorFlow runtime linked in, which edge targets do "
             "not have", prefix="failed: ")
    if as_json:
        assert json.loads(result.stdout)["status"] == "failed"
    else:
        assert "FlexMatrixInverse" in result.stdout and "flex" in result.stdout


# ---------------------------------------------------------------- unknown config keys


@pytest.mark.parametrize("text, fragments", [
    pytest.param("[run]\nrep_sample = 10\n",
                 ["Unknown key 'rep_sample' in", "[run]. Did you mean 'rep_samples'?"],
                 id="run"),
    pytest.param("[run]\ncustom_object = ['l.py']\n", ["Did you mean 'custom_objects'?"],
                 id="custom-objects"),
    pytest.param("[targets]\ntimout = 5\n", ["[targets]. Did you mean 'timeout'?"],
                 id="targets"),
    pytest.param("[tolerance.mlp_swish.int8]\nmax_abs = 1\n",
                 ["Unknown key 'tolerance' in", "Did you mean 'tolerances'?"], id="table"),
])
def test_run_config_typo_suggests_the_nearest_key(tmp_path, text, fragments):
    config = tmp_path / "edgepipe.toml"
    config.write_text(text)
    result = runner.invoke(app, ["run", "--config", str(config), "--out", str(tmp_path / "out")])
    line = one_line(result, 2, *fragments)
    assert str(config) in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- read-only or full output


def _mount_tmpfs(path: Path, options: str) -> Path:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return path


@pytest.fixture
def mount(tmp_path):
    mounted = []

    def make(name: str, options: str) -> Path:
        mounted.append(_mount_tmpfs(tmp_path / name, options))
        return mounted[-1]

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize("args, fragments", [
    pytest.param(["convert", "MODEL", "--mode", "float32", "-o", "RO"],
                 ["Output folder RO is not writable: Read-only file system. Choose another "
                  "--out."], id="convert-existing-folder"),
    pytest.param(["convert", "MODEL", "--mode", "float32", "-o", "RO/new"],
                 ["Cannot create output folder RO/new: Read-only file system. Choose another "
                  "--out."], id="convert-new-folder"),
    pytest.param(["train", "mlp_swish", "--out", "RO"], ["Output folder RO is not writable"],
                 id="train"),
    pytest.param(["run", "--out", "RO/run"], ["Cannot create output folder RO/run"], id="run"),
])
def test_read_only_output_folder(files, mount, args, fragments):
    """chmod does not stop root: a tmpfs mounted read-only does."""
    ro = mount("ro", "ro,size=64k")
    args = [str(files / "wide.keras") if a == "MODEL" else a.replace("RO", str(ro))
            for a in args]
    one_line(runner.invoke(app, args), 2, *(f.replace("RO", str(ro)) for f in fragments))


def _fill(folder: Path, leave: int) -> None:
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_full_output_folder_is_refused_before_any_work(files, mount):
    full = mount("full", "size=64k")
    _fill(full, 0)
    result = runner.invoke(app, ["convert", str(files / "wide.keras"), "--mode", "float32",
                                 "-o", str(full)])
    one_line(result, 2, f"Output folder {full} is on a full file system (0 bytes free). Free "
             "some space or choose another --out.")
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_folder_that_fills_up_during_conversion_leaves_only_whole_files(files, mount):
    full = mount("full", "size=64k")
    _fill(full, 20 * 1024)  # the float32 variant (13 KB) and its record fit; not the rest
    result = runner.invoke(app, ["convert", str(files / "wide.keras"), "--mode",
                                 "float32,float16,dynamic", "-o", str(full)])
    one_line(result, 2, f"No space left on the device while writing to {full}: free some space "
             "or choose another --out.")
    names = sorted(p.name for p in full.iterdir())
    assert not [n for n in names if n.startswith(".") or ".tmp" in n], names  # no temp files
    for record in full.glob("*.json"):  # whatever is there is whole
        data = json.loads(record.read_text())
        if data.get("file"):
            assert sha256_file(full / data["file"]) == data["sha256"]
    for tflite in full.glob("*.tflite"):
        assert (full / tflite.name.replace(".tflite", ".json")).is_file(), names
    assert "wide.float32.tflite" in names and "wide.dynamic.tflite" not in names, names


def test_enospc_from_any_write_is_one_line(capsys):
    """Where no tmpfs can be mounted: /dev/full gives ENOSPC to a plain file write."""

    @guarded
    def write():
        Path("/dev/full").write_bytes(b"\0" * 8192)

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(typer.Exit) as info:
        write()
    assert info.value.exit_code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: No space left on the device while "
                                               "writing to"), err
