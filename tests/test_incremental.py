"""Incremental runs and `--jobs`: a stage is redone exactly when its inputs changed.

One small zoo run (two models, two modes, host) is made with two workers; later runs in the same
folder change one thing each and check which stages were redone, from the stage record and from
the files' modification times. Timings are the benchmark's business (bench/), not these tests'.
"""

import hashlib
import json
import subprocess
import sys

import pytest

from edgepipe.pipeline.stages import Stages, digest

MODELS = ("mlp_swish", "cnn_step")
CONFIG = f"""[run]
models = {list(MODELS)!r}
modes = ["float32", "int8"]
targets = ["host"]
epochs = 3
""".replace("'", '"')

# Runs the CLI in a fresh Python, then reports whether TensorFlow was imported.
RUN_AND_REPORT_TF = """
import sys
from edgepipe.pipeline.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("TENSORFLOW_IMPORTED" if "tensorflow" in sys.modules else "NO_TENSORFLOW")
"""


def edgepipe(*args, config=None, cwd=None):
    cmd = [sys.executable, "-c", RUN_AND_REPORT_TF, "run", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def stage_keys(out) -> dict:
    stages = json.loads((out / ".edgepipe" / "stages.json").read_text())["stages"]
    return {name: stage["key"] for name, stage in stages.items()}


def stage_seconds(out) -> dict:
    stages = json.loads((out / ".edgepipe" / "stages.json").read_text())["stages"]
    return {name: stage["seconds"] for name, stage in stages.items() if "seconds" in stage}


def mtimes(out) -> dict:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and ".edgepipe" not in p.parts}


def tflite_hashes(out) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "tflite").glob("*.tflite"))}


def statuses(out) -> dict:
    return {(r["id"], r["target"]): r["status"]
            for r in json.loads((out / "results.json").read_text())["results"]}


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    config = root / "edgepipe.toml"
    config.write_text(CONFIG)
    out = root / "run"
    # A relative --out here (as `make pipeline` gives), absolute ones in the later runs.
    log = edgepipe("--out", "run", "--jobs", "2", config=config, cwd=root)
    return root, config, out, log


def test_cold_run_builds_every_model_on_two_workers(cold):
    _, _, out, log = cold
    assert "building 2 models on 2 worker(s)" in log
    assert "parity on host: 4 entries in 2 runner(s)" in log
    names = set(stage_keys(out))
    assert {f"{s}:{m}" for s in ("train", "convert", "bundle") for m in MODELS} <= names
    assert {f"parity:host:{m}-{mode}" for m in MODELS for mode in ("float32", "int8")} <= names
    assert "collect" in names
    # What each build stage took: the next run schedules the longest jobs first.
    assert all(stage_seconds(out)[f"{s}:{m}"] > 0 for s in ("train", "convert", "bundle")
               for m in MODELS)
    # Each entry's record carries the runner's outputs, merged from two runner processes.
    results = json.loads((out / "results" / "host.json").read_text())["results"]
    assert [r["id"] for r in results] == [e["id"] for e in json.loads(
        (out / "manifest.json").read_text())["entries"]]
    assert not list((out / "results").glob("*.partial"))


def test_a_second_run_reuses_everything_without_tensorflow(cold):
    _, config, out, _ = cold
    before, keys = mtimes(out), stage_keys(out)
    log = edgepipe("--out", str(out), config=config)
    entries = json.loads((out / "manifest.json").read_text())["entries"]  # repaired ones too
    assert "reused 2 of 2 models" in log and f"parity on host: {len(entries)} reused" in log
    assert log.count("parity on host") == 1
    assert "NO_TENSORFLOW" in log
    assert mtimes(out) == before  # not one artifact rewritten
    assert stage_keys(out) == keys


