"""bench/bench.py (`make bench`): its figures, table, machine record and process measurement,
and the --quick bench end to end. Speed is measured in the bench, never asserted here: these
tests check what the bench computes and writes, not how fast anything was."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_bundle import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    """bench/ is not installed: load it by path, so that plain `pytest` finds it too."""
    spec = importlib.util.spec_from_file_location("edgepipe_bench", REPO / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_figure_keeps_value_baseline_ratio_and_target():
    low = bench.figure("s", "cmd", 0.5, 5.0, "import tensorflow", "s", at_most=0.15)
    assert (low["value"], low["baseline"], low["ratio"]) == (0.5, 5.0, 0.1)
    assert (low["target"], low["meets"]) == ("<= 0.15", True)
    high = bench.figure("s", "loop", 2.0, 1.0, "1 batched invoke", "s", at_least=10)
    assert (high["ratio"], high["target"], high["meets"]) == (2.0, ">= 10", False)
    plain = bench.figure("s", "size", 3, 4, "float32", "bytes", extra_key=1)
    assert (plain["target"], plain["meets"], plain["extra_key"]) == (None, None, 1)
    zero = bench.figure("s", "x", 1.0, 0.0, "nothing", "s", at_most=1)
    assert zero["ratio"] is None and zero["meets"] is False


def test_median_row_is_the_median_of_the_ratios():
    rows = [bench.figure("s", n, v, b, "float32", "ms")
            for n, v, b in (("a", 1.0, 4.0), ("b", 3.0, 1.0), ("c", 2.0, 4.0))]
    median = bench.median_row("s", "median", rows)
    assert median["ratio"] == 0.5  # of 0.25, 3.0, 0.5; not median(value) / median(baseline)
    assert (median["value"], median["baseline"], median["unit"]) == (2.0, 4.0, "ms")


def test_table_has_one_aligned_row_per_figure():
    figures = [bench.figure("cli start", "edgepipe --help", 0.3, 5.0, "import tensorflow", "s",
                            at_most=0.15),
               bench.figure("runs", "peak RSS", 900 * 1024, 600 * 1024, "import tensorflow",
                            "KB", note="largest: main process"),
               bench.figure("int8 vs float32", "size", 2048, 8192, "float32", "bytes",
                            at_least=1)]
    lines = bench.table(figures).splitlines()
    assert len(lines) == 1 + len(figures)
    assert lines[0].split()[:3] == ["section", "figure", "value"]
    column = lines[0].index("ratio")
    assert [line[column:].split()[0] for line in lines[1:]] == ["0.06", "1.5", "0.25"]
    assert "<= 0.15 ok" in lines[1] and "900 MiB" in lines[2] and "largest: main" in lines[2]
    assert ">= 1 MISSED" in lines[3] and "2.0 KiB" in lines[3]


def test_machine_and_git():
    info = bench.machine()
    assert info["cores"] >= 1 and info["python"].count(".") == 2
    assert info["packages"]["numpy"] == np.__version__
    assert info["cpu"] and info["os"] and info["ram_gib"] > 0
    git = bench.git_commit()
    if (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]) and isinstance(git["dirty"], bool)


def test_measure_exit_codes_and_output(tmp_path):
    log = tmp_path / "log"
    done = bench.measure([sys.executable, "-c", "print('fine')"], log)
    assert done["returncode"] == 0 and done["seconds"] > 0 and done["peak_rss_kb"] > 0
    assert log.read_text() == "fine\n"
    assert bench.measure([sys.executable, "-c", "raise SystemExit(1)"], log,
                         ok=(0, 1))["returncode"] == 1
    with pytest.raises(bench.BenchError, match=r"(?s)exited 3:.*boom"):
        bench.measure([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log)


# A child that touches 300 MB (b"x" * n writes every page; bytearray(n) would not) while its
# parent stays small; or the parent itself touching them.
_CHILD = """import os, time
pid = os.fork()
if pid == 0:
    block = b"x" * (300 << 20); time.sleep(0.5); os._exit(0)
