"""report.html and junit.xml from a synthetic, schema-valid run folder (numpy only, no TF)."""

import hashlib
import io
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import imported_modules

from edgepipe.core.errors import EdgepipeError
from edgepipe.core.files import PARTIAL
from edgepipe.pipeline.report import entries, target_differences, write_junit, write_report

N_CLS, CLASSES, N_REG = 40, 4, 30
STEP8 = 1 / 256
FAIL_REASON = 'max_abs 0.41 > 0.031 & steps 33 > 2.5 <script>alert("x")</script>'
ERROR_REASON = "interpreter error: Invoke() failed & <b>\x1b[31m"
HOSTREF_DIFF = 2 * STEP8   # the largest host vs host-ref difference planted in cnn_swish-int8


def _save(run: Path, rel: str, array: np.ndarray) -> str:
    path = run / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metrics(ref, out, labels, task, step=None, boundary=None):
    r, o = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    err = np.abs(o - r)
    per_sample = err.max(axis=1)
    m = {"samples": len(r), "max_abs_error": float(err.max()),
         "mean_abs_error": float(err.mean()), "rmse": float(np.sqrt((err ** 2).mean())),
         "rel_error": float(err.max() / (r.max() - r.min())), "cosine": 0.9999,
         "sqnr_db": 41.5, "worst_sample": int(per_sample.argmax()),
         "worst_samples": [int(i) for i in np.argsort(-per_sample, kind="stable")[:5]]}
    if step:
        m["steps"] = float(err.max() / step)
    if task == "classification":
        acc_k = float((r.argmax(1) == labels).mean())
        acc_v = float((o.argmax(1) == labels).mean())
        m["task"] = {"metric": "accuracy", "keras": acc_k, "variant": acc_v,
                     "delta": acc_k - acc_v, "top1_agreement": float(
                         (r.argmax(1) == o.argmax(1)).mean())}
    else:
        m["task"] = {"metric": "r2", "keras": 0.48, "variant": 0.40, "delta": 0.08,
                     "mae_keras": 44.4, "mae_variant": 49.9}
    if boundary:
        m["boundary"] = boundary
    return m


def _record(entry, target, status, reason="", run=None, out=None, ref=None, labels=None,
            task=None, boundary=None):
    rec = {"id": entry["id"], "model": entry["model"], "mode": entry["mode"], "target": target,
           "status": status, "reason": reason, "invoke": "batch", "seconds": 0.012,
           "tolerance": entry["tolerance"], "checks": [], "metrics": {}}
    if out is not None:
        step = entry["tolerance"].get("output_step")
        rec["metrics"] = _metrics(ref, out, labels, task, step, boundary)
        bound = entry["tolerance"]["max_abs"]
        rec["checks"] = [{"name": "max_abs", "value": rec["metrics"]["max_abs_error"],
                          "bound": bound, "ok": rec["metrics"]["max_abs_error"] <= bound}]
        rec["outputs"] = f"outputs/{target}/{entry['id']}.npy"
        _save(run, rec["outputs"], out)
    return rec


def _entry(model, mode, dataset, status="converted", reason="", nbytes=1000, max_abs=1e-5,
           step=None):
    tol = {"max_abs": max_abs, "max_rel": None, "output_step": step,
           "steps": 2.5 if step else None, "task_delta": 0.02, "min_top1_agreement": None,
           "derivation": f"{mode}: bound from the test (a < b & c)"}
    entry = {"id": f"{model}-{mode}", "model": model, "mode": mode, "status": status,
             "reason": reason, "dataset": dataset, "reference": f"reference/{model}.npy",
             "expected_ops": ["FULLY_CONNECTED"], "tolerance": tol}
    if status == "converted":
        entry.update(tflite=f"tflite/{model}.{mode}.tflite", sha256="0" * 64, bytes=nbytes)
    return entry


