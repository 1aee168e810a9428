"""The runner contains native crashes and hangs: each entry runs in a worker process, a real
SIGSEGV or a real endless loop fails that entry (signal or time limit named) and the run goes on.

Both are real models (tests/mutations.py), made from bytes in the test: the crash is a WHILE
whose body subgraph recurses into itself (the C stack overflows while the interpreter prepares
it: SIGSEGV in every runtime we have), the hang a WHILE whose condition is constant true. One
test also gives the runner an interpreter that segfaults in native code (ctypes reads address 0)
on one ordinary model, so that containment stays proven whatever a future TFLite fixes.
"""

import ctypes
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import needs
from mutations import add_entry, recursive_while, while_forever
from tiny_bundle import REPO, by_id, read_manifest, write_manifest

from edgepipe.device_tests import isolation
from edgepipe.device_tests.isolation import run_isolated
from edgepipe.device_tests.runner import UsageError, run_bundle

PASSING = ["mlp-float32", "mlp-int8", "mlp_fixed-float32", "mlp_fixed-int8", "clf-float32",
           "clf-int8"]
HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
SEGV = ("the interpreter crashed: killed by signal 11 (SIGSEGV) while running this entry "
        "(in allocate_tensors: the runtime was preparing the model's ops)")


@pytest.fixture
def broken(tiny_bundle, tmp_path):
    """A copy of the tiny bundle with two more entries, `hang` second and `crash` third, so
    that passing entries run before, between and after them."""
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], root)
    manifest = read_manifest(root)
    add_entry(root, manifest, "hang", "mlp_fixed-float32", while_forever(4))
    add_entry(root, manifest, "crash", "mlp_fixed-float32", recursive_while(4))
    entries = manifest["entries"]
    entries[1:1] = [entries.pop(-2), entries.pop()]
    write_manifest(root, manifest)
    return root


def _assert_contained(records: dict, timeout: float) -> None:
    assert (records["crash"]["status"], records["crash"]["reason"]) == ("error", SEGV)
    assert records["crash"]["metrics"] is None and "outputs" not in records["crash"]
    assert records["hang"]["status"] == "error"
    assert records["hang"]["reason"].startswith(f"did not finish within {timeout:g} s")
    assert timeout <= records["hang"]["seconds"] < timeout + 5
    assert "outputs" not in records["hang"]
    for entry_id in PASSING:
        assert records[entry_id]["status"] == "pass", records[entry_id]
    assert records["mlp-int16x8"]["status"] == "unsupported"


def _runner(args, cwd=None, env=None, module="edgepipe.device_tests.runner"):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kernels", ["default", "reference"])
def test_a_real_crash_and_a_real_hang_fail_their_entries_only(broken, tmp_path, kernels):
    started = time.monotonic()
    document = run_bundle(broken, kernels=kernels, entry_timeout=2, outputs_dir=tmp_path)
    assert time.monotonic() - started < 30
    assert [r["id"] for r in document["results"]] == [
        e["id"] for e in read_manifest(broken)["entries"]]  # manifest order kept
    records = by_id(document)
    _assert_contained(records, 2)
    for entry_id in PASSING:  # written by three workers: before, between and after
        assert (tmp_path / records[entry_id]["outputs"]).is_file()


class _Segfaulting:
    """An interpreter class that dies in native code when it loads one particular model."""

    def __init__(self, real, poison: bytes):
        self.real, self.poison = real, poison

    def __call__(self, **kwargs):
        if kwargs.get("model_content") == self.poison:
            ctypes.string_at(0)  # reads address 0: SIGSEGV, raised by the CPU, not by Python
        return self.real(**kwargs)


def test_a_segfaulting_runtime_is_contained(tiny_bundle, monkeypatch):
    from edgepipe.device_tests import runner
    from edgepipe.device_tests.interpreters import Runtime, find_runtime

    poison = (tiny_bundle[0] / "tflite" / "mlp.int8.tflite").read_bytes()
    real = find_runtime()
    monkeypatch.setattr(runner, "find_runtime", lambda name, kernels: Runtime(
        real.name, real.version, kernels, _Segfaulting(real._interpreter_class, poison),
        real._resolver_type))  # the worker is a fork: it sees this runtime
    records = by_id(run_bundle(tiny_bundle[0]))
    assert records["mlp-int8"]["status"] == "error"
    assert "killed by signal 11 (SIGSEGV)" in records["mlp-int8"]["reason"]
    assert all(records[i]["status"] == "pass" for i in PASSING if i != "mlp-int8")


