"""`edgepipe run` end to end on a small config, then `parity` and `report` on its folder."""

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from edgepipe.pipeline.cli import app

runner = CliRunner()
MODELS = ("mlp_step", "cnn_piecewise")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = out.parent / "edgepipe.toml"
    config.write_text(f"[run]\nmodels = {list(MODELS)!r}\nepochs = 3\n".replace("'", '"'))
    result = runner.invoke(app, ["run", "--config", str(config), "--out", str(out)],
                           env={"COLUMNS": "200"})
    return out, result


def test_run_writes_the_four_outputs_and_a_parity_table(run_dir):
    out, result = run_dir
    for name in ("manifest.json", "results.json", "junit.xml", "report.html"):
        assert (out / name).is_file(), name
    assert "Parity vs Keras" in result.stdout
    merged = json.loads((out / "results.json").read_text())
    # Exit 0 exactly when every requested mode has a passing variant, plain or repaired (a
    # failing plain variant stays a failure in the summary and the JUnit file).
    assert result.exit_code == (0 if merged["deployable"]["ok"] else 1), result.output


def test_every_model_mode_target_has_a_record(run_dir):
    out, _ = run_dir
    merged = json.loads((out / "results.json").read_text())
    keys = {(r["model"], r["mode"], r["target"]) for r in merged["results"]}
    modes = ("float32", "float16", "dynamic", "int8", "int16x8")
    assert keys == {(m, mode, t) for m in MODELS for mode in modes for t in ("host", "host-ref")}
    assert set(merged["targets"]) == {"host", "host-ref"}


def test_float_variants_pass_and_int16_step_is_unsupported(run_dir):
    out, _ = run_dir
    by_key = {(r["id"], r["target"]): r for r in json.loads((out / "results.json").read_text())
              ["results"]}
    for model in MODELS:
        for mode in ("float32", "float16", "dynamic"):
            for target in ("host", "host-ref"):
                r = by_key[(f"{model}-{mode}", target)]
                assert r["status"] == "pass", (r["id"], target, r["reason"])
    step16 = by_key[("mlp_step-int16x8", "host")]
    assert step16["status"] == "unsupported" and "GREATER" in step16["reason"]


def test_integer_results_carry_metrics_tolerances_and_boundary_analysis(run_dir):
    out, _ = run_dir
    results = json.loads((out / "results.json").read_text())["results"]
    r = next(r for r in results if r["id"] == "mlp_step-int8" and r["target"] == "host")
    assert r["status"] in ("pass", "fail")
    assert r["tolerance"]["steps"] > 0 and "simulated int8 error" in r["tolerance"]["derivation"]
    m = r["metrics"]
    assert {"max_abs_error", "rmse", "cosine", "sqnr_db", "steps", "worst_sample"} <= set(m)
    assert m["task"]["metric"] == "r2"
    assert 0 <= m["boundary"]["near_error_share"] <= 1 and m["boundary"]["samples"] == 88
    if r["status"] == "fail":
        assert r["reason"] and m["worst_samples"]


def test_junit_has_one_suite_per_target(run_dir):
    out, _ = run_dir
    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")
    assert sorted(s.get("name") for s in suites) == ["host", "host-ref"]
    entries = json.loads((out / "manifest.json").read_text())["entries"]  # repaired ones too
    assert all(int(s.get("tests")) == len(entries) for s in suites)


def test_report_and_parity_rerun_from_the_folder(run_dir):
    out, _ = run_dir
    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and (out / "report.html").is_file()
    result = runner.invoke(app, ["parity", str(out), "--target", "host-ref"],
                           env={"COLUMNS": "200"})
    merged = json.loads((out / "results.json").read_text())
    assert result.exit_code == (0 if merged["deployable"]["ok"] else 1)
    assert set(merged["targets"]) == {"host", "host-ref"}  # host's earlier results are kept


def test_parity_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["parity", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a run folder (no manifest.json)" in result.stderr


def test_a_result_missing_on_one_target_makes_the_run_incomplete(run_dir, tmp_path):
    import shutil

    from edgepipe.pipeline.results import collect

    copy = tmp_path / "run"
    shutil.copytree(run_dir[0], copy)
    path = copy / "results" / "host-ref.json"
    doc = json.loads(path.read_text())
    dropped = doc["results"].pop(0)
    path.write_text(json.dumps(doc))
    merged = collect(copy)
    assert merged["summary"]["missing"] == 1 and not merged["summary"]["ok"]
    assert (dropped["id"], "host-ref") not in {(r["id"], r["target"]) for r in merged["results"]}
