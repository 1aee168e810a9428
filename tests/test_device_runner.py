"""The parity suite that travels to boards (device_tests/), tested on real bundles.

The bundle is tests/tiny_bundle.py's (built once per session); negative cases edit a copy.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import imported_modules
from tiny_bundle import (
    FAILED_REASON,
    REPO,
    UNSUPPORTED_REASON,
    by_id,
    entry_of,
    put_array,
    read_manifest,
    sha256_file,
    write_manifest,
)

from edgepipe.device_tests.bundle import MODES, BundleError, load_bundle
from edgepipe.device_tests.interpreters import (
    RuntimeUnavailable,
    dequantize,
    find_runtime,
    quantize,
)
from edgepipe.device_tests.metrics import (
    ToleranceError,
    check_bounds,
    error_metrics,
    read_bounds,
    task_metrics,
)
from edgepipe.device_tests.runner import run_bundle


@pytest.fixture
def made(tiny_bundle):
    return tiny_bundle


@pytest.fixture
def bundle(made):
    return made[0]


@pytest.fixture
def copy(made, tmp_path):
    """A private copy of the bundle, to edit."""
    target = tmp_path / "bundle"
    shutil.copytree(made[0], target)
    return target


CONVERTED = ["mlp-float32", "mlp-int8", "mlp_fixed-float32", "mlp_fixed-int8",
             "clf-float32", "clf-int8"]


# ---------------------------------------------------------------------------- passing runs


@pytest.mark.parametrize("kernels,target", [("default", "host"), ("reference", "host-ref")],
                         ids=["host", "host-ref"])
def test_every_entry_passes(bundle, kernels, target):
    document = run_bundle(bundle, kernels=kernels)
    records = by_id(document)
    assert document["schema_version"] == 1
    assert document["target"] == target
    assert document["runtime"]["name"] == "ai_edge_litert"
    assert document["runtime"]["kernels"] == kernels
    assert document["runtime"]["version"] not in ("", "unknown")
    assert document["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert set(document["platform"]) == {"machine", "system", "python", "numpy"}
    for entry_id in CONVERTED:
        assert records[entry_id]["status"] == "pass", records[entry_id]
        assert records[entry_id]["target"] == target
        assert records[entry_id]["checks"] and all(c["ok"] for c in records[entry_id]["checks"])
    assert records["mlp-int16x8"]["status"] == "unsupported"
    assert records["mlp-int16x8"]["reason"] == UNSUPPORTED_REASON


def test_metrics_shape(bundle):
    records = by_id(run_bundle(bundle))
    regression = records["mlp-int8"]["metrics"]
    for key in ("samples", "max_abs_error", "mean_abs_error", "rmse", "rel_error", "cosine",
                "sqnr_db", "steps", "worst_sample", "worst_samples", "task"):
        assert key in regression, key
    assert regression["samples"] == 48
    assert len(regression["worst_samples"]) == 5
    assert regression["worst_sample"] == regression["worst_samples"][0]
    assert 0 < regression["steps"] <= 4.0
    task = regression["task"]
    assert task["metric"] == "r2" and task["keras"] > 0.8
    assert task["delta"] == pytest.approx(task["keras"] - task["variant"], rel=1e-9, abs=1e-12)
    assert task["mae_keras"] > 0 and task["mae_variant"] > 0
    classification = records["clf-int8"]["metrics"]["task"]
    assert classification["metric"] == "accuracy" and classification["keras"] > 0.8
    assert 0.9 <= classification["top1_agreement"] <= 1.0
    assert records["clf-float32"]["metrics"]["steps"] is None
    assert [c["name"] for c in records["clf-int8"]["checks"]] == [
        "max_abs", "task_delta", "min_top1_agreement"]
    # The time inside invoke() (the batched parity invoke and the latency's), a part of the
    # entry's own: what `make bench` compares parity's wall time with.
    for record in records.values():
        if record["status"] == "pass":
            assert 0 < record["invoke_seconds"] < record["seconds"], record["id"]


@pytest.mark.parametrize("kernels", ["default", "reference"])
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_batch_and_per_sample_give_identical_outputs(bundle, tmp_path, kernels, mode):
    document = run_bundle(bundle, kernels=kernels, only=[f"mlp-{mode}", f"mlp_fixed-{mode}"],
                          outputs_dir=tmp_path)
    records = by_id(document)
    batch, single = records[f"mlp-{mode}"], records[f"mlp_fixed-{mode}"]
    assert batch["invoke"] == "batch"
    assert single["invoke"] == "per-sample"
    target = document["target"]
    assert batch["outputs"] == f"outputs/{target}/mlp-{mode}.npy"
    a, b = np.load(tmp_path / batch["outputs"]), np.load(tmp_path / single["outputs"])
    assert a.shape == b.shape == (48, 1)
    np.testing.assert_allclose(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------- failures


def test_tight_bound_fails_naming_every_bound(copy):
    manifest = read_manifest(copy)
    entry_of(manifest, "clf-int8")["tolerance"].update(
        max_abs=1e-9, max_rel=1e-9, min_top1_agreement=1.01)
    write_manifest(copy, manifest)
    records = by_id(run_bundle(copy))
    record = records["clf-int8"]
    assert record["status"] == "fail"
    for name in ("max_abs", "max_rel", "min_top1_agreement"):
        assert name in record["reason"], record["reason"]
    assert "task_delta" not in record["reason"]
    failed = {c["name"]: c for c in record["checks"] if not c["ok"]}
    assert set(failed) == {"max_abs", "max_rel", "min_top1_agreement"}
    assert f"{failed['max_abs']['value']:.6g} > 1e-09" in record["reason"]
    assert len(record["metrics"]["worst_samples"]) == 5
    assert record["tolerance"]["max_abs"] == 1e-9
    assert records["clf-float32"]["status"] == "pass"


def test_sha256_mismatch_refuses_the_entry_only(copy):
    path = copy / "tflite" / "mlp.int8.tflite"
    path.write_bytes(path.read_bytes() + b"\0")
    records = by_id(run_bundle(copy))
    assert records["mlp-int8"]["status"] == "error"
    assert "sha256" in records["mlp-int8"]["reason"]
    assert "tflite/mlp.int8.tflite" in records["mlp-int8"]["reason"]
    assert records["mlp-int8"]["metrics"] is None
    assert records["mlp-float32"]["status"] == "pass"


def test_sha256_mismatch_of_shared_inputs_refuses_their_entries(copy):
    np.save(copy / "data" / "reg.inputs.npy", np.zeros((48, 4), np.float32))
    records = by_id(run_bundle(copy))
    for entry_id in ("mlp-float32", "mlp-int8", "mlp_fixed-float32", "mlp_fixed-int8"):
        assert records[entry_id]["status"] == "error"
        assert "data/reg.inputs.npy: sha256" in records[entry_id]["reason"]
    assert records["clf-int8"]["status"] == "pass"


@pytest.mark.parametrize("rel,words", [
    pytest.param("../outside.tflite", "contains '..'", id="dotdot"),
    pytest.param("tflite/../../outside.tflite", "contains '..'", id="dotdot-inside"),
    pytest.param("/etc/hostname", "absolute path", id="absolute"),
    pytest.param("tflite\\mlp.int8.tflite", "backslash", id="backslash"),
])
def test_paths_leaving_the_bundle_are_refused(copy, rel, words):
    manifest = read_manifest(copy)
    entry_of(manifest, "mlp-int8")["tflite"] = rel
    write_manifest(copy, manifest)
    with pytest.raises(BundleError, match="entries") as caught:
        run_bundle(copy)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_symlink_out_of_the_bundle_is_refused(copy, tmp_path, what):
    outside = tmp_path / "outside"
    outside.mkdir()
    if what == "file":
        shutil.copy(copy / "tflite" / "mlp.int8.tflite", outside / "mlp.int8.tflite")
        (copy / "tflite" / "mlp.int8.tflite").unlink()
        (copy / "tflite" / "mlp.int8.tflite").symlink_to(outside / "mlp.int8.tflite")
    else:
        shutil.move(str(copy / "data"), str(outside / "data"))
        (copy / "data").symlink_to(outside / "data", target_is_directory=True)
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(copy)


def test_entry_ids_cannot_name_paths(copy):
    manifest = read_manifest(copy)
    entry_of(manifest, "mlp-int8")["id"] = "../../evil"
    write_manifest(copy, manifest)
    with pytest.raises(BundleError, match="must be 1 to 200 letters, digits"):
        load_bundle(copy)


def test_symlink_inside_the_bundle_is_followed(copy):
    (copy / "tflite" / "mlp.int8.tflite").rename(copy / "mlp.int8.tflite")
    (copy / "tflite" / "mlp.int8.tflite").symlink_to(copy / "mlp.int8.tflite")
    assert by_id(run_bundle(copy, only=["mlp-int8"]))["mlp-int8"]["status"] == "pass"


def test_schema_version_other_than_1_is_refused(copy):
    manifest = read_manifest(copy)
    manifest["schema_version"] = 2
    write_manifest(copy, manifest)
    with pytest.raises(BundleError, match="schema_version 2 is not supported"):
        load_bundle(copy)


@pytest.mark.parametrize("array,words", [
    pytest.param(np.zeros((48, 5), np.float32), "expects (N, 4)", id="shape"),
    pytest.param(np.zeros((48, 4), np.float64), "Received: float64", id="dtype"),
])
def test_wrong_inputs_say_expected_and_got(copy, array, words):
    manifest = read_manifest(copy)
    manifest["datasets"]["reg"]["inputs_sha256"] = put_array(copy, "data/reg.inputs.npy", array)
    write_manifest(copy, manifest)
    record = by_id(run_bundle(copy, only=["mlp-float32"]))["mlp-float32"]
    assert record["status"] == "error"
    assert words in record["reason"], record["reason"]


def test_manifest_failed_entry_is_an_error_with_its_reason(copy):
    manifest = read_manifest(copy)
    manifest["entries"].append({"id": "clf-int16x8", "model": "clf", "mode": "int16x8",
                                "status": "failed", "reason": FAILED_REASON, "tflite": None})
    write_manifest(copy, manifest)
    record = by_id(run_bundle(copy))["clf-int16x8"]
    assert (record["status"], record["reason"]) == ("error", FAILED_REASON)


@pytest.mark.parametrize("tolerance,words", [
    pytest.param({"max_abs_err": 0.1}, "did you mean 'max_abs'", id="misspelt"),
    pytest.param({"max_abs": None, "task_delta": None}, "sets no bound", id="no-bound"),
    pytest.param({"max_abs": "0.1"}, "must be a finite number", id="string"),
    pytest.param({"max_abs": 10 ** 400}, "must be a finite number", id="huge-int"),
    pytest.param({"max_abs": 0.1, "output_step": "x"}, "output_step must be", id="step"),
])
def test_unusable_tolerance_refuses_the_bundle_never_a_pass(copy, tolerance, words):
    manifest = read_manifest(copy)
    entry_of(manifest, "mlp-float32")["tolerance"] = tolerance
    write_manifest(copy, manifest)
    with pytest.raises(BundleError, match="entries") as caught:
        load_bundle(copy)
    assert words in str(caught.value) and "mlp-float32" in str(caught.value)


def _set(path: str, value):
    """An edit of the manifest: `value` put at a dotted path (list indexes as numbers)."""
    def edit(manifest: dict) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


BOUNDARY = {"kink": 0.0, "layers": ["step_1"], "preact": ["reference/mlp.npy"],
            "preact_sha256": ["0" * 64], "input_steps": {"int8": [0.1]}}


# Every field is checked when the bundle is read: one line naming it, never a traceback later.
@pytest.mark.parametrize("edit,words", [
    pytest.param(_set("entries.0.tflite", "tflite/a\x00b"), "entries[0] (mlp-float32).tflite",
                 id="nul-in-path"),
    pytest.param(_set("models.mlp.boundary", 5), "models.mlp.boundary must be a JSON object",
                 id="boundary-not-object"),
    pytest.param(_set("models.mlp.boundary", {**BOUNDARY, "preact": 5}),
                 "models.mlp.boundary.preact must be a JSON list", id="preact-not-list"),
    pytest.param(_set("models.mlp.boundary", {**BOUNDARY, "input_steps": {"int8": [1, 2]}}),
                 "input_steps.int8 must be a list of 1", id="steps-per-preact"),
    pytest.param(_set("entries.1.mode", "int4"), "mode must be one of float32, float16, "
                 "dynamic, int8, int16x8", id="mode-unknown"),
    pytest.param(_set("entries.0.status", "passed"), "status must be one of", id="status"),
    pytest.param(_set("entries.0", [1]), "entries[0] must be a JSON object", id="entry-list"),
    pytest.param(_set("entries.0.id", 7), "entries[0].id must be a string", id="id-number"),
    pytest.param(_set("entries.0.bytes", 10 ** 30), "bytes must be a whole number",
                 id="bytes-huge"),
    pytest.param(_set("entries.0.sha256", "abc"), "sha256 must be a sha256", id="sha256"),
    pytest.param(_set("entries.0.model", "nope"), "model must be a key of 'models'",
                 id="model-unknown"),
    pytest.param(_set("datasets.reg.task", "ranking"), "datasets.reg.task must be one of",
                 id="task"),
    pytest.param(_set("datasets.reg.y_std", "2.5"), "datasets.reg.y_std must be a finite",
                 id="y-std"),
    pytest.param(_set("datasets.reg.samples", True), "samples must be a whole number",
                 id="samples-bool"),
    pytest.param(_set("models.mlp.reference_sha256", None), "reference_sha256 is missing",
                 id="reference-sha-missing"),
    pytest.param(_set("schema_version", True), "schema_version true is not supported",
                 id="version-bool"),
    pytest.param(_set("versions", {"a": json.loads("[" * 40 + "]" * 40)}),
                 "nest more than 32 levels", id="deep"),
])
def test_a_malformed_manifest_field_refuses_the_bundle_in_one_line(copy, edit, words):
    manifest = read_manifest(copy)
    edit(manifest)
    write_manifest(copy, manifest)
    with pytest.raises(BundleError) as caught:
        load_bundle(copy)
    message = str(caught.value)
    assert words in message and "\n" not in message, message
    assert message.startswith(f"{copy / 'manifest.json'}: "), message


@pytest.mark.parametrize("text,words", [
    pytest.param("[" * 100_000 + "]" * 100_000, "nest too deeply", id="recursion"),
    pytest.param('{"schema_version": NaN}', "NaN is not JSON", id="nan"),
    pytest.param('{"schema_version": 1, "seed": Infinity}', "Infinity is not JSON", id="inf"),
    pytest.param('{"schema_version": 1e999}', "schema_version", id="overflowing-float"),
    pytest.param('{"schema_version": 1, "created_by": "\\ud800"}', "lone surrogate",
                 id="lone-surrogate"),
])
def test_manifest_text_that_json_reads_badly_is_refused(copy, text, words):
    (copy / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="manifest.json") as caught:
        load_bundle(copy)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_bundles_modes_are_the_converters():
    from edgepipe.converters.modes import QuantMode

    assert MODES == tuple(mode.value for mode in QuantMode)


# ---------------------------------------------------------------------------- NaN inputs


def _with_nan_inputs(root: Path, models, data, nan_reference: bool) -> None:
    x = data["reg"][2].copy()
    x[3, 1] = np.nan
    manifest = read_manifest(root)
    manifest["datasets"]["reg"]["inputs_sha256"] = put_array(root, "data/reg.inputs.npy", x)
    if nan_reference:
        for name in ("mlp", "mlp_fixed"):
            reference = np.asarray(models[name].predict(x, batch_size=len(x), verbose=0),
                                   dtype=np.float32)
            assert np.isnan(reference[3]).all() and np.isfinite(np.delete(reference, 3, 0)).all()
            manifest["models"][name]["reference_sha256"] = put_array(
                root, manifest["models"][name]["reference"], reference)
    write_manifest(root, manifest)


@pytest.mark.parametrize("kernels", ["default", "reference"])
def test_nan_inputs_float_modes_compare_nan_positions(copy, made, kernels):
    _with_nan_inputs(copy, made[1], made[2], nan_reference=True)
    records = by_id(run_bundle(copy, kernels=kernels))
    for entry_id in ("mlp-float32", "mlp_fixed-float32"):
        record = records[entry_id]
        assert record["status"] == "pass", record
        assert record["metrics"]["nan_mismatches"] == 0
        assert record["metrics"]["nan_positions"] == 1
        assert record["metrics"]["max_abs_error"] < 1e-4
        assert {"name": "nan_positions", "value": 0, "bound": 0, "ok": True} in record["checks"]
    for entry_id in ("mlp-int8", "mlp_fixed-int8"):
        assert records[entry_id]["status"] == "error"
        assert "NaN" in records[entry_id]["reason"] and "sample 3" in records[entry_id]["reason"]
    assert records["clf-int8"]["status"] == "pass"


def test_nan_positions_that_differ_fail(copy, made):
    _with_nan_inputs(copy, made[1], made[2], nan_reference=False)
    record = by_id(run_bundle(copy, only=["mlp-float32"]))["mlp-float32"]
    assert record["status"] == "fail"
    assert "nan_positions: 1 output positions are NaN on one side only" in record["reason"]
    assert record["metrics"]["worst_sample"] == 3


# ---------------------------------------------------------------------------- small parts


def test_quantize_rounds_half_away_from_zero_and_clips():
    x = np.array([-300.0, -1.5, -0.5, 0.5, 1.5, 2.4, 300.0], np.float32)
    np.testing.assert_array_equal(quantize(x, 1.0, 0, np.int8),
                                  np.array([-128, -2, -1, 1, 2, 2, 127], np.int8))
    np.testing.assert_array_equal(quantize(x, 0.5, 10, np.int16),
                                  np.array([-590, 7, 9, 11, 13, 15, 610], np.int16))
    np.testing.assert_allclose(dequantize(np.array([-128, 0, 127], np.int8), 0.5, -3),
                               np.array([-62.5, 1.5, 65.0], np.float32), rtol=0, atol=0)


def test_error_metrics_against_formulas():
    ref = np.array([[0.0], [1.0], [2.0], [4.0]])
    out = np.array([[0.0], [1.5], [2.0], [3.0]])
    m = error_metrics(out, ref, output_step=0.25)
    diff = out - ref
    np.testing.assert_allclose(
        [m["max_abs_error"], m["mean_abs_error"], m["rmse"], m["rel_error"], m["steps"]],
        [1.0, 0.375, np.sqrt(np.mean(diff ** 2)), 0.25, 4.0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(m["sqnr_db"], 10 * np.log10(21 / 1.25), rtol=1e-12, atol=0)
    cosine = float(out.ravel() @ ref.ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref))
    np.testing.assert_allclose(m["cosine"], cosine, rtol=1e-12, atol=0)
    assert m["worst_samples"] == [3, 1, 0, 2]
    exact = error_metrics(ref, ref)
    assert exact["max_abs_error"] == 0 and exact["sqnr_db"] is None and exact["steps"] is None


def test_task_metrics_against_formulas():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    keras, variant = y.reshape(-1, 1) + 0.1, np.array([[0.0], [1.0], [2.5], [3.0]])
    t = task_metrics("regression", y, keras, variant, y_std=10.0)
    np.testing.assert_allclose([t["keras"], t["variant"], t["mae_keras"], t["mae_variant"]],
                               [1 - 0.04 / 5, 1 - 0.25 / 5, 1.0, 1.25], rtol=1e-12, atol=1e-12)
    labels = np.array([0, 1, 2, 1])
    k = np.eye(3)[[0, 1, 2, 2]]
    v = np.eye(3)[[0, 1, 1, 2]]
    c = task_metrics("classification", labels, k, v)
    assert (c["keras"], c["variant"], c["top1_agreement"]) == (0.75, 0.5, 0.75)
    assert c["delta"] == 0.25


def test_every_bound_is_checked_and_none_is_invented():
    metrics = {"max_abs_error": 0.2, "rel_error": 0.1,
               "task": {"delta": 0.01, "top1_agreement": 0.9}}
    checks = check_bounds(read_bounds({"max_abs": 0.1, "max_rel": None, "task_delta": 0.02,
                                       "min_top1_agreement": 0.95}), metrics)
    assert [(c["name"], c["ok"]) for c in checks] == [
        ("max_abs", False), ("task_delta", True), ("min_top1_agreement", False)]
    with pytest.raises(ToleranceError, match="sets no bound"):
        read_bounds({"derivation": "nothing"})


# Messages seen from tflite-runtime 2.14.0 and ai-edge-litert 1.2.0 on models TF 2.21 made.
@pytest.mark.parametrize("message,when,words", [
    pytest.param("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older "
                 "version of this builtin might be supported. Are you using an old TFLite binary "
                 "with a newer model?\nRegistration failed.\n", "create",
                 "has no kernel for FULLY_CONNECTED version 12", id="op-version"),
    pytest.param("Only float32, int8 and uint8 supported currently, got INT16.Node number 1 "
                 "(GELU) failed to invoke.", "invoke",
                 "has no GELU kernel for these tensor types (Only float32, int8 and uint8 "
                 "supported currently, got INT16)", id="tensor-type"),
    pytest.param("tensorflow/lite/kernels/add.cc:130 something broke.Node number 3 (ADD) "
                 "failed to invoke.", "invoke", None, id="other-invoke-error"),
])
def test_a_missing_kernel_makes_the_entry_unsupported(bundle, monkeypatch, message, when, words):
    from ai_edge_litert.interpreter import Interpreter

    from edgepipe.device_tests import runner
    from edgepipe.device_tests.interpreters import Runtime

    class Failing(Interpreter):
        def __init__(self, **kwargs):
            if when == "create":
                raise ValueError(message)
            super().__init__(**kwargs)

        def invoke(self):
            raise RuntimeError(message)

    monkeypatch.setattr(runner, "find_runtime", lambda name, kernels: Runtime(
        "old_runtime", "0.1", kernels, Failing, None))
    record = by_id(run_bundle(bundle, only=["mlp-int8"]))["mlp-int8"]
    if words is None:
        assert record["status"] == "error"
        assert record["reason"].startswith("old_runtime 0.1 (default kernels) failed to invoke")
    else:
        assert record["status"] == "unsupported"
        assert record["reason"] == f"old_runtime 0.1 (default kernels) {words}"


def test_no_runtime_names_the_packages_to_install(monkeypatch):
    for name in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(RuntimeUnavailable, match="pip install ai-edge-litert") as caught:
        find_runtime()
    assert "tflite-runtime" in str(caught.value)


# ---------------------------------------------------------------------------- command line


def runner_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "device_tests.runner", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_exit_0_writes_results_and_outputs(bundle, tmp_path):
    out = tmp_path / "run" / "results.json"
    done = runner_cli(bundle, "--out", out, "--save-outputs", "--kernels", "reference")
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["target"] == "host-ref"
    assert len(document["results"]) == 7
    record = by_id(document)["clf-int8"]
    saved = np.load(out.parent / record["outputs"])
    assert saved.shape == (60, 3) and saved.dtype == np.float32
    assert record["outputs"] == "outputs/host-ref/clf-int8.npy"
    assert not list(out.parent.glob(".results.json.*"))


def test_cli_exit_1_on_a_failed_bound(copy, tmp_path):
    manifest = read_manifest(copy)
    entry_of(manifest, "mlp-int8")["tolerance"]["max_abs"] = 1e-9
    write_manifest(copy, manifest)
    out = tmp_path / "results.json"
    done = runner_cli(copy, "--out", out, "--target", "ssh://pi@board")
    assert done.returncode == 1
    # Only the runner's own lines: the XNNPACK delegate's native INFO line is not passed on.
    assert done.stderr.splitlines()[0].startswith("mlp-int8: fail max_abs"), done.stderr
    assert len(done.stderr.splitlines()) == 2, done.stderr
    assert by_id(json.loads(out.read_text()))["mlp-int8"]["target"] == "ssh://pi@board"


@pytest.mark.parametrize("args,words", [
    pytest.param(["--runtime", "tflite_runtime"], "pip install", id="runtime-missing"),
    pytest.param(["--runtime", "onnx"], "Expected a runtime among", id="runtime-unknown"),
    pytest.param(["--only", "mlp-int9"], "did you mean 'mlp-int8'", id="only-unknown"),
])
def test_cli_exit_2_on_bad_options(bundle, tmp_path, args, words):
    done = runner_cli(bundle, "--out", tmp_path / "r.json", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert not (tmp_path / "r.json").exists()


def test_cli_refuses_a_folder_as_out_before_running(bundle, tmp_path):
    done = runner_cli(bundle, "--out", tmp_path, "--save-outputs")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is a folder" in done.stderr, done.stderr
    assert not (tmp_path.parent / "outputs").exists()


@pytest.mark.parametrize("link", ["outputs", "outputs/host"])
def test_cli_refuses_an_outputs_folder_that_links_out(bundle, tmp_path, link):
    victim, run = tmp_path / "victim", tmp_path / "run"
    victim.mkdir()
    (run / link).parent.mkdir(parents=True, exist_ok=True)
    (run / link).symlink_to(victim, target_is_directory=True)
    done = runner_cli(bundle, "--out", run / "results.json", "--save-outputs")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is a symbolic link" in done.stderr, done.stderr
    assert list(victim.iterdir()) == [] and not (run / "results.json").exists()


def test_an_output_file_that_links_out_is_replaced_not_written_through(bundle, tmp_path):
    victim = tmp_path / "victim.npy"
    victim.write_text("not edgepipe's")
    saved = tmp_path / "run" / "outputs" / "host" / "mlp-float32.npy"
    saved.parent.mkdir(parents=True)
    saved.symlink_to(victim)
    document = run_bundle(bundle, only=["mlp-float32"], outputs_dir=tmp_path / "run")
    assert by_id(document)["mlp-float32"]["status"] == "pass"
    assert victim.read_text() == "not edgepipe's"
    assert not saved.is_symlink() and np.load(saved).shape == (48, 1)
    assert [p.name for p in saved.parent.iterdir()] == ["mlp-float32.npy"]


def test_cli_exit_2_on_a_bad_bundle_without_traceback_unless_debug(copy, tmp_path):
    manifest = read_manifest(copy)
    manifest["schema_version"] = 2
    write_manifest(copy, manifest)
    done = runner_cli(copy, "--out", tmp_path / "r.json")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "schema_version 2" in done.stderr and "Traceback" not in done.stderr
    debug = runner_cli(copy, "--out", tmp_path / "r.json", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_the_pipeline_shows_the_runners_own_error_line(copy, tmp_path):
    """`edgepipe parity` reports what the runner said when it refused (exit 2), in one line."""
    from edgepipe.core.errors import EdgepipeError
    from edgepipe.device_tests.schema import RunFolder
    from edgepipe.pipeline.targets import TargetOptions, get_target

    (copy / "results" / "outputs").mkdir(parents=True)
    (copy / "results" / "outputs" / "host").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(EdgepipeError) as caught:
        get_target("host").run(copy, RunFolder(copy).target_results("host"), TargetOptions())
    assert str(caught.value).startswith("The parity runner failed on host (exit 2): "
                                        f"{copy}/results/outputs/host is a symbolic link")
    assert "\n" not in str(caught.value)


def test_runner_never_imports_tensorflow(bundle):
    code = ("from edgepipe.device_tests.runner import run_bundle\n"
            f"assert run_bundle({str(bundle)!r})['runtime']['name'] == 'ai_edge_litert'\n")
    loaded = imported_modules(code, ("tensorflow", "keras", "edgepipe"))
    assert [m for m in loaded if m != "edgepipe" and not m.startswith("edgepipe.device_tests")] \
        == []


# ---------------------------------------------------------------------------- pytest suite


def parity_pytest(python, cwd, *args):
    return subprocess.run([str(python), "-m", "pytest", "device_tests", "-p", "no:cacheprovider",
                           *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_parity_suite_from_the_repository(bundle):
    done = parity_pytest(sys.executable, REPO, "--bundle", bundle, "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    for entry_id in CONVERTED:
        assert f"test_parity[{entry_id}] PASSED" in done.stdout
    assert f"unsupported: {UNSUPPORTED_REASON}" in done.stdout


def test_parity_suite_fails_a_failed_bound(copy):
    manifest = read_manifest(copy)
    entry_of(manifest, "clf-int8")["tolerance"]["min_top1_agreement"] = 1.01
    write_manifest(copy, manifest)
    done = parity_pytest(sys.executable, REPO, "--bundle", copy, "--kernels", "reference")
    assert done.returncode == 1
    assert "clf-int8 on host-ref: min_top1_agreement" in done.stdout
    assert "worst samples [" in done.stdout
    assert "1 failed, 5 passed, 1 skipped" in done.stdout


def test_parity_suite_without_bundle_says_how_to_run_it():
    done = parity_pytest(sys.executable, REPO)
    assert done.returncode == 0, done.stdout
    assert "no --bundle given: run `python -m pytest device_tests --bundle" in done.stdout


def test_parity_suite_refuses_a_bad_bundle(copy):
    manifest = read_manifest(copy)
    entry_of(manifest, "mlp-int8")["tflite"] = "../x.tflite"
    write_manifest(copy, manifest)
    done = parity_pytest(sys.executable, REPO, "--bundle", copy)
    assert done.returncode == 4
    assert "contains '..'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_parity_suite_on_a_fresh_board_like_venv(bundle, tmp_path):
    """A venv with only numpy, pytest and ai-edge-litert; a folder with device_tests/ + bundle."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "numpy", "pytest",
                    "ai-edge-litert"], check=True, timeout=600, capture_output=True)
    board = tmp_path / "board"
    shutil.copytree(REPO / "device_tests", board / "device_tests",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(bundle, board / "bundle")
    done = parity_pytest(python, board, "--bundle", "bundle", "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed, 1 skipped" in done.stdout
    cli = subprocess.run([str(python), "-m", "device_tests.runner", "bundle", "--out",
                          "results.json"], cwd=board, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout.lower()
    assert "tensorflow" not in listed and "edgepipe" not in listed
