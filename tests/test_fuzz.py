"""Seeded fuzz of what reads untrusted `.tflite` files: `edgepipe check` and the parity runner.

The valid files are the tiny bundle's six converted variants (float32 and int8 of three models);
each case mutates one of them (tests/mutations.py: bit flips, truncation, a run spliced in from
another file, an aligned word set to a hurtful value, the head of one file joined to the tail of
another, a run of random bytes) with a seeded RNG, so every case can be made again from its
number. Expected: no traceback, no hang, no crash of the process the user started; every
problem is one line; the runner turns each mutated entry into pass/fail/unsupported/error.

`edgepipe check` is run in-process (`check_tflite`, all the command does with a .tflite before
printing) on every case, and as the command (a subprocess) on every 4th (default) or 5th (slow)
case: 48 + 12 by default, 1,000 + 200 in the slow test. Where LiteRT is installed, check also
loads each file in it, in a child process (a crash there must not reach check); whether check's
verdicts then match LiteRT's is tests/test_check_vs_litert.py.

The runner runs every case as one entry of one bundle, in one invocation of
`python -m edgepipe.device_tests.runner`, under a 4 GiB address-space limit: some mutations turn
a tensor dimension into ~10^8, and an unlimited interpreter then allocates 16 GB (a small board
would kill it; here the allocation fails instead). 48 cases by default; slow: 10,000 on each
kind of kernels and 60 on TFLite Micro.

The figures are printed (pytest -s) and the slow tests' kept as test properties (junit).
"""

import collections
import concurrent.futures
import importlib.util
import json
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs
from mutations import KINDS, add_entry, mutate
from tiny_bundle import by_id, read_manifest, write_manifest

from edgepipe.converters.op_audit import OP_SETS
from edgepipe.core.errors import EdgepipeError
from edgepipe.pipeline.check import check_tflite

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))
MEMORY_LIMIT = 4 << 30
ENTRY_TIMEOUT = 10
STATUSES = ("pass", "fail", "unsupported", "error")
HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


def _originals(bundle: Path) -> dict:
    """{entry id: .tflite bytes} of the bundle's converted entries."""
    return {e["id"]: (bundle / e["tflite"]).read_bytes()
            for e in read_manifest(bundle)["entries"] if e["status"] == "converted"}


def _cases(originals: dict, seed: str, count: int) -> list:
    """[(case number, kind, entry id it came from, mutated bytes)], the kinds in turn."""
    rng = random.Random(seed)  # str seeds are stable across runs and Python versions
    donors = list(originals.values())
    cases = []
    for case in range(count):
        kind = KINDS[case % len(KINDS)]
        like = rng.choice(sorted(originals))
        cases.append((case, kind, like, mutate(kind, originals[like], donors, rng)))
    return cases


def _case_file(folder: Path, case: tuple) -> Path:
    number, kind, like, data = case
    mode = like.split("-")[1]  # named as `edgepipe convert` names files, so the mode is audited
    path = folder / f"case{number:04d}-{kind}.{mode}.tflite"
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------- edgepipe check


def _check_in_process(path: Path, case: tuple) -> str:
    """"converted" / "failed" (the audit's verdict), "failed: LiteRT refuses" (check's load in
    LiteRT) or "refused" (one-line EdgepipeError)."""
    started = time.perf_counter()
    try:
        record = check_tflite(path, OP_SETS)
        json.dumps(record)  # what --json prints
        outcome = record["status"]
        if record["litert"] and record["litert"]["loads"] is False:
            outcome = "failed: LiteRT refuses"
    except EdgepipeError as exc:
        assert "\n" not in str(exc), (case[:3], str(exc))
        outcome = "refused"
    except Exception as exc:  # anything else is a bug: the command would say "internal error"
        pytest.fail(f"case {case[:3]}: {type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    assert seconds < 5, f"case {case[:3]} took {seconds:.1f} s"
    return outcome


def _check_cli(path: Path, case: tuple) -> int:
    try:
        done = subprocess.run([EDGEPIPE, "check", str(path)], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"case {case[:3]}: edgepipe check did not finish within 60 s")
    where = f"case {case[:3]} (exit {done.returncode}): {done.stderr[-2000:]}"
    assert done.returncode in (0, 1, 2), where
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, where
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), where
    else:  # exit 1 when the audit fails: "failed: FILE: why", one line
        assert len(lines) <= 1, where
    return done.returncode


def _fuzz_check(tiny_bundle, tmp_path, seed: str, count: int, cli_every: int) -> dict:
    if HAVE_LITERT:  # check's LiteRT child is a fork of this process: import it here once
        importlib.import_module("ai_edge_litert.interpreter")
    started = time.monotonic()
    cases = _cases(_originals(tiny_bundle[0]), seed, count)
    paths = [_case_file(tmp_path, case) for case in cases]
    pairs = list(zip(paths, cases, strict=True))
    outcomes = collections.Counter(_check_in_process(path, case) for path, case in pairs)
    in_process = time.monotonic() - started
    chosen = pairs[::cli_every]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        codes = collections.Counter(pool.map(lambda pc: _check_cli(*pc), chosen))
    return {"cases": count, "in_process": dict(outcomes), "cli_cases": len(chosen),
            "cli_exit_codes": dict(sorted(codes.items())),
            "seconds_in_process": round(in_process, 1),
            "seconds": round(time.monotonic() - started, 1)}