def _top_level_copy(tmp_path: Path) -> Path:
    """device_tests/*.py alone, as the top-level package `device_tests` (as on a board)."""
    board = tmp_path / "board"
    (board / "device_tests").mkdir(parents=True)
    for source in (REPO / "device_tests").glob("*.py"):
        shutil.copy2(source, board / "device_tests" / source.name)
    return board


def _processes_naming(text: str) -> list:
    """Live processes whose command line holds `text` (a worker is a fork: same cmdline)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if text.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(name))
    return found


def _descendants(pids: list) -> list:
    """Those of `pids` that descend from this process."""
    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    found = []
    for pid in pids:
        up = pid
        while up > 1:
            up = parent(up)
            if up == os.getpid():
                found.append(pid)
                break
    return found


def test_cli_as_a_top_level_package_contains_both(broken, tmp_path):
    """As on the emulated board and over ssh: `python -m device_tests.runner` from a folder
    holding a copy of device_tests/ (edgepipe need not be importable)."""
    board = _top_level_copy(tmp_path)
    out = tmp_path / "run" / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = _runner([broken, "--out", out, "--save-outputs", "--entry-timeout", 2], cwd=board,
                   env=env, module="device_tests.runner")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert f"crash: error {SEGV}" in lines
    assert "hang: error did not finish within 2 s" in done.stderr
    assert lines[-1].startswith("host (ai_edge_litert")
    records = by_id(json.loads(out.read_text()))
    _assert_contained(records, 2)
    for entry_id in PASSING:
        assert (out.parent / records[entry_id]["outputs"]).is_file()
    assert not _processes_naming(str(broken))  # no worker left behind


def test_no_crash_means_one_worker_for_every_entry():
    def run_one(i):
        return {"i": i, "pid": os.getpid()}

    records = run_isolated(60, run_one, failed=None, entry_timeout=30)
    assert [r["i"] for r in records] == list(range(60))
    assert len({r["pid"] for r in records}) == 1
    assert records[0]["pid"] != os.getpid()


def test_each_way_to_die_is_named_and_the_rest_run():
    def run_one(i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGSEGV)
        elif i == 3:
            os._exit(3)
        elif i == 5:
            time.sleep(60)
        elif i == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"i": i, "pid": os.getpid(), "reason": ""}

    def failed(i, reason, seconds):
        return {"i": i, "pid": None, "reason": reason, "seconds": seconds}

    started = time.monotonic()
    records = run_isolated(9, run_one, failed, entry_timeout=1)
    assert time.monotonic() - started < 10
    assert [r["i"] for r in records] == list(range(9))
    assert records[1]["reason"] == ("the interpreter crashed: killed by signal 11 (SIGSEGV) "
                                    "while running this entry")
    assert records[3]["reason"] == ("the process running this entry exited with code 3 before "
                                    "it finished the entry")
    assert records[5]["reason"].startswith("did not finish within 1 s")
    assert 1 <= records[5]["seconds"] < 5
    assert records[7]["reason"] == ("the process running this entry was killed by signal 9 "
                                    "(SIGKILL) (out of memory?)")
    workers = [{r["pid"] for r in records[a:b]} for a, b in ((0, 1), (2, 3), (4, 5), (6, 7))]
    assert all(len(pids) == 1 for pids in workers)
    assert len(set.union(*workers)) == 4  # a new worker after each death, not one per entry
    assert records[8]["pid"] not in set.union(*workers)


def test_in_process_mode_and_bad_limits(tiny_bundle, tmp_path):
    records = by_id(run_bundle(tiny_bundle[0], isolate=False, only=["mlp-int8"]))
    assert records["mlp-int8"]["status"] == "pass"
    with pytest.raises(UsageError, match="needs the entries run in a worker"):
        run_bundle(tiny_bundle[0], isolate=False, entry_timeout=5)
    for bad in (0, -1, float("inf"), float("nan"), "soon"):
        with pytest.raises(UsageError, match="Expected an entry time limit in seconds > 0"):
            run_bundle(tiny_bundle[0], entry_timeout=bad)
    done = _runner([tiny_bundle[0], "--out", tmp_path / "r.json", "--in-process",
                    "--entry-timeout", 5])
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "r.json").exists()


def _worker_of(parent: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        kids = isolation._descendants(parent)
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("the runner started no worker")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_runner_takes_its_worker_with_it(broken, tmp_path, how):
    """SIGTERM (the ssh target's clean-up kills the runner's pid only) ends the run through
    `finally`; SIGKILL of the runner alone leaves the worker to PR_SET_PDEATHSIG (Linux)."""
    runner = subprocess.Popen([sys.executable, "-m", "edgepipe.device_tests.runner", str(broken),
                               "--out", str(tmp_path / "r.json"), "--only", "hang",
                               "--entry-timeout", "60"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        worker = _worker_of(runner.pid, time.monotonic() + 30)
        time.sleep(0.5)  # inside the endless invoke
        runner.send_signal(getattr(signal, how))
        code = runner.wait(timeout=10)
        stderr = runner.stderr.read()
    finally:
        runner.kill()
        runner.wait()
    assert code == (143 if how == "SIGTERM" else -signal.SIGKILL), stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # waits out a hang (~17 s)
def test_tflm_hang_is_cut_with_the_probes_of_the_worker(broken):
    """On tflm the model is first run in probe processes (device_tests/tflm.py): the crash is a
    probe's (contained there), the hang is inside a probe, a child of the worker, and the time
    limit kills both."""
    needs(HAVE_TFLM, "tflite-micro is not installed (pip install 'edgepipe[micro]')")
    started = time.monotonic()
    records = by_id(run_bundle(broken, runtime="tflite_micro",
                               only=["hang", "crash", "mlp-int8"],
                               entry_timeout=15))  # mlp-int8's arena search takes ~3 s
    assert time.monotonic() - started < 90
    assert records["hang"]["reason"].startswith("did not finish within 15 s")
    assert records["crash"]["status"] == "error"
    assert "(exit -11)" in records["crash"]["reason"]
    assert records["mlp-int8"]["status"] == "pass", records["mlp-int8"]
    # Neither a probe server nor a probe it forked outlives the runner.
    assert not _descendants(_processes_naming("tflm_probe.py"))


@pytest.mark.slow  # the emulated board (~11 s)
@pytest.mark.emulator
def test_the_emulated_board_contains_both(broken, tmp_path):
    """Under qemu-user the guest cannot exec its own Python (no binfmt_misc): the worker is a
    fork, and the guest's SIGSEGV reaches the runner as a signal."""
    from edgepipe.pipeline.targets import emulator

    why = emulator.ready()
    needs(why is None, f"qemu-aarch64: {why}")
    out = tmp_path / "results.json"
    done = emulator.run_runner(broken, out, extra_args=["--entry-timeout", "10", "--only",
                                                        "hang", "crash", "mlp-int8"])
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    records = by_id(json.loads(out.read_text()))
    assert records["crash"]["reason"] == SEGV
    assert records["hang"]["reason"].startswith("did not finish within 10 s")
    assert records["mlp-int8"]["status"] == "pass", records["mlp-int8"]


def test_parity_suite_fails_the_crash_and_the_hang_and_passes_the_rest(broken):
    done = subprocess.run([sys.executable, "-m", "pytest", "device_tests", "-p",
                           "no:cacheprovider", "--bundle", str(broken), "--entry-timeout", "2",
                           "-v"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "hang on host: error: did not finish within 2 s" in done.stdout
    assert f"crash on host: error: {SEGV}" in done.stdout
    assert "2 failed, 6 passed, 1 skipped" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "pytest", "device_tests", "-p",
                          "no:cacheprovider", "--bundle", str(broken), "--entry-timeout", "0"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 4 and "Expected an entry time limit" in bad.stderr, bad.stderr
