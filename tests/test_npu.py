"""The `ethos-u` target (pipeline/targets/ethos_u.py, vela.py): Vela's report on real int8/int16x8
files.

Two tiny models are converted here, cheaper than the zoo: a step MLP (GREATER + SELECT_V2, which
Vela leaves on the CPU of an Ethos-U55) and a swish MLP (LOGISTIC + MUL, all on the NPU).
"""

import json
import shutil
import sys
import warnings
from importlib import metadata

import numpy as np
import pytest
from conftest import needs
from tiny_bundle import by_id, entry_of, read_manifest, sha256_file, write_manifest

from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.core.errors import EdgepipeError
from edgepipe.device_tests.bundle import sha256_bytes
from edgepipe.pipeline.targets import vela as vela_tool  # `vela` is the fixture below
from edgepipe.pipeline.targets.ethos_u import run_vela

HAVE_VELA = vela_tool.vela_available()


@pytest.fixture
def vela():
    needs(HAVE_VELA, f"Vela is not installed ({vela_tool.INSTALL_HINT})")


def _convert(model, x, mode):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    else:  # int16x8 keeps float I/O: QUANTIZE/DEQUANTIZE at the edges
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """{name: path} of step.int8, swish.int8 and swish.int16x8 (untrained: Vela needs no
    accuracy)."""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8)(inputs)
    step = keras.Model(inputs, keras.layers.Dense(1)(keras.ops.where(hidden > 0, 1.0, 0.0)))
    swish = keras.Model(inputs, keras.layers.Dense(1)(hidden * keras.ops.sigmoid(hidden)))
    folder = tmp_path_factory.mktemp("npu_models")
    paths = {}
    for name, model, mode in (("step", step, "int8"), ("swish", swish, "int8"),
                              ("swish", swish, "int16x8")):
        path = folder / f"{name}.{mode}.tflite"
        path.write_bytes(_convert(model, x, mode))
        paths[f"{name}.{mode}"] = path
    return paths


def test_cpu_fallback_is_named_and_counts_add_up(vela, small, tmp_path):
    model = read_tflite_file(small["step.int8"])
    assert model.op_counts() == {"FULLY_CONNECTED": 2, "GREATER": 1, "SELECT_V2": 1}
    report = vela_tool.vela_report(small["step.int8"], tmp_path)
    assert report["npu_ops"] + report["cpu_ops"] == len(model.operators)
    assert (report["npu_ops"], report["cpu_ops"]) == (2, 2)
    assert [(c["op"], c["count"]) for c in report["cpu_fallback"]] == [
        ("GREATER", 1), ("SELECT_V2", 1)]
    assert all(c["reasons"] for c in report["cpu_fallback"])  # Vela's "Unsupported opType"
    assert report["sram_bytes"] > 0 and report["flash_bytes"] > 0 and report["cycles"] > 0
    assert report["inference_ms"] == pytest.approx(
        report["cycles"] / (report["clock_mhz"] * 1e3), rel=1e-3)
    assert report["accelerator"] == "ethos-u55-256"
    assert report["vela_version"] == metadata.version("ethos-u-vela")
    assert report["system_config"] == "Ethos_U55_High_End_Embedded"
    assert report["memory_mode"] == "Shared_Sram"
    assert report["weights_area"] == "Off-chip Flash"
    reason = vela_tool.summary_reason(report)
    assert reason.startswith("report only: 2/4 ops on the NPU; CPU: GREATER x1, SELECT_V2 x1")


def test_swish_goes_entirely_to_the_npu(vela, small, tmp_path):
    model = read_tflite_file(small["swish.int8"])
    assert model.op_counts() == {"FULLY_CONNECTED": 2, "LOGISTIC": 1, "MUL": 1}
    report = vela_tool.vela_report(small["swish.int8"], tmp_path)
    assert (report["npu_ops"], report["cpu_ops"], report["cpu_fallback"]) == (4, 0, [])
    assert report["cycles"] > 0 and report["sram_bytes"] > 0 and report["flash_bytes"] > 0


def test_int16x8_runs_on_the_npu_but_float_io_stays_on_the_cpu(vela, small, tmp_path):
    model = read_tflite_file(small["swish.int16x8"])
    report = vela_tool.vela_report(small["swish.int16x8"], tmp_path)
    assert report["npu_ops"] + report["cpu_ops"] == len(model.operators)
    assert {c["op"] for c in report["cpu_fallback"]} == {"QUANTIZE", "DEQUANTIZE"}
    assert report["npu_ops"] == 4  # FULLY_CONNECTED x2, LOGISTIC, MUL in int16


def test_ethos_u85_runs_the_step_on_the_npu(vela, small, tmp_path):
    report = vela_tool.vela_report(small["step.int8"], tmp_path, "ethos-u85-256")
    assert (report["npu_ops"], report["cpu_ops"]) == (4, 0)
    assert report["accelerator"] == "ethos-u85-256" and report["cycles"] > 0


