"""The `tflm` target: TFLite Micro's reference kernels on the host, its arena search, its refusals,
the comparison with host-ref, and the budget gates, on real bundles."""

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs
from mutations import recursive_while, while_forever
from tiny_bundle import by_id

from edgepipe.device_tests.runner import run_bundle
from edgepipe.device_tests.tflm import PROBE, refusal, search_arena
from edgepipe.pipeline.budgets import apply_budgets
from edgepipe.pipeline.results import output_steps

HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
NO_TFLM = "tflite-micro is not installed (pip install 'edgepipe[micro]'; x86-64 Linux only)"
EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))


@pytest.fixture
def tflm():
    needs(HAVE_TFLM, NO_TFLM)


@pytest.fixture(scope="module")
def tflm_run(tiny_bundle, tmp_path_factory):
    """The tiny bundle run on tflm, with outputs saved."""
    if not HAVE_TFLM:
        return None
    out = tmp_path_factory.mktemp("tflm")
    return run_bundle(tiny_bundle[0], runtime="tflite_micro", outputs_dir=out), out


def test_every_converted_entry_passes_with_its_arena(tflm, tflm_run):
    document, _ = tflm_run
    assert document["target"] == "tflm"
    assert document["runtime"]["name"] == "tflite_micro"
    records = by_id(document)
    assert records["mlp-int16x8"]["status"] == "unsupported"
    for rid, record in records.items():
        if rid == "mlp-int16x8":
            continue
        assert record["status"] == "pass", (rid, record["reason"])
        assert record["invoke"] == "per-sample"  # TFLM takes batch 1 only
        assert record["metrics"]["arena_bytes"] > 0
        assert record["metrics"]["latency_ms"] > 0


@pytest.mark.parametrize("entry", ["mlp-int8", "clf-float32"])
def test_the_arena_found_is_the_smallest_that_runs(tflm, tflm_run, tiny_bundle, entry):
    """The arena reported runs the model; 16 bytes less (TFLM's alignment) does not."""
    arena = by_id(tflm_run[0])[entry]["metrics"]["arena_bytes"]
    model = str(tiny_bundle[0] / "tflite" / f"{entry.replace('-', '.')}.tflite")
    probe = [sys.executable, PROBE, model]
    assert subprocess.run(probe + [str(arena)], capture_output=True).returncode == 0
    assert subprocess.run(probe + [str(arena - 16)], capture_output=True).returncode != 0


def test_int8_outputs_are_within_one_step_of_the_reference_kernels(tflm, tflm_run, tiny_bundle,
                                                                   tmp_path):
    """TFLM and TFLite's BUILTIN_REF kernels: the same arithmetic, at most one rounding apart."""
    reference = run_bundle(tiny_bundle[0], kernels="reference", outputs_dir=tmp_path)
    for rid, record in by_id(tflm_run[0]).items():
        if record["status"] != "pass":
            continue
        mine = np.load(tflm_run[1] / record["outputs"])
        theirs = np.load(tmp_path / by_id(reference)[rid]["outputs"])
        step = (record["tolerance"] or {}).get("output_step")
        if step:
            assert output_steps(mine, theirs, step) <= 1, rid
        else:
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_a_model_tflm_has_no_kernel_for_is_unsupported_naming_the_op(tflm, tiny_bundle,
                                                                     tmp_path):
    """GELU: TFLite converts it, TFLM has no kernel. The entry is unsupported, not an error."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(
        keras.layers.Dense(8, activation="gelu")(inputs)))
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], root)
    (root / "tflite" / "mlp.float32.tflite").write_bytes(content)
    manifest = json.loads((root / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["id"] == "mlp-float32")
    entry.update(sha256=hashlib.sha256(content).hexdigest(), bytes=len(content))
    (root / "manifest.json").write_text(json.dumps(manifest))
    record = by_id(run_bundle(root, runtime="tflite_micro", only=["mlp-float32"]))["mlp-float32"]
    assert record["status"] == "unsupported"
    assert record["reason"] == "TFLite Micro has no kernel for GELU"


def test_refusals_read_from_tflm_stderr():
    """The texts are what tflite-micro 0.dev20261023182759 printed for our zoo's variants."""
    hybrid = ("tensorflow/lite/micro/kernels/conv_common.cc Hybrid models are not supported on "
              "TFLite Micro.\nNode CONV_2D (number 6) failed to prepare with status 1\n")
    assert refusal(hybrid) == ("TFLite Micro's CONV_2D kernel refuses this model (Hybrid models "
                               "are not supported on TFLite Micro.)")
    exp = ("tensorflow/lite/micro/kernels/exp.cc:41 input->type != kTfLiteFloat32 (INT8 != "
           "FLOAT32)\nNode EXP (number 1) failed to prepare with status 1\n")
    assert refusal(exp) == ("TFLite Micro's EXP kernel refuses this model (input->type != "
                            "kTfLiteFloat32 (INT8 != FLOAT32))")
    assert refusal("Didn't find op for builtin opcode 'GELU'\n") == (
        "TFLite Micro has no kernel for GELU")
    assert refusal("Segmentation fault") is None


