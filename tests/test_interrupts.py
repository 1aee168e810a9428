"""Runs killed at random points (SIGINT or SIGKILL, to the whole process group as a cancelled CI
job or Ctrl-C does) leave no partial artifact, and the next run completes the work."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.core.files import OWN_NAME, PARTIAL

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))
CONFIG = ('[run]\nmodels = ["mlp_piecewise", "cnn_step"]\nmodes = ["float32", "int8"]\n'
          'targets = ["host"]\nepochs = 3\n')


def start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([EDGEPIPE, "run", "--config", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def artifacts(out: Path) -> list:
    """Every file of the run folder outside the `.partial` folders, but edgepipe's scratch
    files (a killed parity chunk's) and the runner's hidden `.<name>.<pid>.tmp` files (a killed
    runner's half-written outputs); neither is ever read by name."""
    return [p for p in out.rglob("*") if p.is_file() and PARTIAL not in p.parts
            and not OWN_NAME.match(p.name)
            and not (p.name.startswith(".") and p.suffix == ".tmp")]


def assert_whole(out: Path) -> dict:
    """Each artifact parses as what its name says; returns counts by suffix."""
    counts: dict = {}
    for path in artifacts(out):
        suffix = path.suffix
        counts[suffix] = counts.get(suffix, 0) + 1
        if suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                assert archive.testzip() is None, path
                assert "config.json" in archive.namelist(), path
        elif suffix == ".tflite":
            read_tflite_file(path)
        elif suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".xml":
            ElementTree.parse(path)
        elif suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path
        else:
            raise AssertionError(f"unexpected artifact {path}")
    return counts


def kill_and_check(config: Path, out: Path, at: float, sig: int) -> str:
    process = start(config, out)
    time.sleep(at)
    if process.poll() is None:
        os.killpg(process.pid, sig)
    _, stderr = process.communicate(timeout=120)
    # The runner child is in the same group; let it go before looking.
    time.sleep(0.5)
    assert "Traceback" not in stderr, stderr[-2000:]
    if sig == signal.SIGINT and process.returncode not in (0, 1):
        assert process.returncode == 130, stderr[-2000:]
        assert stderr.strip().splitlines()[-1] == "interrupted", stderr[-2000:]
    assert_whole(out)
    return stderr


def finish(config: Path, out: Path) -> None:
    done = subprocess.run([EDGEPIPE, "run", "--config", str(config), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    # The verdict is not what this is about (cnn_step trained 3 epochs loses top-1 agreement in
    # int8, a real fail): every entry ran to a pass or a fail, none is an error or missing.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    counts = assert_whole(out)
    # 2 models x 2 modes, and a repaired variant of a failing int8 one when repair found one
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    repaired = sum(1 for e in entries if e.get("repair"))
    assert len(entries) == 4 + repaired, entries
    assert counts[".tflite"] == 4 + repaired and counts[".keras"] == 2, counts
    merged = json.loads((out / "results.json").read_text())
    summary = merged["summary"]
    assert summary["pass"] + summary["fail"] == len(entries) and summary["error"] == 0, summary
    assert summary["missing"] == 0, summary
    assert merged["deployable"]["ok"] == (done.returncode == 0), merged["deployable"]
    assert not list(out.rglob(PARTIAL)), "a .partial folder survived a completed run"


def _kills(seed: int, count: int) -> list:
    """Random moments of a ~25 s run (training, conversion, parity, reports), alternating
    SIGINT and SIGKILL."""
    rng = random.Random(seed)
    return [(round(rng.uniform(0.5, 25.0), 2), (signal.SIGINT, signal.SIGKILL)[i % 2])
            for i in range(count)]


def _metrics(out: Path) -> dict:
    """Every result's metrics but the timings, by (id, target)."""
    merged = json.loads((out / "results.json").read_text())
    return {(r["id"], r["target"]): {k: v for k, v in r["metrics"].items() if k != "latency_ms"}
            for r in merged["results"]}


@pytest.mark.slow  # five runs of the pipeline (~70 s)
def test_killed_runs_leave_no_partial_artifact_and_the_next_run_completes(tmp_path):
    """...and completes it exactly: the same seed gives byte-identical .tflite files and the
    same metrics as a run that was never interrupted."""
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    for at, sig in _kills(0, 4):
        kill_and_check(config, out, at, sig)
    finish(config, out)
    clean = tmp_path / "clean"
    finish(config, clean)
    for path in sorted((clean / "tflite").glob("*.tflite")):
        assert path.read_bytes() == (out / "tflite" / path.name).read_bytes(), path.name
    assert _metrics(out) == _metrics(clean)
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (out, clean)]
    for manifest in manifests:  # what reproducing the run needs
        assert manifest["seed"] == 0 and manifest["versions"]["tensorflow-cpu"] == "2.21.0"
        assert manifest["datasets"]["digits"]["sha256"]["train"]
        # the converter options of a plain variant; the tool and the plain entry of a repair
        assert all(e["converter"]["tool"] and e["repair"]["of"] if e.get("repair") else
                   e["converter"]["supported_ops"] for e in manifest["entries"])
    assert [e["sha256"] for e in manifests[0]["entries"]] == [
        e["sha256"] for e in manifests[1]["entries"]]


WRITER = """
import sys, time
from pathlib import Path
from edgepipe.core.files import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"half of the new model")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_and_its_leftover_is_cleaned(tmp_path):
    """The mechanism itself, killed exactly mid-write: `dest` keeps its old bytes, the half file
    sits in .partial/ (no `*.tflite` glob sees it), and the next write there removes it."""
    dest = tmp_path / "m.tflite"
    dest.write_bytes(b"the old model")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(dest)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait()
    assert dest.read_bytes() == b"the old model"
    assert [p.name for p in tmp_path.glob("*.tflite")] == ["m.tflite"]
    leftovers = list((tmp_path / PARTIAL).iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".m.tflite")
    from edgepipe.core.files import write_json

    write_json(tmp_path / "other.json", {"ok": True})
    assert not (tmp_path / PARTIAL).exists()


@pytest.mark.slow
def test_many_kills_at_random_points(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    for at, sig in _kills(1, 12):
        kill_and_check(config, out, at, sig)
    finish(config, out)
