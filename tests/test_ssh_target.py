"""The `ssh://` target against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): a run, its
outputs and clean-up, and every refusal (unreachable, authentication, no Python, no numpy, no
TFLite runtime, time limit) as one line."""

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import sshd
from conftest import needs
from tiny_bundle import by_id, entry_of, read_manifest, write_manifest

from edgepipe.core.errors import EdgepipeError
from edgepipe.device_tests.runner import run_bundle
from edgepipe.device_tests.schema import target_folder
from edgepipe.pipeline.targets.ssh import (
    SshTarget,
    _remote_command,
    _runner_files,
    _unpack_results,
    parse_url,
    run_runner,
)

pytestmark = pytest.mark.device
RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    why = sshd.missing()
    needs(why is None, f"no OpenSSH server to test against: {why}")
    with sshd.Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


def ssh_run(server, bundle, tmp_path, python=sys.executable, **kwargs):
    """run_runner against the test server; the board's temp folders go to tmp_path/remote."""
    remote = tmp_path / "remote"
    remote.mkdir(exist_ok=True)
    kwargs.setdefault("identity", server.identity)
    kwargs.setdefault("timeout", 120)
    options = (*server.client_options(), "-o", f"SetEnv=TMPDIR={remote}")
    url = kwargs.pop("url", server.url())
    return run_runner(url, bundle, tmp_path / "results" / "board.json", python=python,
                      ssh_options=options, connect_timeout=5, **kwargs)


@pytest.fixture(scope="module")
def board_run(server, tiny_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("board")
    started = time.perf_counter()
    done = ssh_run(server, tiny_bundle[0], tmp)
    return done, tmp, time.perf_counter() - started


def test_the_tiny_bundle_runs_over_ssh(board_run, server, tiny_bundle, tmp_path):
    done, tmp, seconds = board_run
    assert done.returncode == 0, done.stderr
    print(f"tiny bundle over ssh: {seconds:.2f} s")
    document = json.loads((tmp / "results" / "board.json").read_text())
    url = server.url()
    assert document["target"] == url
    records = by_id(document)
    assert records.pop("mlp-int16x8")["status"] == "unsupported"
    assert records and all(r["status"] == "pass" for r in records.values()), records
    host = run_bundle(tiny_bundle[0], outputs_dir=tmp_path)
    for rid, record in records.items():
        assert record["target"] == url
        assert record["outputs"] == f"outputs/{target_folder(url)}/{rid}.npy"
        fetched = np.load(tmp / "results" / record["outputs"])
        np.testing.assert_array_equal(fetched, np.load(tmp_path / by_id(host)[rid]["outputs"]))


def test_the_remote_folder_is_removed(board_run):
    _, tmp, _ = board_run
    assert list((tmp / "remote").iterdir()) == []


def test_a_failing_entry_still_brings_its_results_back(server, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], bundle)
    manifest = read_manifest(bundle)
    entry_of(manifest, "mlp-float32")["tolerance"]["max_abs"] = 0.0
    write_manifest(bundle, manifest)
    done = ssh_run(server, bundle, tmp_path)
    assert done.returncode == 1
    assert "mlp-float32: fail" in done.stderr and "@edgepipe" not in done.stderr
    records = by_id(json.loads((tmp_path / "results" / "board.json").read_text()))
    assert records["mlp-float32"]["status"] == "fail"
    assert (tmp_path / "results" / records["mlp-float32"]["outputs"]).is_file()


def test_only_what_the_runner_reads_is_shipped(tiny_bundle, tmp_path):
    """A run folder also holds results, models and a report: none of it travels."""
    run = tmp_path / "run"
    shutil.copytree(tiny_bundle[0], run)
    for extra in ("results/host.json", "models/mlp.keras", "report.html", "results.json"):
        (run / extra).parent.mkdir(exist_ok=True)
        (run / extra).write_text("not for the board")
    names = [name for name, _ in _runner_files(run)]
    assert "bundle/manifest.json" in names and "device_tests/runner.py" in names
    assert not [n for n in names if n.startswith(("bundle/results", "bundle/models",
                                                   "bundle/report"))], names
    assert all(n.startswith(("bundle/", "device_tests/")) for n in names)


