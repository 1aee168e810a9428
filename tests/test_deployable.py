""""Deployable": per model and target the smallest variant that passes, and the exit codes of
`run` and `parity` (0 when every requested mode a target supports has a passing variant, plain or
repaired; --strict: also no plain variant fails)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from edgepipe.core.files import sha256_file
from edgepipe.pipeline.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "240"}
REPAIRED = "mlp_step-int8.f32.step"  # the id a repair of mlp_step-int8 would get
LABEL = "int8+f32[step]"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """mlp_step on host in four modes, repair off: float32 and float16 pass; int8 fails (its
    bound tightened far below what int8 can reach); int16x8 is unsupported (TFLite has no
    int16 GREATER)."""
    out = tmp_path_factory.mktemp("deployable") / "run"
    config = out.parent / "edgepipe.toml"
    config.write_text('[run]\nmodels = ["mlp_step"]\nmodes = ["float32", "float16", "int8", '
                      '"int16x8"]\nepochs = 3\ntargets = ["host"]\n'
                      '[tolerances.mlp_step.int8]\nmax_abs = 1e-9\n[repair]\nenabled = false\n')
    result = runner.invoke(app, ["run", "--config", str(config), "--out", str(out)], env=ENV)
    merged = json.loads((out / "results.json").read_text())
    status = {r["id"]: r["status"] for r in merged["results"]}
    assert status == {"mlp_step-float32": "pass", "mlp_step-float16": "pass",
                      "mlp_step-int8": "fail", "mlp_step-int16x8": "unsupported"}, result.output
    return out, result, merged


@pytest.fixture(scope="module")
def repaired(run, tmp_path_factory):
    """A copy of the run whose manifest also has a repaired int8 entry, then `parity` on it.
    The stand-in for a repaired file is the int8 file itself under the repaired tag, with a
    bound it meets; the plain int8 entry still fails."""
    copy = tmp_path_factory.mktemp("repaired") / "run"
    shutil.copytree(run[0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    plain = next(e for e in manifest["entries"] if e["id"] == "mlp_step-int8")
    tflite = f"tflite/{REPAIRED.replace('-', '.', 1)}.tflite"
    shutil.copy(copy / plain["tflite"], copy / tflite)
    manifest["entries"].append({
        **plain, "id": REPAIRED, "tflite": tflite, "sha256": sha256_file(copy / tflite),
        "tolerance": {"max_abs": 100.0, "task_delta": 100.0,
                      "output_step": plain["tolerance"].get("output_step"),
                      "derivation": "test stand-in: a bound the file meets"},
        "repair": {"of": "mlp_step-int8", "kind": "precision", "label": LABEL,
                   "precision": "float32", "layers": ["step"], "tool": "tflite converter",
                   "reason": plain["id"] + " fails its bound",
                   "tries": [{"layers": ["step"], "precision": "float32",
                              "bytes": plain["bytes"], "ok": True, "why": ""}]}})
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=1))
    result = runner.invoke(app, ["parity", str(copy), "--target", "host"], env=ENV)
    strict = runner.invoke(app, ["parity", str(copy), "--target", "host", "--strict"], env=ENV)
    merged = json.loads((copy / "results.json").read_text())
    return copy, result, strict, merged, manifest


def _row(merged: dict, model: str = "mlp_step", target: str = "host") -> dict:
    return next(r for r in merged["deployable"]["rows"]
                if (r["model"], r["target"]) == (model, target))


def _coverage(merged: dict, mode: str) -> dict:
    return next(c for c in merged["deployable"]["coverage"]
                if (c["model"], c["mode"], c["target"]) == ("mlp_step", mode, "host"))


def _smallest_passing(out, merged: dict) -> dict:
    """The passing entry with the fewest bytes, worked out here from the manifest."""
    passing = {r["id"] for r in merged["results"] if r["target"] == "host"
               and r["status"] == "pass"}
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    return min((e for e in entries if e["id"] in passing),
               key=lambda e: (e["bytes"], "repair" in e))


def test_the_smallest_passing_variant_is_picked_by_bytes(run):
    out, _, merged = run
    sizes = {e["id"]: e.get("bytes") for e in json.loads((out / "manifest.json").read_text())
             ["entries"]}
    assert sizes["mlp_step-float16"] < sizes["mlp_step-float32"]  # two passing sizes to pick from
    row = _row(merged)
    assert row["id"] == _smallest_passing(out, merged)["id"] == "mlp_step-float16"
    assert row["label"] == row["mode"] == "float16" and row["bytes"] == sizes[row["id"]]
    assert row["latency_ms"] > 0 and row["arena_bytes"] is None  # host measures no arena
    assert row["repaired"] is False and row["why"] == ""


def test_a_fail_that_nothing_repairs_exits_1(run):
    _, result, merged = run
    int8 = _coverage(merged, "int8")
    assert int8["plain"] == "fail" and int8["passing"] == [] and not int8["ok"]
    assert merged["deployable"]["ok"] is False and merged["deployable"]["strict_ok"] is False
    assert result.exit_code == 1, result.output


def test_an_unsupported_mode_with_no_repair_does_not_count(run):
    _, _, merged = run
    int16 = _coverage(merged, "int16x8")
    assert int16["plain"] == "unsupported" and int16["passing"] == [] and int16["ok"]
    assert {c["mode"] for c in merged["deployable"]["coverage"] if not c["ok"]} == {"int8"}


def test_a_model_with_nothing_passing_says_what_stands_in_the_way(run):
    out, _, _ = run
    from edgepipe.pipeline.deployable import deployable

    merged = json.loads((out / "results.json").read_text())
    for r in merged["results"]:  # as if float32 and float16 had failed too
        if r["status"] == "pass":
            r["status"], r["reason"] = "fail", "max_abs 0.5 > 0.1 (sample 3); task ok"
    manifest = json.loads((out / "manifest.json").read_text())
    row = deployable(manifest, merged["results"], ["host"])["rows"][0]
    assert row["id"] is None and row["label"] is None and row["bytes"] is None
    assert row["why"].startswith("float32: fail (max_abs 0.5 > 0.1); float16: fail")
    assert "int16x8: unsupported (" in row["why"] and "int8: fail" in row["why"]


def test_a_plain_fail_with_a_passing_repair_exits_0_and_strict_exits_1(repaired):
    _, result, strict, merged, _ = repaired
    status = {r["id"]: r["status"] for r in merged["results"]}
    assert status["mlp_step-int8"] == "fail" and status[REPAIRED] == "pass", result.output
    int8 = _coverage(merged, "int8")
    assert int8 == {"model": "mlp_step", "target": "host", "mode": "int8", "plain": "fail",
                    "passing": [REPAIRED], "ok": True}
    assert merged["deployable"]["ok"] is True and merged["deployable"]["strict_ok"] is False
    assert merged["summary"]["ok"] is False  # today's judgement, unchanged
    assert result.exit_code == 0, result.output
    assert strict.exit_code == 1, strict.output


def test_a_repaired_variant_competes_on_bytes_and_says_it_was_repaired(repaired):
    from edgepipe.pipeline.deployable import deployable

    copy, _, _, merged, manifest = repaired
    assert _row(merged)["id"] == _smallest_passing(copy, merged)["id"] == "mlp_step-float16"
    sizes = {e["id"]: e.get("bytes") for e in manifest["entries"]}
    assert sizes[REPAIRED] < sizes["mlp_step-float32"]
    for r in merged["results"]:  # as if float16 had failed: the repaired int8 is the smallest
        if r["id"] == "mlp_step-float16":
            r["status"] = "fail"
    row = deployable(manifest, merged["results"], ["host"])["rows"][0]
    assert row["id"] == REPAIRED and row["repaired"] is True
    assert row["label"] == LABEL and row["mode"] == "int8" and row["bytes"] == sizes[REPAIRED]
    assert row["latency_ms"] > 0


def test_the_console_ends_with_the_deployable_table(run, repaired):
    _, result, _ = run
    text = result.stdout
    assert "Deployable" in text and text.index("Deployable") > text.index("Parity vs Keras")
    assert "mlp_step-float16" not in text.split("Deployable")[1]  # a label, not an id
    shown = repaired[1].stdout.split("Deployable")[1]
    assert "every requested mode the targets support has a passing variant" in shown
    row = _row(repaired[3])
    assert row["label"] in shown and ("yes" if row["repaired"] else "no") in shown


def test_the_report_starts_with_the_deployable_table(run, repaired):
    page = (run[0] / "report.html").read_text()
    assert '<h2 id="deployable">Deployable</h2>' in page
    assert page.index('id="deployable"') < page.index("Parity matrix")
    assert 'href="#v-mlp_step-float16">float16</a>' in page
    assert "No passing variant for 1: mlp_step int8 on host." in page
    page = (repaired[0] / "report.html").read_text()
    row = _row(repaired[3])
    assert f'href="#v-{row["id"]}">' in page
    assert "has a passing variant (plain or repaired)" in page


def test_the_verdict_says_deployable_not_pass_when_a_repair_stands_in(run, repaired):
    assert ">FAIL — 1 failed, 0 errors<" in (run[0] / "report.html").read_text()
    page = (repaired[0] / "report.html").read_text()
    assert '<div class="verdict ok" id="verdict">DEPLOYABLE — 1 failed, 0 errors' in page
    assert "PASS —" not in page