def make_run(run: Path) -> Path:
    """A run folder: a classifier (cnn_swish, digits) and a regressor with a Step boundary
    (mlp_step, diabetes) on host and host-ref; pass, fail, unsupported and error records."""
    rng = np.random.default_rng(0)
    run.mkdir(parents=True, exist_ok=True)
    # classification
    x_cls = rng.normal(size=(N_CLS, 8)).astype(np.float32)
    logits = rng.normal(size=(N_CLS, CLASSES)) * 2
    ref_cls = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    y_cls = ref_cls.argmax(1).astype(np.int64)
    y_cls[:3] = (y_cls[:3] + 1) % CLASSES
    # regression
    x_reg = rng.normal(size=(N_REG, 10)).astype(np.float32)
    ref_reg = rng.normal(size=(N_REG, 1)).astype(np.float32)
    y_reg = (ref_reg[:, 0] + rng.normal(scale=0.5, size=N_REG)).astype(np.float32)
    preact = rng.normal(size=(N_REG, 16)).astype(np.float32)

    datasets = {
        "digits": {"task": "classification", "inputs": "data/digits.inputs.npy",
                   "inputs_sha256": _save(run, "data/digits.inputs.npy", x_cls),
                   "labels": "data/digits.labels.npy",
                   "labels_sha256": _save(run, "data/digits.labels.npy", y_cls),
                   "samples": N_CLS, "y_mean": None, "y_std": None, "classes": CLASSES,
                   "sha256": {}},
        "diabetes": {"task": "regression", "inputs": "data/diabetes.inputs.npy",
                     "inputs_sha256": _save(run, "data/diabetes.inputs.npy", x_reg),
                     "labels": "data/diabetes.labels.npy",
                     "labels_sha256": _save(run, "data/diabetes.labels.npy", y_reg),
                     "samples": N_REG, "y_mean": 154.6, "y_std": 77.5, "classes": None,
                     "sha256": {}},
    }
    models = {
        "cnn_swish": {"dataset": "digits", "activation": "swish", "family": "cnn",
                      "reference": "reference/cnn_swish.npy",
                      "reference_sha256": _save(run, "reference/cnn_swish.npy", ref_cls),
                      "keras_sha256": "1" * 64},
        "mlp_step": {"dataset": "diabetes", "activation": "step", "family": "mlp",
                     "reference": "reference/mlp_step.npy",
                     "reference_sha256": _save(run, "reference/mlp_step.npy", ref_reg),
                     "keras_sha256": "2" * 64,
                     "boundary": {"kink": 0.0, "layers": ["step_1"],
                                  "preact": ["reference/mlp_step.step_1.npy"],
                                  "input_steps": {"int8": [0.05], "int16x8": [0.0002]}}},
    }
    _save(run, "reference/mlp_step.step_1.npy", preact)
    e = {
        "c32": _entry("cnn_swish", "float32", "digits", nbytes=40_000),
        "c8": _entry("cnn_swish", "int8", "digits", nbytes=11_000, max_abs=0.02, step=STEP8),
        "c16": _entry("cnn_swish", "int16x8", "digits", status="unsupported",
                      reason="int16x8 has no kernel for LOGISTIC"),
        "m32": _entry("mlp_step", "float32", "diabetes", nbytes=5_000),
        "m8": _entry("mlp_step", "int8", "diabetes", nbytes=2_000, max_abs=0.031, step=0.0123),
        "mdyn": _entry("mlp_step", "dynamic", "diabetes", nbytes=2_500, max_abs=0.05),
    }
    manifest = {"schema_version": 1, "created_by": "edgepipe 0.1.0",
                "versions": {"python": "3.11.7", "tensorflow-cpu": "2.21.0", "keras": "3.15.1",
                             "numpy": "2.4.6", "ai-edge-litert": "2.3.0"},
                "seed": 0, "datasets": datasets, "models": models, "entries": list(e.values())}
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2))

    c32_host, m32_host = ref_cls.copy(), ref_reg.copy()
    c32_host[5, 0] += 2 ** -16   # exact in float32: values < 2 have a finer step
    m32_host[2, 0] -= 2 ** -14
    c8_host = (np.round(ref_cls / STEP8) * STEP8).astype(np.float32)
    c8_ref = c8_host.copy()
    c8_ref[3, 1] += STEP8
    c8_ref[7, 2] -= HOSTREF_DIFF
    m8_host = ref_reg.copy()
    m8_host[[4, 11, 20]] += np.array([[0.41], [-0.3], [0.2]], dtype=np.float32)
    # the shape pipeline/boundary.py's analyse() returns: one input step per layer
    boundary = {"kink": 0.0, "input_step": [0.05], "near_samples": 3, "samples": N_REG,
                "near_units_mean": 1.3, "near_error_share": 0.93, "worst_5pct_near": 1.0}
    cls = {"run": run, "ref": ref_cls, "labels": y_cls, "task": "classification"}
    reg = {"run": run, "ref": ref_reg, "labels": y_reg, "task": "regression"}
    records = [
        _record(e["c32"], "host", "pass", out=c32_host, **cls),
        _record(e["c32"], "host-ref", "pass", out=ref_cls.copy(), **cls),
        _record(e["c8"], "host", "pass", out=c8_host, **cls),
        _record(e["c8"], "host-ref", "pass", out=c8_ref, **cls),
        _record(e["c16"], "host", "unsupported", e["c16"]["reason"]),
        _record(e["c16"], "host-ref", "unsupported", e["c16"]["reason"]),
        _record(e["m32"], "host", "pass", out=m32_host, **reg),
        _record(e["m32"], "host-ref", "pass", out=ref_reg.copy(), **reg),
        _record(e["m8"], "host", "fail", FAIL_REASON, out=m8_host, boundary=boundary, **reg),
        _record(e["m8"], "host-ref", "error", ERROR_REASON),
        _record(e["mdyn"], "host", "error", "sha256 mismatch for tflite/mlp_step.dynamic.tflite"),
        _record(e["mdyn"], "host-ref", "pass", out=ref_reg + 0.01, **reg),
    ]
    runtime = {"host": {"name": "ai_edge_litert", "version": "2.3.0", "kernels": "default"},
               "host-ref": {"name": "ai_edge_litert", "version": "2.3.0", "kernels": "reference"}}
    platform = {"machine": "x86_64", "system": "Linux", "python": "3.11.7", "numpy": "2.4.6"}
    for target in runtime:
        doc = {"schema_version": 1, "target": target, "runtime": runtime[target],
               "platform": platform, "seconds": 1.5,
               "results": [r for r in records if r["target"] == target]}
        (run / "results").mkdir(exist_ok=True)
        (run / "results" / f"{target}.json").write_text(json.dumps(doc, indent=2))
    merged = {"schema_version": 1,
              "manifest_sha256": hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest(),
              "targets": {t: {"runtime": runtime[t], "platform": platform, "seconds": 1.5}
                          for t in runtime},
              "results": records,
              "summary": {"pass": 7, "fail": 1, "unsupported": 2, "error": 2, "ok": False}}
    (run / "results.json").write_text(json.dumps(merged, indent=2))
    return run


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def _rewrite_results(run_dir, keep):
    merged = _results(run_dir)
    merged["results"] = [r for r in merged["results"] if keep(r)]
    (run_dir / "results.json").write_text(json.dumps(merged))
    return merged