def test_a_chunk_ships_only_its_entries_files(tiny_bundle, tmp_path):
    """A pool's chunk (`--only`) uploads the .tflite files of its own entries, not all."""
    entries = read_manifest(tiny_bundle[0])["entries"]
    mine = entries[0]
    names = [name for name, _ in _runner_files(tiny_bundle[0], only=[mine["id"]])]
    tflites = [n for n in names if n.endswith(".tflite")]
    assert tflites == [f"bundle/{mine['tflite']}"], names
    assert len([e for e in entries if e.get("tflite")]) > 1  # the others were left home
    assert "bundle/manifest.json" in names


def test_a_hostile_results_archive_writes_nothing_outside(tmp_path):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name in ("results.json", "outputs/ssh___x/../../../evil.npy"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    archive.seek(0)
    out = tmp_path / "deep" / "results" / "board.json"
    with pytest.raises(EdgepipeError, match="refused"):
        _unpack_results(archive, out, "ssh___x", "ssh://x")
    assert not list(tmp_path.rglob("evil.npy"))


@pytest.mark.parametrize("text, expected", [
    ("ssh://pi@board", SshTarget("pi", "board", None)),
    ("ssh://pi@192.168.1.20:2222", SshTarget("pi", "192.168.1.20", 2222)),
    ("ssh://board.local", SshTarget(None, "board.local", None)),
    ("ssh://pi@[::1]:22", SshTarget("pi", "::1", 22)),
])
def test_urls(text, expected):
    assert parse_url(text) == expected


@pytest.mark.parametrize("text", ["ssh://", "pi@board", "ssh://pi@board:99999", "ssh://pi@b:x",
                                  "ssh://pi:secret@board", "ssh://pi@board/home", "ssh://@board",
                                  "ssh://-oProxyCommand=x", "ssh://pi@board:0"])
def test_bad_urls_are_one_line(text):
    with pytest.raises(EdgepipeError, match=r"Expected a target ssh://user@host\[:port\]") as exc:
        parse_url(text)
    assert "\n" not in str(exc.value)


def test_the_board_python_is_one_command_quoted_word_by_word():
    command = _remote_command("~/venv/bin/python -X 'a b'", "ssh://pi@board", ())
    script = shlex.split(command)[2]  # sh -c SCRIPT
    assert '"$HOME"/venv/bin/python -X \'a b\' -c ' in script
    assert "--target ssh://pi@board --save-outputs" in script


def refusal(call) -> str:
    with pytest.raises(EdgepipeError) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _python_without_runtime(tmp_path) -> str:
    """A Python with numpy but no TFLite runtime: one installed here (the venv's base, the
    system's), else this one with the runtimes hidden behind packages that fail to import."""
    check = ("import importlib.util as u, sys, numpy; "
             f"sys.exit(any(u.find_spec(m) for m in {RUNTIMES!r}))")
    for candidate in (Path(sys.base_prefix) / "bin" / "python3", shutil.which("python3"),
                      "/usr/bin/python3"):
        if candidate and os.access(candidate, os.X_OK) and subprocess.run(
                ["/usr/bin/env", "-i", str(candidate), "-c", check],
                capture_output=True).returncode == 0:
            return f"/usr/bin/env -i {candidate}"
    blockers = tmp_path / "blockers"
    for name in RUNTIMES:
        (blockers / name).mkdir(parents=True)
        (blockers / name / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return f"/usr/bin/env PYTHONPATH={blockers} {sys.executable}"


def test_no_tflite_runtime_on_the_board(server, tiny_bundle, tmp_path):
    python = _python_without_runtime(tmp_path)
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path, python=python))
    assert message.startswith(f"No TFLite runtime for {python} on ssh://"), message
    assert "no usable TFLite interpreter" in message  # the runner's own words, relayed
    assert "pip install ai-edge-litert" in message and "tflite-runtime 'numpy<2'" in message
    assert list((tmp_path / "remote").iterdir()) == []


