"""The qemu-aarch64 target: the parity runner on an emulated Arm board
(pipeline/targets/emulator.py).

The tests that run the emulator need the sysroot built by `edgepipe emulator setup`; without it
they skip with the reason (and fail under EDGEPIPE_REQUIRE_TARGETS=1).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import needs
from tiny_bundle import by_id, entry_of, read_manifest, write_manifest

from edgepipe.core.errors import EdgepipeError
from edgepipe.device_tests.runner import EntryError, UsageError, blas_apart, run_bundle
from edgepipe.pipeline.targets import emulator

pytestmark = pytest.mark.emulator


def needs_board() -> None:
    why = emulator.ready()
    needs(why is None, f"qemu-aarch64: {why}")


@pytest.fixture(scope="module")
def emulated_run(request, tmp_path_factory):
    """The tiny bundle run once in the emulator and once on the host's reference kernels."""
    needs_board()  # before building the bundle: a skip should not train models first
    from edgepipe.device_tests.runner import run_bundle

    bundle = request.getfixturevalue("tiny_bundle")[0]
    out = tmp_path_factory.mktemp("qemu") / "results" / "qemu-aarch64.json"
    started = time.monotonic()
    done = emulator.run_runner(bundle, out)
    seconds = time.monotonic() - started
    host_dir = tmp_path_factory.mktemp("host-ref")
    host = run_bundle(bundle, kernels="reference", outputs_dir=host_dir)
    return done, out, seconds, host, host_dir


def test_runs_the_tiny_bundle_on_aarch64(emulated_run):
    done, out, seconds, _, _ = emulated_run
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["target"] == "qemu-aarch64"
    assert document["platform"]["machine"] == "aarch64"
    assert document["platform"]["python"].startswith("3.11.")
    assert document["runtime"] == {"name": "ai_edge_litert", "version": "1.2.0",
                                   "kernels": "default"}
    records = by_id(document)
    assert records["mlp-int16x8"]["status"] == "unsupported"
    converted = [r for r in records.values() if r["id"] != "mlp-int16x8"]
    assert len(converted) == 6
    for record in converted:
        assert record["status"] == "pass", (record["id"], record["reason"])
        assert (out.parent / record["outputs"]).is_file(), record["id"]
    print(f"qemu-aarch64 ran the tiny bundle in {seconds:.1f} s "
          f"(runner's own time {document['seconds']:.1f} s)")


def test_emulated_outputs_agree_with_host_reference_kernels(emulated_run):
    _, out, _, host, host_dir = emulated_run
    emulated = by_id(json.loads(out.read_text()))
    for entry_id, record in by_id(host).items():
        if record["status"] != "pass":
            continue
        arm = np.load(out.parent / emulated[entry_id]["outputs"])
        x86 = np.load(host_dir / record["outputs"])
        assert arm.shape == x86.shape
        diff = float(np.max(np.abs(arm.astype(np.float64) - x86)))
        if record["mode"] == "int8":
            step = record["tolerance"]["output_step"]
            print(f"{entry_id}: max |arm - x86| = {diff / step:g} output steps")
            assert diff <= step * 1.001, (entry_id, diff, step)
        else:
            scale = float(np.max(np.abs(x86)))
            print(f"{entry_id}: max |arm - x86| / max|x86| = {diff / scale:.2e}")
            assert diff <= 1e-5 * scale, (entry_id, diff, scale)


def test_setup_on_a_ready_cache_returns_at_once():
    needs_board()
    stamp = emulator.default_cache() / emulator.STAMP
    before = stamp.stat().st_mtime_ns
    said = []
    started = time.monotonic()
    assert emulator.setup(say=said.append) == emulator.default_cache()
    assert time.monotonic() - started < 2
    assert stamp.stat().st_mtime_ns == before
    assert len(said) == 1 and "ready" in said[0]


