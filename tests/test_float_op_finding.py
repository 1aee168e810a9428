"""A float op left inside an integer model (the tutorial step's CAST) is a finding, not an error:
the variant converts, runs with parity figures where LiteRT runs it, is unsupported on targets
that run integer models integer-only, and `convert`/`check` flag it with the rewrite. A user's
model is never told about "this activation" in the zoo's words."""

import importlib.util
import json
import textwrap

import keras
import numpy as np
import pytest
from conftest import needs
from typer.testing import CliRunner

from edgepipe.converters.convert import explain_failure
from edgepipe.converters.modes import QuantMode
from edgepipe.converters.variants import convert_model
from edgepipe.pipeline.cli import app

runner = CliRunner()
HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
REWRITE = "tf.where(x > t, 1.0, 0.0) (constant branches)"

# A step as tutorials write it: unregistered, a cast of a comparison.
LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    class Threshold(tf.keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def call(self, x):
            return tf.cast(tf.greater(x, 0.0), tf.float32)
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """layers.py, diabetes.npz, rep.npy and step.keras (Dense -> Threshold -> Dense)."""
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("float_op")
    (root / "layers.py").write_text(LAYERS_PY)
    spec = importlib.util.spec_from_file_location("float_op_layers_under_test",
                                                  root / "layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x[:354].mean(0)) / x[:354].std(0)).astype(np.float32)
    y = ((y - y[:354].mean()) / y[:354].std()).astype(np.float32)
    np.savez(root / "diabetes.npz", x_train=x[:354], y_train=y[:354], x_test=x[354:],
             y_test=y[354:])
    np.save(root / "rep.npy", x[:200])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    hidden = layers.Threshold(name="threshold")(keras.layers.Dense(16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.save(root / "step.keras")
    return root, model


def test_the_cast_of_a_comparison_converts_with_a_finding_and_its_rewrite(user, tmp_path):
    root, model = user
    rep = np.load(root / "rep.npy")
    int8, int16 = convert_model(model, "step", [QuantMode.INT8, QuantMode.INT16X8], tmp_path,
                                rep, "rep.npy")
    assert int8.status == "converted", int8.reason
    assert int8.reason == "" and (tmp_path / "step.int8.tflite").is_file()
    [finding] = int8.record["findings"]
    ops = {op["index"]: op for op in int8.record["audit"]["ops"]}
    assert finding["op"] == "CAST" and ops[finding["index"]]["op"] == "CAST"
    assert "float32" in finding["types"]
    assert "computes in float" in finding["message"]
    assert REWRITE in finding["rewrite"]
    assert int8.record["audit"]["findings"] == int8.record["findings"]
    # A user's model: TFLite's int16 limit is said as such, not as the zoo's expected outcome.
    assert int16.status == "unsupported"
    assert int16.reason.startswith("unsupported: op GREATER, CAST has no int16 kernel")
    assert "Expected outcome" not in int16.reason
    assert "Deploy int8 instead" in int16.reason


def test_zoo_wording_only_when_the_caller_says_the_model_is_the_zoos():
    error = RuntimeError("Quantization to 16x8-bit not yet supported for op: 'LOGISTIC'.\n")
    user_reason = str(explain_failure(error, QuantMode.INT16X8))
    zoo_reason = str(explain_failure(error, QuantMode.INT16X8, zoo=True))
    assert "Expected outcome" not in user_reason and "LOGISTIC" in user_reason
    assert "Expected outcome for this activation" in zoo_reason


@pytest.mark.parametrize("command", ["convert", "check"])
def test_convert_and_check_flag_the_finding_with_the_rewrite_and_exit_1(user, tmp_path, command):
    root, _ = user
    args = [command, str(root / "step.keras"), "--mode", "int8", "--rep-data",
            str(root / "rep.npy"), "--custom-objects", str(root / "layers.py")]
    if command == "convert":
        args += ["-o", str(tmp_path)]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "finding: " in line]
    assert lines and all("CAST" in line for line in lines), result.output
    assert any(REWRITE in line for line in lines), result.output
    if command == "convert":  # the file is written: it runs where float kernels exist
        assert json.loads((tmp_path / "step.int8.json").read_text())["status"] == "converted"
        assert (tmp_path / "step.int8.tflite").is_file()


@pytest.fixture(scope="module")
def step_run(user, tmp_path_factory):
    needs(HAVE_TFLM, "tflite-micro is not installed (pip install 'edgepipe[micro]')")
    root, _ = user
    out = tmp_path_factory.mktemp("float_op_run")
    config = root / "modes.toml"
    config.write_text('[run]\nmodes = ["int8", "int16x8"]\n')
    result = runner.invoke(app, ["run", "--config", str(config), "--model",
                                 str(root / "step.keras"), "--data", str(root / "diabetes.npz"),
                                 "--custom-objects", str(root / "layers.py"),
                                 "--targets", "host,host-ref,tflm", "--out", str(out)],
                           env={"COLUMNS": "200"})
    return out, result


def repaired_ids(out) -> set:
    """The repaired entries (their mode is the plain one's: told apart by `repair`)."""
    return {e["id"] for e in json.loads((out / "manifest.json").read_text())["entries"]
            if e.get("repair")}


def test_run_gives_parity_figures_where_litert_runs_it_and_unsupported_on_tflm(step_run):
    out, result = step_run
    assert "Traceback" not in result.output
    merged = json.loads((out / "results.json").read_text())
    repaired = repaired_ids(out)
    by = {(r["mode"], r["target"]): r for r in merged["results"] if r["id"] not in repaired}
    for target in ("host", "host-ref"):
        r = by[("int8", target)]
        assert r["status"] in ("pass", "fail"), (target, r["reason"])
        assert r["metrics"]["max_abs_error"] is not None and r["metrics"]["task"], r
        assert r["checks"], r
    tflm = by[("int8", "tflm")]
    assert tflm["status"] == "unsupported", tflm
    assert tflm["reason"].startswith("tflm runs integer-only int8 models; op ")
    assert "CAST computes in float" in tflm["reason"] and REWRITE in tflm["reason"]
    # Repair keeps the refused ops in float on tflm (op-level islands): its own entry, which
    # tflm runs, while the plain one stays unsupported there.
    [made] = [r for r in merged["results"] if r["id"] in repaired and r["target"] == "tflm"]
    assert made["mode"] == "int8" and made["id"].startswith("step-int8.f32."), made
    assert made["status"] in ("pass", "fail"), made["reason"]
    # The exit code follows what is deployable: unsupported never fails a run.
    assert result.exit_code == (0 if merged["deployable"]["ok"] else 1), result.output


def test_the_finding_is_in_the_manifest_and_users_reasons_have_no_zoo_wording(step_run):
    out, _ = step_run
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {e["mode"]: e for e in manifest["entries"] if not e.get("repair")}
    assert entries["int8"]["status"] == "converted"
    [finding] = entries["int8"]["findings"]
    assert finding["op"] == "CAST" and REWRITE in finding["rewrite"]
    assert entries["int16x8"]["status"] == "unsupported"
    assert "Expected outcome" not in entries["int16x8"]["reason"]


def test_ethos_u_reports_it_unsupported_naming_the_op(step_run, tmp_path):
    from edgepipe.pipeline.targets import vela
    from edgepipe.pipeline.targets.ethos_u import run_vela

    needs(vela.vela_available(), f"Vela is not installed: {vela.INSTALL_HINT}")
    out, _ = step_run
    document = run_vela(out, tmp_path / "ethos-u.json")
    [int8] = [r for r in document["results"] if r["mode"] == "int8"
              and r["id"] not in repaired_ids(out)]
    assert int8["status"] == "unsupported", int8
    assert int8["reason"].startswith("ethos-u runs integer-only int8 models; op ")
    assert "CAST computes in float" in int8["reason"] and REWRITE in int8["reason"]