def test_no_numpy_on_the_board(server, tiny_bundle, tmp_path):
    python = f"{sys.executable} -S"  # no site-packages: a bare Python
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path, python=python))
    assert message.startswith(f"numpy is not installed for {python} on ssh://"), message


def test_no_python_at_that_path(server, tiny_bundle, tmp_path):
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path,
                                      python="/nonexistent/python3"))
    assert message.startswith("No Python at '/nonexistent/python3' on ssh://"), message
    assert "ssh_python" in message
    assert list((tmp_path / "remote").iterdir()) == []


def test_connection_refused(server, tiny_bundle, tmp_path):
    port = sshd.free_port()  # nothing listens there
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path,
                                      url=f"ssh://root@127.0.0.1:{port}"))
    assert message.startswith(f"Cannot reach 127.0.0.1:{port} "), message
    assert "Connection refused" in message
    assert "check the address, that sshd runs there, and the port" in message


def test_unknown_host_name(server, tiny_bundle, tmp_path):
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path,
                                      url="ssh://pi@nosuchhost.invalid"))
    assert message.startswith("Cannot reach nosuchhost.invalid:22 "), message
    assert "check the address, that sshd runs there, and the port" in message


def test_authentication_failed(server, tiny_bundle, tmp_path):
    stranger = sshd.make_key(tmp_path / "stranger")  # not in authorized_keys
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path, identity=stranger))
    who = f"{server.user}@127.0.0.1"
    assert message.startswith(f"SSH authentication failed for {who} "), message
    assert "--ssh-identity" in message and f"ssh-copy-id {who}" in message


def _processes_running(argv: list) -> bool:
    wanted = "\0".join(argv).encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().rstrip(b"\0") == wanted:
                return True
        except OSError:
            continue
    return False


def test_time_limit(server, tiny_bundle, tmp_path):
    """A board Python that hangs: the call ends at the limit, the runner is killed and the
    remote folder removed."""
    slow = tmp_path / "slow-python"
    slow.write_text("#!/bin/sh\nexec sleep 97.25\n")
    slow.chmod(0o755)
    started = time.perf_counter()
    message = refusal(lambda: ssh_run(server, tiny_bundle[0], tmp_path, python=str(slow),
                                      timeout=3))
    assert time.perf_counter() - started < 30
    assert message.startswith(f"The ssh target {server.url()} did not finish within its time "
                              f"limit ([targets] timeout = 3 s)"), message
    assert list((tmp_path / "remote").iterdir()) == []
    deadline = time.monotonic() + 5
    while _processes_running(["sleep", "97.25"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_running(["sleep", "97.25"])


def test_the_layer_references_travel_to_the_board(tiny_bundle, tmp_path):
    """The per-layer comparison reads each layer's Keras outputs: a board gets them too."""
    import numpy as np
    from tiny_bundle import put_array

    run = tmp_path / "run"
    shutil.copytree(tiny_bundle[0], run)
    manifest = read_manifest(run)
    name = next(iter(manifest["models"]))
    rel = "reference/layers/mlp.0.npy"  # not a run folder path of the code: a test fixture
    sha = put_array(run, rel, np.zeros((1, 4), np.float32))
    manifest["models"][name]["layers"] = {
        "samples": [0], "outputs": [{"layer": "hidden", "class": "Dense", "path": rel,
                                     "sha256": sha, "shape": [1, 4], "range": 1.0}]}
    write_manifest(run, manifest)
    names = [n for n, _ in _runner_files(run)]
    assert f"bundle/{rel}" in names, names