os.waitpid(pid, 0)
"""
_MAIN = 'import time; block = b"x" * (300 << 20); time.sleep(0.5)'


@pytest.mark.parametrize(("code", "largest"), [(_CHILD, "a worker (child) process"),
                                               (_MAIN, "main process")], ids=["child", "main"])
def test_measure_peak_rss_of_the_tree_and_which_process(tmp_path, code, largest):
    done = bench.measure([sys.executable, "-c", code], tmp_path / "log", poll=0.05)
    assert done["peak_rss_kb"] >= 300 << 10  # ru_maxrss: KB, the largest process of the tree
    assert done["largest_process"] == largest


def test_int8_vs_float32_from_manifest_and_results(tiny_bundle, tmp_path):
    root, _, _ = tiny_bundle
    manifest = read_manifest(root)
    write_manifest(tmp_path, manifest)
    latency = {"mlp-float32": 0.02, "mlp-int8": 0.05, "clf-float32": 0.01, "clf-int8": 0.01}
    results = [{"id": i, "model": i.split("-")[0], "mode": i.split("-")[1], "target": target,
                "status": "pass", "metrics": {"latency_ms": ms}}
               for i, ms in latency.items() for target in ("host", "host-ref")]
    (tmp_path / "results.json").write_text(json.dumps({"results": results}))
    _, figures = bench.int8_vs_float32(tmp_path)
    rows = {f["name"]: f for f in figures}
    assert rows["mlp host latency"]["ratio"] == pytest.approx(2.5)
    assert rows["median host latency, mlp"]["ratio"] == pytest.approx(1.75)  # one family
    size = {e["id"]: e["bytes"] for e in manifest["entries"] if e.get("bytes")}
    assert rows["clf size"]["value"] == size["clf-int8"]
    assert rows["clf size"]["baseline"] == size["clf-float32"]
    assert "mlp_fixed host latency" not in rows and "mlp_fixed size" in rows


# What `edgepipe run --executor dask://...` printed (pipeline/run.py, pipeline/parity.py,
# pipeline/cluster.py), once as a wide console writes it and once wrapped at 80 columns.
CLUSTER_RUN = """building 2 models on dask://127.0.0.1:40037
mlp_swish: trained 3 epochs (best 3), converted 2 modes, bundled, 6.0 s
cnn_hard_swish: trained 12 epochs (best 7, early stop), converted 5 modes (int16x8 failed), bundled, 31.5 s
mlp_step: repaired int8 (1 of 1 variant(s))
parity on host: 4 entries in 2 runner(s)
parity on host-ref: 4 entries in 2 runner(s)
repairing 1 variant(s) of 1 model(s)
parity on host: 1 entries in 1 runner(s), 4 reused
cluster on dask://127.0.0.1:40037: 2 model job(s), 5 parity chunk(s); sent 3.07 MB (84 distinct files, each once), received 1.97 MB of model job outputs
"""  # noqa: E501 (console lines as printed)


@pytest.mark.parametrize("width", [None, 80], ids=["wide", "wrapped"])
def test_the_cluster_runs_console_lines_read_back(width):
    import textwrap

    text = CLUSTER_RUN if width is None else "\n".join(
        textwrap.fill(line, width) for line in CLUSTER_RUN.splitlines())
    assert bench.cluster_summary(text) == {
        "executor": "dask://127.0.0.1:40037", "model_jobs": 2, "chunks": 5,
        "bytes_sent": 3_070_000, "files_sent": 84, "bytes_received": 1_970_000}
    assert bench.job_seconds(text) == {"mlp_swish": 6.0, "cnn_hard_swish": 31.5}
    assert bench.parity_chunks(text) == {"host": [5, 3], "host-ref": [4, 2]}
    assert bench.cluster_summary("building 2 models on 2 worker(s)\n") is None


@pytest.mark.slow
def test_quick_bench_end_to_end(tmp_path):
    """`python -m bench.bench --quick`: three small `edgepipe run`s (needs run --jobs and
    --force), then every other section; results.json holds every figure with its baseline."""
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--repeats", "1",
                           "--rounds", "2", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert set(document["sections"]) == {"runs", "cli_start", "target_parity", "user_model",
                                         "int8_vs_float32", "cluster", "pool"}
    assert document["sections"]["user_model"] == {"skipped": "--quick"}
    assert "skipped" not in document["sections"]["runs"]
    assert document["machine"]["cores"] >= 1 and document["date"]
    # Without sshd, Dask or the emulator those sections and targets say why; the bench goes on.
    ran = {s for s in ("cluster", "pool") if "skipped" not in document["sections"][s]}
    sections = {f["section"] for f in document["figures"]}
    assert sections == {"runs", "cli start", "target parity", "int8 vs float32"} | ran
    for f in document["figures"]:
        assert f["baseline"] > 0 and f["baseline_name"], f
        assert math.isfinite(f["ratio"]) and f["ratio"] > 0, f
    jobs = document["sections"]["runs"]["default_jobs"]
    names = [f["name"] for f in document["figures"]]
    assert {"cold run, --jobs 1", f"cold run, --jobs {jobs} (default)", "warm run",
            f"speedup, --jobs {jobs} (default)", "cold run peak RSS, --jobs 1",
            "hand-written script peak RSS", "edgepipe --help", "edgepipe report RUN",
            "cnn_swish size", "host", "host-ref"} <= set(names)
    rows = {f["name"]: f for f in document["figures"]}
    # The hand-written script is the baseline of both run figures, in the same bench run.
    script = document["sections"]["runs"]["handwritten"]["seconds"]
    assert rows["cold run, --jobs 1"]["baseline"] == script
    assert rows[f"cold run, --jobs {jobs} (default)"]["baseline"] == script
    # Two rounds of the three cold runs: each figure takes each command's fastest round, and
    # the rounds built the same files with the same statuses.
    by_round = document["sections"]["runs"]["seconds_by_round"]
    assert {name: len(times) for name, times in by_round.items()} == {
        "handwritten": 2, "cold": 2, "cold_default_jobs": 2}
    assert script == min(by_round["handwritten"])
    assert rows["cold run, --jobs 1"]["value"] == min(by_round["cold"])
    assert rows[f"cold run, --jobs {jobs} (default)"]["value"] == min(by_round["cold_default_jobs"])
    assert document["sections"]["runs"]["rounds_identical"]
    parity = document["sections"]["target_parity"]
    for target in ("host", "host-ref"):  # 2 models x 2 modes, each invoked
        assert parity[target]["entries"] == 4 and parity[target]["invoke_seconds"] > 0
        assert parity[target]["seconds"] > parity[target]["invoke_seconds"]
    assert document["sections"]["runs"]["default_jobs_identical"] == {"tflite": True,
                                                                      "statuses": True}
    assert document["sections"]["runs"]["warm_statuses_identical"]
    if "cluster" in ran:
        cluster = document["sections"]["cluster"]
        # Recorded, not asserted: tests/test_cluster.py asserts that they are identical.
        assert {k: type(v) for k, v in cluster["identical"].items()} == {"tflite": bool,
                                                                         "statuses": bool}
        assert cluster["moved"]["model_jobs"] == 2 and cluster["moved"]["bytes_received"] > 0
        assert set(cluster["job_seconds"]["cluster"]) == {"mlp_swish", "cnn_swish"}
    if "pool" in ran:
        assert document["sections"]["pool"]["statuses_identical"]
        assert len(document["sections"]["pool"]["boards_used"]["three"]) > 1
    lines = done.stdout.splitlines()
    shown = [f for f in document["figures"] if not f.get("detail")]
    assert lines[0].startswith("section") and len(lines) == 1 + len(shown)
    assert all(f["name"].startswith("median") for f in document["figures"]
               if f["section"] == "int8 vs float32" and f in shown)