def test_changing_one_models_setting_redoes_only_its_stages(cold):
    root, _, out, _ = cold
    config = root / "tolerance.toml"
    config.write_text(CONFIG + "[tolerances.cnn_step.int8]\ntask_delta = 0.03\n")
    before, keys = mtimes(out), stage_keys(out)
    log = edgepipe("--out", str(out), config=config)
    after = stage_keys(out)
    changed = {name for name in after if after[name] != keys.get(name)}
    # The override is in cnn_step's int8 entry: its bundle stage, that entry's parity and the
    # report; not its training or conversion, and nothing of mlp_swish. A repaired int8
    # variant of cnn_step (3 epochs: its int8 fails) takes the mode's override too: its repair
    # and its parity are redone.
    repaired = {e["id"] for e in json.loads((out / "manifest.json").read_text())["entries"]
                if (e.get("repair") or {}).get("of") == "cnn_step-int8"}
    expected = {"bundle:cnn_step", "parity:host:cnn_step-int8", "collect"}
    if repaired:
        expected |= {"repair:cnn_step"} | {f"parity:host:{i}" for i in repaired}
    assert changed == expected, changed
    assert "reused 1 of 2 models" in log and "cnn_step: bundled" in log
    assert "parity on host: 1 entries in 1 runner(s), 3 reused" in log
    now = mtimes(out)
    for rel in ("models/mlp_swish.keras", "models/cnn_step.keras",
                "tflite/cnn_step.int8.tflite", "reference/mlp_swish.npy",
                "results/outputs/host/mlp_swish-int8.npy"):
        assert now[rel] == before[rel], rel
    assert now["results/outputs/host/cnn_step-int8.npy"] != before[
        "results/outputs/host/cnn_step-int8.npy"]
    entry = next(r for r in json.loads((out / "results.json").read_text())["results"]
                 if r["id"] == "cnn_step-int8")
    assert entry["tolerance"]["task_delta"] == 0.03


def test_a_damaged_artifact_is_rebuilt_and_what_depends_on_it_only_if_it_changed(cold):
    root, _, out, _ = cold
    config = root / "edgepipe.toml"
    edgepipe("--out", str(out), config=config)  # back to the first config
    keys = stage_keys(out)
    variant = out / "tflite" / "mlp_swish.int8.tflite"
    original = variant.read_bytes()
    variant.write_bytes(original[:100])
    log = edgepipe("--out", str(out), config=config)
    assert "reused 1 of 2 models" in log and "mlp_swish: converted 2 modes, bundled" in log
    assert variant.read_bytes() == original  # conversion is deterministic
    # The rebuilt variant is byte-identical, so its entry is unchanged and parity is reused
    # (a repaired variant's too).
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    assert f"parity on host: {len(entries)} reused" in log
    assert stage_keys(out) == keys


def test_force_redoes_every_stage(cold):
    _, config, out, _ = cold
    before, took = mtimes(out), stage_seconds(out)
    log = edgepipe("--out", str(out), "--force", "--jobs", "1", config=config)
    assert "building 2 models on 1 worker(s)" in log and "reused 2 of" not in log
    # One worker builds in the scheduled order: the model whose stages took longest first.
    longest = max(MODELS, key=lambda m: sum(took[f"{s}:{m}"]
                                            for s in ("train", "convert", "bundle")))
    built = [line.split(":")[0] for line in log.splitlines()
             if line.startswith(tuple(f"{m}: trained" for m in MODELS))]
    assert built[0] == longest, log
    # Every stage once: the parity pass after a repair runs only the repaired entry, and the
    # repair is not searched again in a second round (cnn_step int8 fails after 3 epochs).
    passes = [line for line in log.splitlines() if line.startswith("parity on host:")]
    assert len(passes) == 2 and "reused" not in passes[0], log
    assert passes[1].startswith("parity on host: 1 entries in 1 runner(s), ") and \
        passes[1].endswith(" reused"), log
    assert log.count("repairing ") == 1, log
    now = mtimes(out)
    assert all(now[rel] != before[rel] for rel in ("models/mlp_swish.keras", "report.html",
                                                   "tflite/cnn_step.int8.tflite"))


def test_one_worker_and_two_workers_give_the_same_artifacts_and_results(cold, tmp_path):
    _, config, out, _ = cold
    single = tmp_path / "single"
    edgepipe("--out", str(single), "--jobs", "1", config=config)
    assert tflite_hashes(single) == tflite_hashes(out)
    assert statuses(single) == statuses(out)


def test_stage_record_semantics(tmp_path):
    stages = Stages(tmp_path)
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"one")
    key = digest("stage", 1)
    assert not stages.fresh("s", key)
    stages.record("s", key, ["a.bin"], {"v": 1})
    stages.save()
    again = Stages(tmp_path)
    assert again.fresh("s", key) and again.value("s") == {"v": 1}
    assert not again.fresh("s", digest("stage", 2))  # another key
    forced = Stages(tmp_path, force=True)
    assert not forced.fresh("s", key)
    forced.record("s", key, ["a.bin"], {"v": 1})  # redone in this run: fresh from now on
    assert forced.fresh("s", key)
    artifact.write_bytes(b"two")  # the output changed since
    assert not again.fresh("s", key)
    artifact.unlink()
    assert not again.fresh("s", key)
    (tmp_path / ".edgepipe" / "stages.json").write_text("{not json")
    assert not Stages(tmp_path).fresh("s", key)  # an unreadable record redoes everything