def _section(page: str, entry_id: str) -> str:
    start = page.index(f'<details id="v-{entry_id}"')
    return page[start:page.index("</details>", start)]


def _no_temp_files(folder: Path):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name or p.name == PARTIAL]


# ---------------------------------------------------------------- report.html


def test_report_is_self_contained_and_shows_every_entry(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    # one histogram and one scatter per variant with saved outputs (5 of 6)
    assert page.count('src="data:image/png;base64,') == 10
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for entry in manifest["entries"]:
        assert f'id="v-{entry["id"]}"' in page
        assert f"<b>{entry['id']}</b>" in page
    for status in ("pass", "fail", "unsupported", "error"):
        assert f'class="cell st-{status}"' in page
    assert "FAIL — 1 failed, 2 errors" in page
    assert "XNNPACK" in page and "reference" in page  # targets: runtime kernels


def test_fail_reason_is_shown_escaped_and_failing_sections_are_open(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "max_abs 0.41 &gt; 0.031 &amp; steps 33 &gt; 2.5 &lt;script&gt;" in page
    assert '<script>alert("x")' not in page
    assert '<details id="v-mlp_step-int8" open' in page
    assert '<details id="v-mlp_step-dynamic" open' in page   # error on host
    assert '<details id="v-cnn_swish-float32">' in page      # passing: closed
    assert "derivation: int8: bound from the test (a &lt; b &amp; c)" in page


def test_matrix_shows_metrics_sizes_and_ratios(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "11,000" in page and "0.28×" in page   # cnn_swish int8 vs its float32 (40,000)
    assert "0.40×" in page                         # mlp_step int8: 2,000 / 5,000
    assert "Δacc" in page and "ΔR² 0.08" in page
    assert "33.33 steps" in page                   # mlp_step-int8 on host: 0.41 / 0.0123


def test_host_vs_host_ref_difference_is_computed(run_dir):
    diffs = target_differences(run_dir, _results(run_dir))
    assert diffs["cnn_swish-int8"]["max_abs"] == pytest.approx(HOSTREF_DIFF, abs=1e-9)
    assert diffs["cnn_swish-int8"]["differing"] == 2
    assert diffs["cnn_swish-int8"]["steps"] == pytest.approx(2.0)
    assert diffs["cnn_swish-float32"]["max_abs"] == 2 ** -16
    assert diffs["cnn_swish-float32"]["steps"] is None        # float mode: no output step
    assert diffs["mlp_step-float32"]["max_abs"] == 2 ** -14
    assert diffs["mlp_step-int8"]["max_abs"] is None
    assert "no saved outputs on host-ref" in diffs["mlp_step-int8"]["note"]
    assert diffs["cnn_swish-int16x8"]["max_abs"] is None
    page = write_report(run_dir).read_text(encoding="utf-8")
    cell = re.search(r'id="diff-cnn_swish-int8" data-value="([^"]+)">([^<]+)<', page)
    assert cell, "host vs host-ref cell for cnn_swish-int8"
    assert float(cell.group(1)) == pytest.approx(HOSTREF_DIFF, abs=1e-9)
    assert cell.group(2) == "0.007812"


def test_classification_and_regression_worst_samples_and_boundary(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    section = _section(page, "mlp_step-int8")
    assert "Boundary analysis" in section and "near_error_share" in section and "0.93" in section
    assert "input_step" in section and "[0.05]" in section and "worst_5pct_near" in section
    assert "input steps for int8: [0.05]" in section
    assert "<h3>Worst samples (host)</h3>" in section
    assert "<tr><td>4</td>" in section     # the planted worst sample
    assert "original units" in section      # regression: error in label units via y_std
    cls = _section(page, "cnn_swish-int8")
    assert "class " in cls and "(p " in cls
    # error on host: plots come from host-ref, and the page says so
    dyn = _section(page, "mlp_step-dynamic")
    assert "<h3>Outputs on host-ref</h3>" in dyn


def test_missing_outputs_targets_and_bad_paths_do_not_crash(run_dir):
    (run_dir / "outputs" / "host" / "mlp_step-float32.npy").unlink()
    (run_dir / "outputs" / "host" / "cnn_swish-int8.npy").write_bytes(b"not a npy file")
    merged = _results(run_dir)
    for r in merged["results"]:
        if r["id"] == "cnn_swish-float32" and r["target"] == "host":
            r["outputs"] = "../../etc/passwd.npy"
    (run_dir / "results.json").write_text(json.dumps(merged))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "saved outputs host: outputs/host/mlp_step-float32.npy: file missing" in page
    assert "path leaves the run folder" in page
    assert "outputs/host/cnn_swish-int8.npy: unreadable" in page
    for entry_id in ("mlp_step-float32", "cnn_swish-float32", "cnn_swish-int8"):
        assert "<h3>Outputs on host-ref</h3>" in _section(page, entry_id)
    assert "no saved outputs on host" in page     # host vs host-ref row for mlp_step-float32
    assert "No plots: no saved outputs on any target" in _section(page, "cnn_swish-int16x8")


def test_nan_and_infinities_are_counted_shown_and_left_out_of_the_plots(run_dir):
    """One inf in a variant's saved outputs ended the report in an internal error (issue 12)."""
    path = run_dir / "outputs" / "host" / "mlp_step-float32.npy"
    out = np.load(path)
    out[4, 0], out[9, 0] = np.inf, np.nan
    np.save(path, out)
    path = run_dir / "reference" / "cnn_swish.npy"
    np.save(path, _put(np.load(path), (0, 1), -np.inf))
    merged = _results(run_dir)
    for r in merged["results"]:  # as the runner writes a metric that is not finite: null
        if r["id"] == "mlp_step-float32" and r["target"] == "host":
            r["metrics"]["max_abs_error"] = None
    (run_dir / "results.json").write_text(json.dumps(merged))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "4 variant(s) have NaN or infinite values" in page   # the header: 3 cnn_swish, 1 mlp
    section = _section(page, "mlp_step-float32")
    assert ("saved outputs on host: 2 values are not finite (1 NaN, 1 +inf), in 2 of 30 "
            "samples: 4, 9; at outputs: 0.") in section
    # the numbers and plots use the finite part (the planted 2^-14), and say so
    assert "from them: <b>6.104e-05</b>" in section
    assert "over the finite values only: 2 of 30 positions hold NaN or an infinity" in section
    assert section.count("data:image/png;base64,") == 2
    assert re.search(r"<tr><td>4</td>(<td>[^<]*</td>){3}<td class=\"num warn\">not finite", section)
    cell = re.search(r'href="#v-mlp_step-float32"><b>pass</b>(.*?)</a>', page).group(1)
    assert "max|Δ| not finite" in cell and "⚠ 2 not finite" in cell
    cls = _section(page, "cnn_swish-int8")
    assert ("Keras reference outputs: 1 value is not finite (1 -inf), in 1 of 40 samples: 0; "
            "at outputs: 1.") in cls and cls.count("data:image/png;base64,") == 2
    row = target_differences(run_dir, merged)["mlp_step-float32"]
    assert (row["max_abs"], row["differing"], row["not_finite"]) == (2 ** -14, 3, 2)
    assert row["note"] == "2 elements differ by NaN or an infinity (left out of max and mean)"


def _put(array, where, value):
    array[where] = value
    return array


def test_unreadable_arrays_are_named_not_loaded(run_dir):
    host = run_dir / "outputs" / "host"
    (host / "mlp_step-float32.npy").write_bytes(b"")
    header = io.BytesIO()  # 10^12 float32 values declared: np.load would allocate 4 TB first
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    (host / "cnn_swish-int8.npy").write_bytes(header.getvalue() + bytes(64))
    np.save(host / "cnn_swish-float32.npy", np.ones((N_CLS, CLASSES), np.complex64))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "outputs/host/mlp_step-float32.npy: unreadable: No data left in file" in page
    assert "outputs/host/cnn_swish-int8.npy: unreadable: mmap length is greater" in page
    assert "outputs/host/cnn_swish-float32.npy: not real numbers: dtype complex64" in page


def test_an_unknown_status_is_flagged_and_counted_as_an_error(run_dir):
    merged = _results(run_dir)
    merged["results"][0]["status"] = "crashed"   # cnn_swish-float32 on host
    (run_dir / "results.json").write_text(json.dumps(merged))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert ("results.json results[0] (cnn_swish-float32 on host) has status &#x27;crashed&#x27;, "
            "none of pass, fail, unsupported, error: counted as an error.") in page
    assert "FAIL — 1 failed, 3 errors" in page
    assert '<details id="v-cnn_swish-float32" open' in page


@pytest.mark.parametrize("name, change, field", [
    ("results.json", lambda d: d.update(results="x"), "results"),
    ("results.json", lambda d: d["results"][1].update(status=["pass"]), "results[1].status"),
    ("results.json", lambda d: d["results"][0]["metrics"]["task"].update(delta="0.1"),
     "results[0].metrics.task.delta"),
    ("results.json", lambda d: d["results"][8]["metrics"].update(boundary=[1]),
     "results[8].metrics.boundary"),
    ("results.json", lambda d: d["targets"]["host-ref"].update(seconds=True),
     "targets.host-ref.seconds"),
    ("manifest.json", lambda d: d["entries"][2].update(tolerance=[]), "entries[2].tolerance"),
    ("manifest.json", lambda d: d["models"]["mlp_step"]["boundary"].update(layers="step_1"),
     "models.mlp_step.boundary.layers"),
    ("manifest.json", lambda d: d["entries"].append(5), "entries[6]"),
])
def test_a_json_file_of_the_wrong_shape_is_one_line_naming_the_field(run_dir, name, change,
                                                                      field):
    path = run_dir / name
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(EdgepipeError) as err:
        write_report(run_dir, junit=True)
    assert f"Expected {field} in {path} to be " in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("junit", [False, True])
def test_a_report_that_cannot_be_written_leaves_no_stale_one(run_dir, junit):
    write_junit(run_dir, _results(run_dir))
    write_report(run_dir)
    (run_dir / "results.json").write_text('{"results": [')
    with pytest.raises(EdgepipeError, match="Expected the merged results.json at .* to be JSON"):
        write_report(run_dir, junit=junit)
    assert not (run_dir / "report.html").exists()
    assert (run_dir / "junit.xml").exists() is not junit


def test_report_with_only_one_target(run_dir):
    merged = _rewrite_results(run_dir, lambda r: r["target"] == "host")
    del merged["targets"]["host-ref"]
    (run_dir / "results.json").write_text(json.dumps(merged))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "No comparison: host-ref did not run." in page
    assert "host-ref" not in page.split("<h2>Parity matrix</h2>")[1].split("</thead>")[0]
    assert "summary" in page and "disagrees" in page   # the stale summary is flagged


def test_missing_results_for_a_target_are_flagged(run_dir):
    _rewrite_results(run_dir, lambda r: not (r["target"] == "host-ref"
                                             and r["id"] == "mlp_step-float32"))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "expected result(s) missing: mlp_step-float32 on host-ref" in page
    assert 'class="cell st-missing"' in page


def test_verdict_pass_and_incomplete(run_dir):
    merged = _results(run_dir)
    for r in merged["results"]:
        if r["status"] in ("fail", "error"):
            r["status"] = "unsupported"
    merged["summary"] = {"pass": 7, "fail": 0, "unsupported": 5, "error": 0, "ok": True}
    (run_dir / "results.json").write_text(json.dumps(merged))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "PASS — all expected checks passed" in page and "disagrees" not in page
    _rewrite_results(run_dir, lambda r: r["id"] != "cnn_swish-float32" or r["target"] == "host")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "INCOMPLETE — no check failed, but 1 expected result(s) are missing" in page


def test_plot_budget_goes_to_failing_variants_first(run_dir, monkeypatch):
    monkeypatch.setattr(entries, "MAX_PLOTTED", 2)
    page = write_report(run_dir).read_text(encoding="utf-8")
    for entry_id in ("mlp_step-int8", "mlp_step-dynamic"):
        assert _section(page, entry_id).count("data:image/png;base64,") == 2
    assert "Plots omitted: only 2 variants get plots" in _section(page, "cnn_swish-float32")
    assert page.count("data:image/png;base64,") == 4


def test_report_without_results_is_a_user_error(run_dir):
    (run_dir / "results.json").unlink()
    with pytest.raises(EdgepipeError, match="Expected the merged results.json at .*Received"):
        write_report(run_dir)
    assert not (run_dir / "report.html").exists()


def test_no_figures_left_open(run_dir):
    import matplotlib.pyplot as plt

    write_report(run_dir)
    assert plt.get_fignums() == []


def test_a_report_of_unchanged_results_draws_no_plot_again(run_dir):
    images = re.compile(r'src="(data:image/png;base64,[^"]+)"')
    write_report(run_dir)
    first = images.findall((run_dir / "report.html").read_text(encoding="utf-8"))
    assert first
    code = (f"from edgepipe.pipeline.report import write_report\n"
            f"write_report({str(run_dir)!r})")
    assert imported_modules(code, ("tensorflow", "keras", "matplotlib")) == []
    assert images.findall((run_dir / "report.html").read_text(encoding="utf-8")) == first
    # Different outputs show a different plot: drawn again, and the old one forgotten.
    cached = set((run_dir / ".edgepipe" / "plots").glob("*.json"))
    saved = next((run_dir / "outputs").rglob("*.npy"))
    np.save(saved, np.load(saved) + 1.0)
    write_report(run_dir)
    now = set((run_dir / ".edgepipe" / "plots").glob("*.json"))
    assert now != cached and len(now) == len(cached)


def test_plots_drawn_in_worker_processes_make_the_same_page(run_dir, tmp_path):
    """`workers` > 1: the plots the cache lacks are drawn in that many spawned processes, after
    the page is rendered. The page and the cache equal those of drawing here, and this process
    never imports matplotlib."""
    import shutil

    other = tmp_path / "other" / run_dir.name
    shutil.copytree(run_dir, other)
    write_report(run_dir)
    serial = (run_dir / "report.html").read_text(encoding="utf-8")
    code = ("import edgepipe.pipeline.report.plots as p\n"
            "p.MIN_PARALLEL = 2  # the fixture's few plots: draw them in the processes anyway\n"
            "from edgepipe.pipeline.report import write_report\n"
            f"write_report({str(other)!r}, workers=2)")
    assert imported_modules(code, ("matplotlib",)) == []
    page = (other / "report.html").read_text(encoding="utf-8")
    assert page.replace(str(other), str(run_dir)) == serial  # the page names its folder
    assert "edgepipe-plot-" not in serial and serial.count("data:image/png;base64,") > 2
    cache = [sorted(p.relative_to(root).as_posix() for p in (root / ".edgepipe" / "plots")
                    .rglob("*.json")) for root in (run_dir, other)]
    assert cache[0] == cache[1] and cache[0]


def test_report_and_junit_modules_do_not_import_tensorflow():
    code = "import edgepipe.pipeline.report"
    # matplotlib too: it is only imported when a report is drawn
    assert imported_modules(code, ("tensorflow", "keras", "matplotlib")) == []


# ---------------------------------------------------------------- junit.xml


def test_junit_counts_and_elements(run_dir):
    path = write_junit(run_dir, _results(run_dir))
    assert path == run_dir / "junit.xml"
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert {k: root.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "12", "failures": "1", "errors": "2", "skipped": "2"}
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["host", "host-ref"]
    expected = {"host": ("6", "1", "1", "1"), "host-ref": ("6", "0", "1", "1")}
    for name, suite in suites.items():
        got = tuple(suite.get(k) for k in ("tests", "failures", "errors", "skipped"))
        assert got == expected[name], name
        cases = suite.findall("testcase")
        assert len(cases) == 6
        assert all(c.get("classname") == f"edgepipe.{name}" for c in cases)
        assert all(float(c.get("time")) == pytest.approx(0.012) for c in cases)
    host = {c.get("name"): c for c in suites["host"].findall("testcase")}
    failure = host["mlp_step-int8"].find("failure")
    assert failure.get("message") == FAIL_REASON
    assert "max_abs_error: 0.41" in failure.text and "steps: 33.3" in failure.text
    assert "boundary.near_error_share: 0.93" in failure.text
    assert host["mlp_step-dynamic"].find("error") is not None
    assert host["cnn_swish-int16x8"].find("skipped").get("message") == (
        "int16x8 has no kernel for LOGISTIC")
    assert list(host["cnn_swish-float32"]) == []
    ref = {c.get("name"): c for c in suites["host-ref"].findall("testcase")}
    error = ref["mlp_step-int8"].find("error")
    # the ESC character cannot be in XML 1.0 at all: replaced, the rest escaped and kept
    assert error.get("message") == ERROR_REASON.replace("\x1b", "\N{REPLACEMENT CHARACTER}")
    raw = path.read_text(encoding="utf-8")
    assert "&lt;script&gt;" in raw and "\x1b" not in raw


def test_junit_with_no_results_and_an_unknown_status(tmp_path):
    root = ET.parse(write_junit(tmp_path, {"targets": {"host": {}}, "results": []})).getroot()
    assert root.get("tests") == "0" and root.find("testsuite").get("tests") == "0"
    weird = {"results": [{"id": "a-int8", "target": "tflm", "status": "crashed"}]}
    root = ET.parse(write_junit(tmp_path, weird)).getroot()
    suite = root.find("testsuite")
    assert suite.get("name") == "tflm" and suite.get("errors") == "1"
    assert suite.find("testcase/error") is not None


def test_junit_refuses_a_results_document_of_the_wrong_shape(tmp_path):
    with pytest.raises(EdgepipeError, match=r"Expected results\[0\]\.id in .*results.json to "
                       "be a string. Received: a number 1. Rerun `edgepipe parity"):
        write_junit(tmp_path, {"results": [{"id": 1, "target": "host", "status": "pass"}]})
    assert not (tmp_path / "junit.xml").exists()
    # control characters in a runtime's keys and values cannot be in XML 1.0: replaced
    odd = {"targets": {"host": {"runtime": {"name\x01": "litert\x00"}}}, "results": []}
    prop = ET.parse(write_junit(tmp_path, odd)).getroot().find("testsuite/properties/property")
    assert prop.get("name") == "runtime.name\N{REPLACEMENT CHARACTER}"


# ---------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("writer", ["report", "junit"])
def test_writers_are_atomic(run_dir, monkeypatch, writer):
    name = {"report": "report.html", "junit": "junit.xml"}[writer]
    (run_dir / name).write_text("old")
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    if writer == "report":
        write_report(run_dir)
    else:
        write_junit(run_dir, _results(run_dir))
    # The report's plot cache (.edgepipe/plots) is written the same way, beside itself.
    assert all(src.parent == dst.parent / PARTIAL for src, dst in replaced)
    mine = [(src, dst) for src, dst in replaced if ".edgepipe" not in dst.parts]
    assert [dst for _, dst in mine] == [run_dir / name]
    assert mine[0][0].name.endswith(name)
    assert (run_dir / name).read_text(encoding="utf-8") != "old"
    assert _no_temp_files(run_dir) == []


def test_a_failed_write_leaves_the_old_file_and_no_temp(run_dir, monkeypatch):
    (run_dir / "junit.xml").write_text("old")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ET.ElementTree, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        write_junit(run_dir, _results(run_dir))
    assert (run_dir / "junit.xml").read_text() == "old"
    assert _no_temp_files(run_dir) == []