def test_check_on_mutated_files(tiny_bundle, tmp_path):
    figures = _fuzz_check(tiny_bundle, tmp_path, "check-fuzz-48", 48, cli_every=4)
    print(f"\nedgepipe check fuzz: {json.dumps(figures)}")
    assert figures["cli_cases"] == 12
    assert figures["in_process"].get("refused", 0) > 0  # the mutations do reach the reader


@pytest.mark.slow
def test_check_on_1000_mutated_files(tiny_bundle, tmp_path, record_property):
    figures = _fuzz_check(tiny_bundle, tmp_path, "check-fuzz-1000", 1000, cli_every=5)
    print(f"\nedgepipe check fuzz: {json.dumps(figures)}")
    record_property("figures", json.dumps(figures))
    assert figures["cli_cases"] == 200


# ---------------------------------------------------------------------------- parity runner


def _limit_memory():  # in the runner's process (and so its worker, a fork) before it starts
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _fuzz_runner(tiny_bundle, tmp_path, seed: str, count: int, *args) -> dict:
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], root)
    manifest = read_manifest(root)
    originals = _originals(root)
    kinds = {}
    for number, kind, like, data in _cases(originals, seed, count):
        entry_id = f"fuzz{number:04d}-{kind}"
        add_entry(root, manifest, entry_id, like, data)
        kinds[entry_id] = kind
    write_manifest(root, manifest)
    out = tmp_path / "results.json"
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "edgepipe.device_tests.runner", str(root),
                               "--out", str(out), "--entry-timeout", str(ENTRY_TIMEOUT),
                               *args],
                              capture_output=True, text=True, preexec_fn=_limit_memory,
                              timeout=120 + count * 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runner did not finish {count} mutated entries within {120 + count * 3}"
                    f" s although each has a {ENTRY_TIMEOUT} s limit")
    seconds = time.monotonic() - started
    tail = done.stderr[-3000:]
    assert done.returncode in (0, 1), tail
    assert "Traceback" not in done.stderr, tail
    records = by_id(json.loads(out.read_text()))
    assert set(records) == {e["id"] for e in manifest["entries"]}
    statuses, crashes, timeouts, by_kind = (collections.Counter(), collections.Counter(), [],
                                            collections.defaultdict(collections.Counter))
    for entry_id, kind in kinds.items():
        record = records[entry_id]
        assert record["status"] in STATUSES, record
        assert "\n" not in record["reason"], record
        assert record["status"] == "pass" or record["reason"], record
        statuses[record["status"]] += 1
        by_kind[kind][record["status"]] += 1
        if "killed by signal" in record["reason"] or "exited with code" in record["reason"]:
            crashes[record["reason"].split(" while")[0].split(": ", 1)[-1]] += 1
        if record["reason"].startswith("did not finish within"):
            timeouts.append(entry_id)
        probe = re.search(r"arena \(exit -(\d+)\)", record["reason"])
        if probe:  # tflm: a probe process (device_tests/tflm.py) died of that signal
            crashes[f"tflm probe killed by signal {probe.group(1)}"] += 1
    return {"cases": count, "runner_args": list(args), "statuses": dict(statuses),
            "crashes_contained": dict(crashes), "timeouts": timeouts,
            "by_kind": {k: dict(v) for k, v in by_kind.items()},
            "runner_exit": done.returncode, "seconds": round(seconds, 1),
            "entry_timeout": ENTRY_TIMEOUT, "memory_limit_gib": MEMORY_LIMIT >> 30}


def test_runner_on_mutated_entries(tiny_bundle, tmp_path):
    figures = _fuzz_runner(tiny_bundle, tmp_path, "runner-fuzz-48", 48)
    print(f"\nrunner fuzz: {json.dumps(figures)}")
    assert sum(figures["statuses"].values()) == 48
    assert figures["statuses"].get("error", 0) > 0  # the mutations do reach the interpreter


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["default", "reference"])
def test_runner_on_10000_mutated_entries(tiny_bundle, tmp_path, record_property, kernels):
    # ai-edge-litert's verifier refuses most mutated files at once (~1 ms an entry), so many
    # cases are cheap; about one in 3,000 crashes its default kernels.
    figures = _fuzz_runner(tiny_bundle, tmp_path, "runner-fuzz-10000", 10000, "--kernels",
                           kernels)
    print(f"\nrunner fuzz: {json.dumps(figures)}")
    record_property("figures", json.dumps(figures))
    assert sum(figures["statuses"].values()) == 10000


@pytest.mark.slow
def test_tflm_runner_on_60_mutated_entries(tiny_bundle, tmp_path, record_property):
    """TFLite Micro runs each model in probe processes first (~1.3 s a case): fewer cases."""
    needs(HAVE_TFLM, "tflite-micro is not installed (pip install 'edgepipe[micro]')")
    figures = _fuzz_runner(tiny_bundle, tmp_path, "tflm-fuzz-60", 60, "--runtime", "tflite_micro")
    print(f"\nrunner fuzz: {json.dumps(figures)}")
    record_property("figures", json.dumps(figures))
    assert sum(figures["statuses"].values()) == 60
