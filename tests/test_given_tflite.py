"""A `.tflite` the user already has, checked against the Keras model it came from:
`edgepipe run --model m.keras --tflite m_int8.tflite --data d.npz` puts it in the bundle as its
own entry, its mode read from the file."""

import json
import shutil

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from edgepipe.converters.given import mode_of
from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.pipeline.cli import app

runner = CliRunner()
MODES = ("float32", "float16", "dynamic", "int8", "int16x8")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A user's regression model, its data, and the five .tflite files they once made from it
    (under names of their own)."""
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("shipped")
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x[:354].mean(0)) / x[:354].std(0)).astype(np.float32)
    y = ((y - y[:354].mean()) / y[:354].std()).astype(np.float32)
    np.savez(root / "d.npz", x_train=x[:354], y_train=y[:354], x_test=x[354:], y_test=y[354:])
    np.save(root / "rep.npy", x[:200])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(32, activation="swish")(inputs)  # 320 weights + 32 x 32 below
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x[:354], y[:354], epochs=20, batch_size=32, verbose=0)
    model.save(root / "m.keras")
    result = runner.invoke(app, ["convert", str(root / "m.keras"), "--mode", "all", "--rep-data",
                                 str(root / "rep.npy"), "-o", str(root / "converted")])
    assert result.exit_code == 0, result.output
    for mode in MODES:
        shutil.copy(root / "converted" / f"m.{mode}.tflite", root / f"m_shipped_{mode}.tflite")
    return root


@pytest.mark.parametrize("mode", MODES)
def test_the_mode_is_read_from_the_file(shipped, mode):
    path = shipped / f"m_shipped_{mode}.tflite"
    assert mode_of(read_tflite_file(path), str(path)).value == mode


def test_a_given_tflite_is_its_own_entry_checked_against_keras(shipped, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "run.toml").write_text('[run]\nmodes = ["float32"]\n')
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "run.toml"),
                                 "--model", str(shipped / "m.keras"),
                                 "--tflite", str(shipped / "m_shipped_int8.tflite"),
                                 "--tflite", str(shipped / "m_shipped_float16.tflite"),
                                 "--data", str(shipped / "d.npz"), "--out", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {e["id"]: e for e in manifest["entries"]}
    assert set(entries) == {"m-float32", "m-int8.m_shipped_int8", "m-float16.m_shipped_float16"}
    given = entries["m-int8.m_shipped_int8"]
    assert given["mode"] == "int8" and given["given"] == str(shipped / "m_shipped_int8.tflite")
    assert given["converter"] is None
    assert (out / given["tflite"]).read_bytes() == (shipped / "m_shipped_int8.tflite").read_bytes()
    # its bound is derived from the Keras model, in the mode its file holds
    assert given["tolerance"]["output_step"] > 0 and "int8" in given["tolerance"]["derivation"]
    merged = json.loads((out / "results.json").read_text())
    statuses = {(r["id"], r["target"]): r["status"] for r in merged["results"]}
    assert statuses == {(i, t): "pass" for i in entries for t in ("host", "host-ref")}
    assert "int8.m_shipped_int8" in result.output  # its own row in the table


def test_a_given_tflite_needs_its_keras_model(shipped, tmp_path):
    result = runner.invoke(app, ["run", "--tflite", str(shipped / "m_shipped_int8.tflite"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "checked against the Keras model they came from" in result.output
    result = runner.invoke(app, ["run", "--model", str(shipped / "m.keras"), "--data",
                                 str(shipped / "d.npz"), "--tflite", str(shipped / "d.npz"),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Expected an existing .tflite file" in result.output
