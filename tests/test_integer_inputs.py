"""A model that takes token ids: Embedding(int32 ids) -> GlobalAveragePooling1D -> Dense, as
users write text classifiers. The ids are neither standardised nor cast to float nor quantized,
through `check`, `convert`, `run` and the runner; int8 keeps the int32 input; int16x8 is
unsupported for a reason TFLite gives, said in one line naming the input."""

import json

import keras
import numpy as np
import pytest
from conftest import one_line
from typer.testing import CliRunner

from edgepipe.pipeline.cli import app

runner = CliRunner()
MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
VOCAB, LENGTH, SIGNAL = 20, 12, 7  # class: whether token 7 appears


def _tokens(rng, n):
    ids = rng.integers(1, VOCAB, size=(n, LENGTH))
    ids[ids == SIGNAL] = SIGNAL + 1
    has = rng.random(n) < 0.5
    where = rng.integers(0, LENGTH, size=n)
    ids[has, where[has]] = SIGNAL
    return ids, has.astype(np.int64)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """m.keras (trained to tell whether token 7 appears), ids.npy (int32 calibration ids) and
    d.npz (ids as numpy makes them, int64; labels 0/1)."""
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    x, y = _tokens(rng, 400)
    x_test, y_test = _tokens(rng, 80)
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 8)(ids))
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(pooled))
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x.astype(np.int32), y, epochs=15, batch_size=32, verbose=0)
    assert model.evaluate(x_test.astype(np.int32), y_test, verbose=0)[1] > 0.95
    model.save(root / "m.keras")
    np.save(root / "ids.npy", x.astype(np.int32))
    np.savez(root / "d.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    return root


def test_check_audits_and_converts_every_mode(tokens):
    result = runner.invoke(app, ["check", str(tokens / "m.keras"), "--mode", "all",
                                 "--rep-data", str(tokens / "ids.npy")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # the console wraps long lines
    for mode in ("float32", "float16", "dynamic", "int8"):
        assert f"m.{mode}.tflite: pass" in text, text
    # The forward check runs on the ids given, not on random floats cast to ids.
    assert "float32 forward vs Keras on the 200 representative samples" in text
    assert ("m.int16x8: unsupported: unsupported: TFLite's int16x8 quantizer needs a calibrated "
            "range for every tensor, and calibration records none for the model's integer "
            "input 'tokens' (token ids or indices). Deploy int8") in text


def test_convert_keeps_the_ids_integers(tokens, tmp_path):
    result = runner.invoke(app, ["convert", str(tokens / "m.keras"), "--mode", "all",
                                 "--rep-data", str(tokens / "ids.npy"), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = {m: json.loads((tmp_path / f"m.{m}.json").read_text()) for m in MODES}
    for mode in ("float32", "float16", "dynamic", "int8"):
        record = records[mode]
        assert record["status"] == "converted", (mode, record["reason"])
        # Every variant takes the ids as int32, unquantized: int8 too (its output is int8).
        (ids,) = record["inputs"]
        assert (ids["name"], ids["dtype"], ids["scale"]) == ("serving_default_tokens:0",
                                                              "int32", []), (mode, ids)
    assert records["int8"]["outputs"][0]["dtype"] == "int8"
    assert records["int8"]["converter"]["representative_samples"] == 200
    assert records["float32"]["forward_check"]["ok"]
    assert records["int16x8"]["status"] == "unsupported"
    assert "integer input 'tokens'" in records["int16x8"]["reason"]


def test_convert_without_samples_checks_the_forward_on_valid_ids(tokens, tmp_path):
    result = runner.invoke(app, ["convert", str(tokens / "m.keras"), "--mode", "float32",
                                 "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    check = json.loads((tmp_path / "m.float32.json").read_text())["forward_check"]
    assert check["ok"] and "integer inputs 0 or 1" in check["data"], check


@pytest.fixture(scope="module")
def token_run(tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("token_run")
    result = runner.invoke(app, ["run", "--model", str(tokens / "m.keras"), "--data",
                                 str(tokens / "d.npz"), "--targets", "host,host-ref", "--out",
                                 str(out)], env={"COLUMNS": "200"})
    return out, result


def test_run_passes_on_host_and_host_ref_with_ids_as_given(tokens, token_run):
    out, result = token_run
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    inputs = np.load(out / manifest["datasets"]["d"]["inputs"])
    # The model's input dtype, the values exactly as given: not standardised, not floats.
    assert inputs.dtype == np.int32
    np.testing.assert_array_equal(inputs, np.load(tokens / "d.npz")["x_test"])
    statuses = {(r["mode"], r["target"]): r for r in
                json.loads((out / "results.json").read_text())["results"]}
    for target in ("host", "host-ref"):
        for mode in ("float32", "float16", "dynamic", "int8"):
            record = statuses[(mode, target)]
            assert record["status"] == "pass", (mode, target, record["reason"])
            assert record["metrics"]["task"]["variant"] > 0.95
        unsupported = statuses[("int16x8", target)]
        assert unsupported["status"] == "unsupported"
        assert "integer input 'tokens'" in unsupported["reason"]


def test_fractional_ids_are_refused_naming_the_array(tokens, tmp_path):
    given = np.load(tokens / "d.npz")
    x_train = given["x_train"].astype(np.float64)
    x_train[3, 5] = 2.5
    np.savez(tmp_path / "bad.npz", x_train=x_train, y_train=given["y_train"],
             x_test=given["x_test"], y_test=given["y_test"])
    result = runner.invoke(app, ["run", "--model", str(tokens / "m.keras"), "--data",
                                 str(tmp_path / "bad.npz"), "--out", str(tmp_path / "out")])
    one_line(result, 2, "x_train feeds the model's integer input (int32: token ids or indices) "
             "but holds fractions (first at sample 3)")


def test_ids_beyond_int32_are_refused(tokens, tmp_path):
    rep = np.load(tokens / "ids.npy").astype(np.int64)
    rep[0, 0] = 2 ** 40
    np.save(tmp_path / "big.npy", rep)
    result = runner.invoke(app, ["convert", str(tokens / "m.keras"), "--mode", "int8",
                                 "--rep-data", str(tmp_path / "big.npy"), "-o",
                                 str(tmp_path / "out")])
    one_line(result, 2, f"{tmp_path / 'big.npy'}: values from", "do not fit the model's int32 "
             "input")
