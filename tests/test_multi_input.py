"""Models with several inputs (an 8x8 image and a scalar), through `convert`, `check`, `run` and
the runner, with the .npz keys the README documents (x_train_<input name>, x_test_<input name>)
and `--rep-data` as a .npz of one array per input name. The .tflite lists its inputs in an order
of its own: everything is matched by the Keras input names. A model with several outputs is
refused in one line."""

import importlib.util
import json
import shutil

import keras
import numpy as np
import pytest
from conftest import needs, one_line
from typer.testing import CliRunner

from edgepipe.pipeline.cli import app

runner = CliRunner()
MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None


def _image_and_scalar(rng, n):
    """Class 1 when the top half of the image is bright, offset by the scalar."""
    image = rng.random((n, 8, 8, 1)).astype(np.float32)
    scalar = rng.normal(size=(n, 1)).astype(np.float32)
    y = ((image[:, :4].mean(axis=(1, 2, 3)) - 0.5) * 8 + scalar[:, 0] > 0).astype(np.int64)
    return image, scalar, y


def _pair(rng, n):
    """Two inputs of the same shape whose roles differ: class 1 when right - left > 0."""
    right, left = (rng.normal(size=(n, 4)).astype(np.float32) for _ in range(2))
    return right, left, ((right - left).sum(axis=1) > 0).astype(np.int64)


def _fit(model, x, y, epochs):
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """image_scalar.keras with its data (d.npz) and calibration samples (rep.npz); pair.keras
    (inputs 'right' and 'left', both (4,)) with pair.npz; two_out.keras (two outputs)."""
    root = tmp_path_factory.mktemp("two")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    image, scalar, y = _image_and_scalar(rng, 400)
    image_t, scalar_t, y_t = _image_and_scalar(rng, 80)
    a = keras.Input((8, 8, 1), name="image")
    b = keras.Input((1,), name="scalar")
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(a))
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(h), b])
    model = keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(h))
    _fit(model, [image, scalar], y, 20)
    model.save(root / "image_scalar.keras")
    np.savez(root / "rep.npz", image=image, scalar=scalar)
    np.savez(root / "d.npz", x_train_image=image, x_train_scalar=scalar, y_train=y,
             x_test_image=image_t, x_test_scalar=scalar_t, y_test=y_t)

    right, left, y = _pair(rng, 400)
    right_t, left_t, y_t = _pair(rng, 80)
    r, l_ = keras.Input((4,), name="right"), keras.Input((4,), name="left")
    diff = keras.layers.Subtract()([r, l_])
    pair = keras.Model([r, l_], keras.layers.Dense(2, activation="softmax")(diff))
    _fit(pair, [right, left], y, 20)
    pair.save(root / "pair.keras")
    np.savez(root / "pair.npz", x_train_right=right, x_train_left=left, y_train=y,
             x_test_right=right_t, x_test_left=left_t, y_test=y_t)

    x = keras.Input((3,), name="x")
    keras.Model(x, [keras.layers.Dense(1)(x), keras.layers.Dense(2)(x)]).save(
        root / "two_out.keras")
    return root