def test_budgets_fail_a_variant_with_the_figure_and_the_budget():
    manifest = {"entries": [{"id": "a-int8", "bytes": 5000}, {"id": "b-int8", "bytes": 900}]}
    document = {"results": [
        {"id": "a-int8", "status": "pass", "reason": "", "checks": [],
         "metrics": {"arena_bytes": 2048, "latency_ms": 0.5}},
        {"id": "b-int8", "status": "pass", "reason": "", "checks": [],
         "metrics": {"arena_bytes": 1024, "latency_ms": 0.1}},
        {"id": "c-int16x8", "status": "unsupported", "reason": "no kernel", "metrics": None}]}
    over = apply_budgets(document, manifest, {"max_model_bytes": 1000, "max_arena_bytes": 1500,
                                              "max_latency_ms": 1.0})
    a, b, c = document["results"]
    assert over == 1
    assert a["status"] == "fail"
    assert a["reason"] == ("over budget: model_bytes 5,000 > budget 1,000, "
                           "arena_bytes 2,048 > budget 1,500")
    assert [check["ok"] for check in a["checks"]] == [False, False, True]
    assert b["status"] == "pass" and all(check["ok"] for check in b["checks"])
    assert c["status"] == "unsupported" and "checks" not in c


def test_parity_on_tflm_and_host_ref_with_budgets(tflm, tiny_bundle, tmp_path):
    """`edgepipe parity` end to end: both targets in the report, tflm compared with host-ref,
    and a budget the arena cannot meet fails the variants with the figures."""
    root = tmp_path / "run"
    shutil.copytree(tiny_bundle[0], root)
    config = tmp_path / "run.toml"
    config.write_text('[budgets.tflm]\nmax_arena_bytes = 64\n')
    done = subprocess.run([EDGEPIPE, "parity", str(root), "--target", "host-ref,tflm",
                           "--config", str(config)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    merged = json.loads((root / "results.json").read_text())
    assert list(merged["targets"]) == ["host-ref", "tflm"]
    tflm_records = {r["id"]: r for r in merged["results"] if r["target"] == "tflm"}
    int8 = tflm_records["clf-int8"]
    assert int8["status"] == "fail"
    assert f"arena_bytes {int8['metrics']['arena_bytes']:,} > budget 64" in int8["reason"]
    assert int8["metrics"]["vs_host-ref"]["steps"] <= 1.0
    assert any(c["name"] == "vs host-ref (steps)" and c["ok"] for c in int8["checks"])
    host_ref = [r for r in merged["results"] if r["target"] == "host-ref"]
    assert all(r["status"] in ("pass", "unsupported") for r in host_ref)
    report = (root / "report.html").read_text()
    assert "<th>tflm</th>" in report and "<th>host-ref</th>" in report


def _bisection_before_issue_17(runs, guess: int, generous: int) -> int:
    """The arena search as it was before issue 17 (one new Python per probe), verbatim: the
    arenas must stay what it found."""
    hi, step = guess, 16 * 16
    while not runs(hi):
        hi = min(generous, hi + step)
        step *= 2
    lo = max(0, guess - 16 * 64)
    if lo and runs(lo):
        lo = 0
    while hi - lo > 16:
        mid = (lo + hi) // 2
        if runs(mid):
            hi = mid
        else:
            lo = mid
    return hi


def test_the_search_finds_what_the_plain_bisection_found_for_every_minimum():
    """Every true minimum from 2 KB below TFLM's allocation total to 3 KB above it: the same
    arena as before, and no more probes but one (an exact total, the zoo's most common case,
    takes 2 where the plain bisection took 8)."""
    guess, generous = 2400, 8 << 20
    for minimum in range(guess - 2048, guess + 3072):
        asked: list = []
        before: list = []

        def runs(size, minimum=minimum, into=asked):
            into.append(size)
            return size >= minimum

        expected = _bisection_before_issue_17(
            lambda size, minimum=minimum, into=before: runs(size, minimum, into),
            guess, generous)
        assert search_arena(runs, guess, generous) == expected, minimum
        # One more (a byte below the total) only when the minimum is below the total.
        assert len(asked) == len(set(asked)) <= len(before) + (minimum < guess), minimum
        if minimum == guess:
            assert (len(asked), len(before)) == (2, 8)


@pytest.fixture(scope="module")
def micro():
    """One TFLite Micro runtime (its probe server), shared by the tests below."""
    if not HAVE_TFLM:
        return None
    from edgepipe.device_tests.interpreters import find_runtime

    return find_runtime("tflite_micro")


def _cli_probe(model: Path, arena: int) -> bool:
    """A probe the way it was run before issue 17: a new Python, the model file on its
    command line."""
    return subprocess.run([sys.executable, PROBE, str(model), str(arena)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("entry", ["mlp.int8", "clf.float32"])
def test_the_arena_is_the_one_new_processes_per_probe_found(tflm, micro, tiny_bundle, entry):
    model = tiny_bundle[0] / "tflite" / f"{entry}.tflite"
    data = model.read_bytes()
    total = subprocess.run([sys.executable, PROBE, str(model), str(8 << 20), "--allocations"],
                           capture_output=True, text=True)
    guess = int(re.search(r"Arena allocation total (\d+) bytes", total.stderr).group(1))
    expected = _bisection_before_issue_17(lambda size: _cli_probe(model, size), guess, 8 << 20)
    arena, probes, recorded = micro.smallest_arena(data + b"")  # other bytes, same bytes
    assert arena == expected
    assert 0 < probes <= 12
    assert recorded == guess  # beside it, what TFLM's recording allocator reported


def test_an_arena_is_searched_once_per_model_bytes(tflm, tiny_bundle):
    from edgepipe.device_tests.interpreters import find_runtime

    runtime = find_runtime("tflite_micro")  # a new one: nothing searched yet
    folder = tiny_bundle[0] / "tflite"
    first = runtime.load((folder / "mlp.int8.tflite").read_bytes()).facts
    again = runtime.load((folder / "mlp.int8.tflite").read_bytes()).facts
    other = runtime.load((folder / "clf.int8.tflite").read_bytes()).facts
    assert first["arena_probes"] > 0 and other["arena_probes"] > 0
    assert again == {"arena_bytes": first["arena_bytes"], "arena_probes": 0,
                     "arena_recorded_bytes": first["arena_recorded_bytes"]}
    assert other["arena_bytes"] != first["arena_bytes"]


def test_a_probe_killed_by_a_signal_is_reported_as_a_new_process_reported_it(tflm, micro,
                                                                             tmp_path):
    """A WHILE whose body recurses into itself overflows the C stack while TFLM prepares it:
    SIGSEGV in the forked probe, the same words as when each probe was a new Python, and the
    next model still runs."""
    from edgepipe.device_tests.interpreters import ModelError
    from edgepipe.device_tests.tflm import _probe_failure

    data = recursive_while(4)
    model = tmp_path / "recursive.tflite"
    model.write_bytes(data)
    generous = 8 << 20
    alone = subprocess.run([sys.executable, PROBE, str(model), str(generous), "--allocations"],
                           capture_output=True, text=True)
    assert alone.returncode == -11
    with pytest.raises(ModelError) as raised:
        micro.load(data)
    assert str(raised.value) == (f"{micro.label} failed to run the model with a "
                                 f"{generous}-byte arena (exit -11): {_probe_failure(alone)}")
    assert "killed by signal 11 (SIGSEGV) while loading the model" in str(raised.value)
    assert micro.load(_dense_model()).facts["arena_probes"] > 0


def _dense_model() -> bytes:
    import keras
    import tensorflow as tf

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8, "relu")(inputs)))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_a_probe_that_hangs_is_killed_at_the_time_limit(tflm, tiny_bundle):
    """A WHILE whose condition is always true loops for ever in invoke(): the probe is killed
    at the time limit, its process reaped, and the probe server goes on with the next model."""
    from edgepipe.device_tests.interpreters import ModelError, find_runtime
    from edgepipe.device_tests.isolation import _descendants

    runtime = find_runtime("tflite_micro")
    runtime.probe_timeout = 1.5
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"did not finish loading and invoking the model within "
                                         r"1\.5 s \(arena \d+ bytes\)"):
        runtime.load(while_forever(4))
    assert 1.5 <= time.monotonic() - started < 10
    assert _descendants(runtime._server._process.pid) == []  # the probe is gone, reaped
    runtime.probe_timeout = 60
    model = (tiny_bundle[0] / "tflite" / "mlp.int8.tflite").read_bytes()
    assert runtime.load(model).facts["arena_probes"] > 0


def test_a_probe_server_that_died_is_replaced(tflm, tiny_bundle):
    from edgepipe.device_tests.interpreters import find_runtime

    runtime = find_runtime("tflite_micro")
    folder = tiny_bundle[0] / "tflite"
    arena = runtime.load((folder / "mlp.int8.tflite").read_bytes()).facts["arena_bytes"]
    server = runtime._server._process
    server.kill()
    server.wait()
    facts = runtime.load((folder / "clf.int8.tflite").read_bytes()).facts
    assert facts["arena_probes"] > 0 and facts["arena_bytes"] != arena
    assert runtime._server._process.pid != server.pid