def test_corrupt_tflite_is_one_line(vela, tmp_path):
    bad = tmp_path / "bad.int8.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(EdgepipeError) as info:
        vela_tool.vela_report(bad, tmp_path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message and str(bad) in message


@pytest.mark.parametrize("script,timeout,words", [
    ("import sys; print('Traceback (most recent call last):', file=sys.stderr); "
     "print('RuntimeError: Compilation failed: boom', file=sys.stderr); sys.exit(1)",
     30, ["vela failed", "exit 1", "RuntimeError: Compilation failed: boom"]),
    ("import time; time.sleep(30)", 0.5, ["did not finish within 0.5 s"]),
], ids=["crash", "timeout"])
def test_vela_failure_is_one_line(small, tmp_path, monkeypatch, script, timeout, words):
    fake = tmp_path / "fake_vela.py"
    fake.write_text(script)
    monkeypatch.setattr(vela_tool, "vela_command", lambda: [sys.executable, str(fake)])
    with pytest.raises(EdgepipeError) as info:
        vela_tool.vela_report(small["step.int8"], tmp_path, timeout=timeout)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message


def test_missing_vela_names_the_install(small, tmp_path, monkeypatch):
    monkeypatch.setattr(vela_tool, "vela_command", lambda: None)
    with pytest.raises(EdgepipeError, match=r"pip install 'edgepipe\[npu\]'"):
        vela_tool.vela_report(small["step.int8"], tmp_path)


# ------------------------------------------------------------------------------- run_target


@pytest.fixture
def copy(tiny_bundle, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], target)
    return target


def test_run_target_on_the_tiny_bundle(vela, copy, tmp_path):
    out = tmp_path / "results" / "ethos-u.json"
    document = run_vela(copy, out)
    assert json.loads(out.read_text()) == document
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temp file
    assert document["schema_version"] == 1 and document["target"] == "ethos-u"
    assert document["manifest_sha256"] == sha256_file(copy / "manifest.json")
    assert document["runtime"] == {"name": "vela", "version": metadata.version("ethos-u-vela"),
                                   "kernels": "ethos-u55-256"}
    records = by_id(document)
    assert set(records) == {e["id"] for e in read_manifest(copy)["entries"]}
    for model in ("mlp", "mlp_fixed", "clf"):
        record = records[f"{model}-int8"]
        assert record["status"] == "pass", record["reason"]
        report = record["metrics"]["npu"]
        ops = len(read_tflite_file(copy / "tflite" / f"{model}.int8.tflite").operators)
        assert report["npu_ops"] + report["cpu_ops"] == ops == 3
        assert report["cpu_fallback"] == []  # FULLY_CONNECTED, TANH / SOFTMAX: all on the NPU
        assert report["cycles"] > 0 and report["sram_bytes"] > 0 and report["flash_bytes"] > 0
        assert record["reason"].startswith("report only: 3/3 ops on the NPU")
        assert record["checks"] == []
        assert record["tolerance"] == entry_of(read_manifest(copy), record["id"]).get("tolerance")
        assert record["invoke"] is None and record["target"] == "ethos-u"
        record = records[f"{model}-float32"]
        assert record["status"] == "unsupported" and record["metrics"] is None
        assert record["reason"] == "Ethos-U runs int8 and int16x8 models only"
    assert records["mlp-int16x8"]["status"] == "unsupported"
    assert "no int16 kernel" in records["mlp-int16x8"]["reason"]  # the manifest's reason


def test_run_target_bad_entries_are_errors_of_their_own(vela, copy, tmp_path):
    tampered = copy / "tflite" / "mlp.int8.tflite"
    tampered.write_bytes(tampered.read_bytes() + b"\0")  # sha256 no longer matches
    manifest = read_manifest(copy)
    garbage = b"TFL3 but truncated"  # a corrupt file whose sha256 the manifest does carry
    (copy / "tflite" / "clf.int8.tflite").write_bytes(garbage)
    entry_of(manifest, "clf-int8")["sha256"] = sha256_bytes(garbage)
    manifest["entries"].append({"id": "x-int8", "model": "mlp", "mode": "int8",
                                "status": "failed", "reason": "converter crashed",
                                "tflite": None, "sha256": None})
    write_manifest(copy, manifest)
    records = by_id(run_vela(copy, tmp_path / "ethos-u.json"))
    assert records["mlp-int8"]["status"] == "error"
    assert "sha256" in records["mlp-int8"]["reason"]
    assert "tflite/mlp.int8.tflite" in records["mlp-int8"]["reason"]
    clf = records["clf-int8"]
    assert clf["status"] == "error" and clf["metrics"] is None
    assert "TFLite" in clf["reason"] and "\n" not in clf["reason"]
    assert "Traceback" not in clf["reason"]
    assert (records["x-int8"]["status"], records["x-int8"]["reason"]) == (
        "error", "converter crashed")
    assert records["mlp_fixed-int8"]["status"] == "pass"  # the others still run


def test_run_target_without_vela_says_what_to_install(copy, tmp_path, monkeypatch):
    monkeypatch.setattr(vela_tool, "vela_command", lambda: None)
    with pytest.raises(EdgepipeError, match="ethos-u-vela"):
        run_vela(copy, tmp_path / "ethos-u.json")
    assert not (tmp_path / "ethos-u.json").exists()


def test_run_target_refuses_an_unknown_accelerator_up_front(copy, tmp_path):
    with pytest.raises(EdgepipeError, match="Unknown accelerator 'ethos-u55-512'"):
        run_vela(copy, tmp_path / "ethos-u.json", accelerator="ethos-u55-512")