def test_convert_calibrates_each_input_by_its_name(two, tmp_path):
    result = runner.invoke(app, ["convert", str(two / "image_scalar.keras"), "--mode", "all",
                                 "--rep-data", str(two / "rep.npz"), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = {m: json.loads((tmp_path / f"image_scalar.{m}.json").read_text()) for m in MODES}
    for mode, record in records.items():
        assert record["status"] == "converted", (mode, record["reason"])
    assert records["float32"]["forward_check"]["ok"]
    assert records["int8"]["converter"]["representative_samples"] == 200
    scales = {i["name"]: i["scale"][0] for i in records["int8"]["inputs"]}
    # Each input got its own range: the image spans [0, 1), the scalar N(0, 1) (about 6 wide).
    assert scales["serving_default_image:0"] == pytest.approx(1 / 255, rel=0.02)
    assert 4 / 255 < scales["serving_default_scalar:0"] < 10 / 255


def test_check_every_mode(two):
    result = runner.invoke(app, ["check", str(two / "image_scalar.keras"), "--mode", "all",
                                 "--rep-data", str(two / "rep.npz")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    for mode in MODES:
        assert f"image_scalar.{mode}.tflite: pass" in text, text


@pytest.fixture(scope="module")
def two_run(two, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_run")
    result = runner.invoke(app, ["run", "--model", str(two / "image_scalar.keras"), "--data",
                                 str(two / "d.npz"), "--targets", "host,host-ref", "--out",
                                 str(out)], env={"COLUMNS": "200"})
    return out, result


def test_run_passes_every_mode_on_host_and_host_ref(two_run):
    out, result = two_run
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "results.json").read_text())
    keys = {(r["mode"], r["target"]): r for r in merged["results"]}
    assert set(keys) == {(m, t) for m in MODES for t in ("host", "host-ref")}
    for key, record in keys.items():
        assert record["status"] == "pass", (key, record["reason"])


def test_the_bundle_holds_one_file_per_input_in_the_models_order(two, two_run):
    out, _ = two_run
    dataset = json.loads((out / "manifest.json").read_text())["datasets"]["d"]
    assert "inputs" not in dataset and "inputs_sha256" not in dataset
    assert [(f["name"], f["dtype"]) for f in dataset["input_files"]] == [
        ("image", "float32"), ("scalar", "float32")]
    given = np.load(two / "d.npz")
    for item in dataset["input_files"]:
        np.testing.assert_array_equal(np.load(out / item["path"]),
                                      given[f"x_test_{item['name']}"])


def test_inputs_of_the_same_shape_are_matched_by_name(two, tmp_path):
    """'right' and 'left' have the same shape: only their names tell them apart, and the
    .tflite lists them in another order than the model."""
    model = keras.models.load_model(two / "pair.keras")
    given = np.load(two / "pair.npz")
    right, left = given["x_test_right"], given["x_test_left"]
    swapped = np.asarray(model([left, right]))
    assert np.abs(swapped - np.asarray(model([right, left]))).max() > 0.3  # order matters
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--model", str(two / "pair.keras"), "--data",
                                 str(two / "pair.npz"), "--targets", "host", "--out", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    record = json.loads((out / "tflite" / "pair.int8.json").read_text())
    assert [i["name"] for i in record["inputs"]] == ["serving_default_left:0",
                                                     "serving_default_right:0"], \
        "the converter kept the model's order: pick input names it reorders"
    for r in json.loads((out / "results.json").read_text())["results"]:
        assert r["status"] == "pass", (r["id"], r["reason"])


def test_tflite_micro_matches_unnamed_inputs_by_shape(two_run):
    """TFLite Micro names no input: the image and the scalar differ in shape, which is how
    they are told apart there."""
    needs(HAVE_TFLM, "tflite-micro is not installed (pip install 'edgepipe[micro]'; "
          "x86-64 Linux only)")
    from edgepipe.device_tests.runner import run_bundle

    out, _ = two_run
    document = run_bundle(out, runtime="tflite_micro", only=["image_scalar-int8"])
    (record,) = document["results"]
    assert record["status"] == "pass", record["reason"]


def test_npz_keys_for_several_inputs(two, tmp_path):
    given = dict(np.load(two / "d.npz"))
    model = str(two / "image_scalar.keras")
    np.savez(tmp_path / "plain.npz", x_train=given["x_train_image"], y_train=given["y_train"],
             x_test=given["x_test_image"], y_test=given["y_test"])
    result = runner.invoke(app, ["run", "--model", model, "--data", str(tmp_path / "plain.npz"),
                                 "--out", str(tmp_path / "out")])
    one_line(result, 2, "has one x_train, but the model takes 2 inputs ('image', 'scalar'): "
             "save one array per input, numpy.savez(path, x_train_image=..., "
             "x_train_scalar=..., x_test_image=..., x_test_scalar=..., y_train=..., y_test=...)")
    del given["x_test_scalar"]
    np.savez(tmp_path / "half.npz", **given)
    result = runner.invoke(app, ["run", "--model", model, "--data", str(tmp_path / "half.npz"),
                                 "--out", str(tmp_path / "out")])
    one_line(result, 2, "has no array 'x_test_scalar'")
    given = dict(np.load(two / "d.npz"))
    given["x_train_scalar"] = np.zeros((400, 2), np.float32)
    given["x_test_scalar"] = np.zeros((80, 2), np.float32)
    np.savez(tmp_path / "wide.npz", **given)
    result = runner.invoke(app, ["run", "--model", model, "--data", str(tmp_path / "wide.npz"),
                                 "--out", str(tmp_path / "out")])
    one_line(result, 2, "image_scalar.keras takes samples of shape (1,) for its input 'scalar' "
             "but x_train_scalar in", "has samples of shape (2,)")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_rep_data_for_several_inputs_names_a_missing_input(two, tmp_path):
    np.savez(tmp_path / "rep.npz", image=np.load(two / "rep.npz")["image"])
    result = runner.invoke(app, ["convert", str(two / "image_scalar.keras"), "--mode", "int8",
                                 "--rep-data", str(tmp_path / "rep.npz"), "-o",
                                 str(tmp_path / "out")])
    one_line(result, 2, "has no array 'scalar' for the model's input 'scalar' (it has: "
             "'image'); save one array per input, numpy.savez(path, image=..., scalar=...)")


@pytest.mark.parametrize("command", ["convert", "check", "run"])
def test_several_outputs_are_refused_in_one_line(two, tmp_path, command):
    path = str(two / "two_out.keras")
    np.savez(tmp_path / "d.npz", x_train=np.zeros((20, 3), np.float32),
             y_train=np.zeros(20, np.float32), x_test=np.zeros((4, 3), np.float32),
             y_test=np.zeros(4, np.float32))
    args = {"convert": ["convert", path, "--mode", "float32", "-o", str(tmp_path / "out")],
            "check": ["check", path],
            "run": ["run", "--model", path, "--data", str(tmp_path / "d.npz"), "--out",
                    str(tmp_path / "out")]}[command]
    one_line(runner.invoke(app, args), 2, "two_out.keras: the model has 2 outputs",
             "edgepipe compares models with one output")


def test_the_runner_checks_the_input_files(two_run, tmp_path):
    from edgepipe.device_tests.bundle import BundleError, load_bundle
    from edgepipe.device_tests.runner import run_bundle

    out, _ = two_run
    bundle = tmp_path / "bundle"
    shutil.copytree(out, bundle, ignore=shutil.ignore_patterns("results*", ".edgepipe"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = manifest["datasets"]["d"]["input_files"]
    files[0]["dtype"] = "int32"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (record,) = run_bundle(bundle, only=["image_scalar-float32"])["results"]
    assert record["status"] == "error"
    assert record["reason"] == ("data/d.inputs.0.npy holds float32 but datasets.d.input_files[0]"
                                ".dtype says int32; rebuild the bundle")
    files[0]["dtype"], files[1]["name"] = "float32", "image"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"datasets\.d\.input_files must be one entry per "
                                          r"model input \(unique names\)"):
        load_bundle(bundle)