def test_a_bad_bundle_exits_2_with_one_line(request, tmp_path):
    needs_board()
    bundle = tmp_path / "bundle"
    shutil.copytree(request.getfixturevalue("tiny_bundle")[0], bundle)
    (bundle / "manifest.json").write_text("{not json")
    done = emulator.run_runner(bundle, tmp_path / "out" / "qemu-aarch64.json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "manifest.json" in lines[0]
    assert not (tmp_path / "out" / "qemu-aarch64.json").exists()


def test_a_missing_sysroot_says_to_run_setup(monkeypatch, tmp_path):
    # qemu made present whatever this machine has: the test is about the sysroot
    monkeypatch.setattr(emulator, "_which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(EdgepipeError, match=r"edgepipe emulator setup.*make emulator") as raised:
        emulator.run_runner(tmp_path, tmp_path / "out.json", cache_dir=tmp_path / "none")
    assert "\n" not in str(raised.value)
    assert emulator.ready(tmp_path / "none") is not None


def test_a_time_limit_names_itself(tmp_path):
    needs_board()  # the limit strikes while the emulated Python is still starting
    with pytest.raises(EdgepipeError, match="did not finish within 0.5 s"):
        emulator.run_runner(tmp_path, tmp_path / "out.json", timeout=0.5)


def test_an_interrupted_setup_is_redone_cleanly(monkeypatch, tmp_path):
    """The build happens beside the cache and is renamed into place only when complete."""
    cache = tmp_path / "qemu-aarch64"
    monkeypatch.setattr(emulator, "_check_tools", lambda: None)
    monkeypatch.setattr(emulator, "_which", lambda tool: f"/usr/bin/{tool}")

    def interrupted(work, say):
        (work / "sysroot").mkdir()
        raise KeyboardInterrupt

    def complete(work, say):
        (work / "sysroot" / "usr" / "bin").mkdir(parents=True)
        (work / "sysroot" / emulator.GUEST_PYTHON).write_text("")
        (work / emulator.STAMP).write_text(json.dumps({"suite": emulator.SUITE,
                                                       "wheels": emulator.WHEELS}))

    monkeypatch.setattr(emulator, "_build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        emulator.setup(cache, say=lambda text: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".qemu-aarch64.lock"]
    (tmp_path / ".qemu-aarch64.partial-killed").mkdir()  # a setup killed with no clean-up
    monkeypatch.setattr(emulator, "_build", complete)
    said = []
    assert emulator.setup(cache, say=said.append) == cache
    assert emulator.ready(cache) is None
    assert not list(tmp_path.glob(".qemu-aarch64.partial-*"))
    assert any("interrupted" in line for line in said)


def test_a_failing_tool_gives_its_error_line():
    script = ("echo 'I: Retrieving InRelease'; echo 'E: Failed getting release file "
              "http://deb.debian.org/debian/dists/bookworm/InRelease' >&2; "
              "echo 'I: cleaning up'; exit 1")
    with pytest.raises(EdgepipeError, match=r"^debootstrap failed \(exit 1\): E: Failed getting "
                                            r"release file http\S+$"):
        emulator._run(["sh", "-c", script], "debootstrap", timeout=60)


def test_an_interrupted_setup_is_not_ready(monkeypatch, tmp_path):
    monkeypatch.setattr(emulator, "_which", lambda tool: f"/usr/bin/{tool}")
    # Everything but the stamp, as a setup killed before its last step leaves it.
    cache = tmp_path / "qemu-aarch64"
    (cache / "sysroot" / "usr" / "bin").mkdir(parents=True)
    (cache / "sysroot" / emulator.GUEST_PYTHON).write_text("")
    assert "not set up" in (emulator.ready(cache) or "")
    (cache / emulator.STAMP).write_text(json.dumps({"suite": emulator.SUITE, "wheels": {}}))
    assert "other versions" in (emulator.ready(cache) or "")


def test_missing_host_tools_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(emulator, "_which", lambda tool: None)
    with pytest.raises(EdgepipeError, match="apt-get install qemu-user-static debootstrap"):
        emulator.setup(tmp_path / "cache", say=lambda text: None)
    assert not (tmp_path / "cache").exists()


def test_the_guest_does_not_see_the_host_python(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONHOME", "/host")
    monkeypatch.setenv("VIRTUAL_ENV", "/host/.venv")
    monkeypatch.setenv("PYTHONPATH", "/host/lib")
    env = emulator.guest_env(tmp_path / "site", tmp_path / "staging")
    assert "PYTHONHOME" not in env and "VIRTUAL_ENV" not in env
    assert env["PYTHONPATH"].split(":") == [str(tmp_path / "staging"), str(tmp_path / "site")]
    assert env["PYTHONNOUSERSITE"] == "1"


def test_a_variant_times_alike_wherever_it_runs_on_the_board(request, tmp_path):
    """The same variant six times in one bundle: each copy's latency on the emulated board is
    the first one's. numpy's BLAS (its SVE kernels, run by each entry's error metrics) once made
    every interpreter created after it 5x slower under qemu-user: 9 us became 47 us here, and
    the zoo's digits CNNs took 12 s instead of 0.8 s for their test split. The median copy is
    compared, not the slowest: on a shared machine one copy can be slow by chance (CI once saw
    3x on one of six), while that slowdown hit every copy after the first."""
    needs_board()
    bundle = tmp_path / "bundle"
    shutil.copytree(request.getfixturevalue("tiny_bundle")[0], bundle)
    manifest = read_manifest(bundle)
    variant = entry_of(manifest, "clf-float32")
    manifest["entries"] = [dict(variant, id=f"clf-float32-copy{k}") for k in range(6)]
    write_manifest(bundle, manifest)
    out = tmp_path / "out" / "qemu-aarch64.json"
    done = emulator.run_runner(bundle, out)
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())["results"]
    assert [r["status"] for r in records] == ["pass"] * 6
    latency = [r["metrics"]["latency_ms"] for r in records]
    assert statistics.median(latency) < 2.5 * min(latency), latency


def _figures(record: dict) -> dict:
    """A record without what times it."""
    record = {k: v for k, v in record.items() if k not in ("seconds", "invoke_seconds")}
    if record.get("metrics"):
        record["metrics"] = {k: v for k, v in record["metrics"].items() if k != "latency_ms"}
    return record


def test_metrics_computed_apart_are_the_same(tiny_bundle, tmp_path):
    """--isolate-blas (what the emulated board runs with) changes where the error metrics are
    computed, not what they are; and a short latency budget changes nothing but timings."""
    plain = run_bundle(tiny_bundle[0], outputs_dir=tmp_path / "plain")
    apart = run_bundle(tiny_bundle[0], outputs_dir=tmp_path / "apart", isolate_blas=True,
                       latency_budget=emulator.LATENCY_BUDGET)
    assert [_figures(r) for r in apart["results"]] == [_figures(r) for r in plain["results"]]
    assert any(r.get("metrics") for r in apart["results"])


def test_what_goes_wrong_apart_is_said_here():
    with pytest.raises(ValueError, match="invalid literal for int"):
        blas_apart(int, "seven")
    with pytest.raises(EntryError, match=r"the process computing _exit exited with code 3 "
                                         r"before it answered"):
        blas_apart(os._exit, 3)
    assert blas_apart(sum, [1.5, 2.5]) == 4.0


def test_a_latency_budget_must_be_seconds(tiny_bundle, tmp_path):
    with pytest.raises(UsageError, match=r"latency budget in seconds > 0\. Received: 0"):
        run_bundle(tiny_bundle[0], latency_budget=0)
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "edgepipe.device_tests.runner",
                           str(tiny_bundle[0]), "--out", str(out), "--latency-budget", "nan"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: Expected a latency budget in seconds > 0. "
                                   "Received: nan")
    assert not out.exists()
