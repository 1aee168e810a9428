"""Board pools (`pool:NAME`, pipeline/targets/pool.py) against three throwaway OpenSSH servers
on 127.0.0.1 (tests/sshd.py): every entry runs once and the merged results are a one-board
run's; a board that dies mid-run leaves its chunk to another; a pool with no board left names
them all; chunks to one board share one connection; the config's [targets.pools] and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sshd
from conftest import needs
from tiny_bundle import by_id, read_manifest

from edgepipe.core.errors import EdgepipeError
from edgepipe.device_tests.schema import (
    OUTPUTS,
    ConversionStatus,
    ResultStatus,
    RunFolder,
    target_folder,
)
from edgepipe.pipeline.config import load_config
from edgepipe.pipeline.targets import TargetOptions, get_target
from edgepipe.pipeline.targets.pool import run_pool
from edgepipe.pipeline.targets.ssh import close_connection, run_runner, socket_folder

pytestmark = pytest.mark.device
EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))
NAME = "pool:lab"
TIMING = ("latency_ms",)  # the only metric that is a measured time


@dataclass
class Lab:
    """Three boards that take one key, and one known_hosts that knows them all."""

    servers: list
    identity: Path
    known_hosts: Path
    remote: Path  # the boards' $TMPDIR

    @property
    def urls(self) -> list:
        return [server.url() for server in self.servers]

    def ssh_options(self) -> tuple:
        return ("-F", "/dev/null", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", f"SetEnv=TMPDIR={self.remote}")

    def options(self, urls=None) -> TargetOptions:
        return TargetOptions(ssh_python=sys.executable, ssh_identity=str(self.identity),
                             ssh_options=self.ssh_options(), timeout=120,
                             pools={"lab": tuple(urls or self.urls)})


def start_lab(root: Path, boards: int = 3) -> Lab:
    why = sshd.missing()
    needs(why is None, f"no OpenSSH server to test against: {why}")
    servers = []
    try:
        for i in range(boards):
            servers.append(sshd.Sshd(root / f"board{i}").start())
    except BaseException:
        for server in servers:
            server.stop()
        raise
    key = (servers[0].folder / "client_key.pub").read_text()
    for server in servers[1:]:
        (server.folder / "authorized_keys").write_text(key)
    known = root / "known_hosts"
    known.write_text("".join((s.folder / "known_hosts").read_text() for s in servers))
    remote = root / "remote"
    remote.mkdir()
    return Lab(servers, servers[0].identity, known, remote)


def descendants(pid: int) -> list:
    """The processes below `pid` (its connections, for sshd)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                # the command name may hold spaces and parentheses: ppid follows the last ")"
                parents[int(proc.name)] = int((proc / "stat").read_text().rpartition(")")[2]
                                              .split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


def kill_board(server) -> None:
    """The board is gone: sshd and every connection it holds (a master connection too)."""
    for pid in descendants(server.process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.stop()


def logins(server) -> int:
    return server.log.read_text(errors="replace").count("Accepted publickey")


@pytest.fixture(autouse=True)
def cache(monkeypatch):
    """The connection sockets in a folder of their own, with a short path (a socket's path
    must fit 104 bytes; pytest's tmp_path does not leave room)."""
    folder = tempfile.mkdtemp(prefix="ep-")
    monkeypatch.setenv("EDGEPIPE_CACHE", folder)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("lab"))
    yield lab
    for server in lab.servers:
        server.stop()


@pytest.fixture(scope="module")
def one_board(lab, tiny_bundle, tmp_path_factory):
    """The tiny bundle on one ssh:// board of the lab: what a pool must give too."""
    out = tmp_path_factory.mktemp("one") / "out" / "board.json"
    with pytest.MonkeyPatch.context() as patch:  # its connection's socket: not in ~/.cache
        patch.setenv("EDGEPIPE_CACHE", str(tmp_path_factory.mktemp("cache", numbered=False)))
        done = run_runner(lab.urls[0], tiny_bundle[0], out, python=sys.executable,
                          identity=lab.identity, ssh_options=lab.ssh_options(), timeout=120)
        close_connection(lab.urls[0], lab.identity, lab.ssh_options())
    assert done.returncode == 0, done.stderr
    return by_id(json.loads(out.read_text())), out.parent


def same_results(pool: dict, one: dict) -> None:
    assert sorted(pool) == sorted(one)
    for rid, record in pool.items():
        assert record["status"] == one[rid]["status"], rid
        metrics = {k: v for k, v in (record["metrics"] or {}).items() if k not in TIMING}
        assert metrics == {k: v for k, v in (one[rid]["metrics"] or {}).items()
                           if k not in TIMING}, rid


def test_every_entry_runs_once_and_the_results_are_a_one_board_runs(lab, tiny_bundle, one_board,
                                                                   tmp_path):
    log = []
    out = tmp_path / "out" / "pool.json"
    done = run_pool(NAME, lab.urls, tiny_bundle[0], out, lab.options(),
                    observe=lambda *chunk: log.append(chunk))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["target"] == NAME
    records = by_id(document)
    ids = [e["id"] for e in read_manifest(tiny_bundle[0])["entries"]]
    assert [r["id"] for r in document["results"]] == ids  # manifest order
    ran = [(board, i) for board, chunk, error in log if error is None for i in chunk]
    assert not [chunk for _, chunk, error in log if error is not None]
    assert sorted(i for _, i in ran) == sorted(ids)  # each entry in one chunk, run once
    assert {i: board for board, i in ran} == {i: r["board"] for i, r in records.items()}
    one, one_dir = one_board
    same_results(records, one)
    for rid, record in records.items():
        assert record["target"] == NAME
        if record["status"] == ResultStatus.PASS:
            assert record["outputs"] == f"{OUTPUTS}/{target_folder(NAME)}/{rid}.npy"
            np.testing.assert_array_equal(np.load(out.parent / record["outputs"]),
                                          np.load(one_dir / one[rid]["outputs"]))
    # the remote folders are gone, and so is every scratch file beside the results
    assert list(lab.remote.iterdir()) == []
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([OUTPUTS, out.name])


def test_chunks_to_one_board_share_one_connection(lab, tiny_bundle, cache, tmp_path):
    board = lab.servers[2]
    before = logins(board)
    log = []
    done = run_pool(NAME, [board.url()], tiny_bundle[0], tmp_path / "pool.json",
                    lab.options([board.url()]), per_board=4,
                    observe=lambda *chunk: log.append(chunk))
    assert done.returncode == 0, done.stderr
    assert len(log) == 4 and all(error is None for _, _, error in log)
    assert logins(board) - before == 1  # four runner calls, one authentication
    folder = socket_folder()
    assert folder == cache / "ssh" and folder.stat().st_mode & 0o777 == 0o700
    assert list(folder.iterdir()) == []  # the pool closed its master connection at the end


def test_a_board_that_dies_mid_run_leaves_its_chunk_to_another(tiny_bundle, one_board,
                                                               tmp_path):
    lab = start_lab(tmp_path / "lab")
    victim = lab.servers[1].url()
    dead = threading.Event()
    log = []

    def observe(board, chunk, error):
        log.append((board, chunk, error))
        if board == victim and error is None and not dead.is_set():
            kill_board(lab.servers[1])  # after its first chunk: its connection is open
            dead.set()
        elif board != victim:
            dead.wait(60)  # the others take no second chunk before: the victim gets one

    try:
        out = tmp_path / "out" / "pool.json"
        done = run_pool(NAME, lab.urls, tiny_bundle[0], out, lab.options(), observe=observe)
    finally:
        for server in lab.servers:
            server.stop()
    assert dead.is_set()
    failures = [k for k, (_, _, error) in enumerate(log) if error is not None]
    assert [log[k][0] for k in failures] == [victim], log
    _, lost, said = log[failures[0]]
    assert victim in said and f"error: {victim}: " in done.stderr
    ran = [(board, i) for board, chunk, error in log if error is None for i in chunk]
    assert sorted(i for _, i in ran) == sorted(one_board[0])  # each entry run once
    for i in lost:  # the victim's second chunk ran on another board, after it died
        assert any(i in chunk and board != victim and error is None
                   for board, chunk, error in log[failures[0] + 1:]), i
    assert done.returncode == 0
    records = by_id(json.loads(out.read_text()))
    same_results(records, one_board[0])
    assert {i: board for board, i in ran} == {i: r["board"] for i, r in records.items()}


def test_no_board_left_every_entry_is_an_error_naming_them_all(tiny_bundle, tmp_path):
    """Three boards whose sshd is stopped: nothing listens on their ports."""
    urls = [f"ssh://pi@127.0.0.1:{sshd.free_port()}" for _ in range(3)]
    options = TargetOptions(ssh_python=sys.executable, ssh_options=("-F", "/dev/null"),
                            timeout=60, pools={"lab": tuple(urls)})
    out = tmp_path / "pool.json"
    done = run_pool(NAME, urls, tiny_bundle[0], out, options)
    assert done.returncode == 1
    records = by_id(json.loads(out.read_text()))
    manifest = {e["id"]: e for e in read_manifest(tiny_bundle[0])["entries"]}
    assert sorted(records) == sorted(manifest)
    for rid, record in records.items():
        assert "board" not in record and record["target"] == NAME
        if manifest[rid]["status"] != ConversionStatus.CONVERTED:  # unsupported everywhere
            assert record["status"] == ResultStatus.UNSUPPORTED
            continue
        assert record["status"] == ResultStatus.ERROR
        reason = record["reason"]
        assert reason.startswith(f"No board of {NAME} could run it: "), reason
        assert "\n" not in reason and all(url in reason for url in urls), reason
        assert reason.count("Connection refused") == 3, reason


def test_a_pool_target_keeps_results_per_pool_not_per_board():
    pool = get_target(NAME)
    options = TargetOptions(ssh_python="/opt/py/bin/python3",
                            pools={"lab": ("ssh://pi@a", "ssh://pi@b")})
    more = TargetOptions(ssh_python="/opt/py/bin/python3",
                         pools={"lab": ("ssh://pi@a", "ssh://pi@b", "ssh://pi@c")})
    assert pool.sessions(8) == 1  # all its entries in one call: it spreads them itself
    assert pool.stage_key(options) == pool.stage_key(more) == "/opt/py/bin/python3"
    assert target_folder(NAME) == "pool-lab"


POOLS = '[targets.pools]\nlab = ["ssh://pi@board-a", "ssh://pi@board-b:2222"]\n'


@pytest.mark.parametrize("text, targets, expected", [
    pytest.param('[targets.pools]\nlab = []\n', None,
                 "Expected pool lab in {c} [targets.pools] to list at least one board, e.g. "
                 'lab = ["ssh://pi@board-a", "ssh://pi@board-b:2222"]. Received: [].',
                 id="empty"),
    pytest.param('[targets.pools]\nlab = ["ssh://pi@a", "ssh://pi@A:22"]\n', None,
                 "Pool lab in {c} [targets.pools] lists the board a:22 twice (ssh://pi@a and "
                 "ssh://pi@A:22); list each board once.", id="twice"),
    pytest.param('[targets.pools]\n"my lab" = ["ssh://pi@a"]\n', None,
                 "Pool name 'my lab' in {c} [targets.pools] may hold only letters, digits, "
                 "'.', '_' and '-' (a letter, digit or '_' first); rename it, e.g. pi4.",
                 id="name"),
    pytest.param('[targets.pools]\nlab = ["pi@board-a"]\n', None,
                 "{c} [targets.pools] lab: Expected a target ssh://user@host[:port]. "
                 "Received: 'pi@board-a' (it does not start with ssh://)", id="url"),
    pytest.param('[targets]\npools = ["ssh://pi@a"]\n', None,
                 "Expected pools in {c} [targets] to be a table of board lists, e.g. "
                 '[targets.pools] pi4 = ["ssh://pi@board-a", "ssh://pi@board-b:2222"]. '
                 "Received: ['ssh://pi@a'].", id="not-a-table"),
    pytest.param(POOLS, ["pool:labs"],
                 "Unknown pool 'labs'. Did you mean 'lab'? Valid pools: lab. Or list its boards "
                 "in the run config (--config): [targets.pools] labs = [", id="undefined"),
    pytest.param("", ["pool:lab"],
                 "Unknown pool 'lab' (pool:lab): the run config defines no pools; list its "
                 "boards in the run config (--config): [targets.pools] lab = [", id="no-pools"),
    pytest.param(POOLS, ["pool:"], "Expected a target pool:NAME, NAME a pool of the run "
                 "config's [targets.pools]. Received: 'pool:'; write it as pool:pi4.",
                 id="no-name"),
])
def test_config_errors_are_one_line_naming_where(text, targets, expected, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(EdgepipeError) as exc:
        load_config(config, targets=targets)
    message = str(exc.value)
    assert message.startswith(expected.format(c=config)), message
    assert "\n" not in message


def test_a_config_with_pools_in_run_targets(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[run]\ntargets = ["host", "pool:lab"]\n' + POOLS)
    loaded = load_config(config)
    assert loaded.targets == ("host", "pool:lab")
    assert loaded.target_options.pools == {"lab": ("ssh://pi@board-a", "ssh://pi@board-b:2222")}


def pool_config(lab, path: Path, urls, run: str = "") -> Path:
    path.write_text(f"{run}[targets]\nssh_python = {json.dumps(sys.executable)}\n"
                    f"ssh_identity = {json.dumps(str(lab.identity))}\n"
                    f"ssh_options = {json.dumps(list(lab.ssh_options()))}\n"
                    f"[targets.pools]\nlab = {json.dumps(urls)}\n")
    return path


def edgepipe(cache: Path, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEPIPE_CACHE": str(cache), "COLUMNS": "400"}
    return subprocess.run([EDGEPIPE, *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_edgepipe_parity_on_a_pool_from_the_config(lab, tiny_bundle, tmp_path, cache):
    """The CLI as a user runs it: [targets.pools] in the config, `--target pool:lab`."""
    run = tmp_path / "run"
    shutil.copytree(tiny_bundle[0], run)
    done = edgepipe(cache, "parity", run, "--target", NAME, "--config",
                    pool_config(lab, tmp_path / "c.toml", lab.urls[:2]))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = by_id(json.loads(RunFolder(run).target_results(NAME).read_text()))
    boards = {r.get("board") for r in records.values() if r["status"] == ResultStatus.PASS}
    assert boards and boards <= set(lab.urls[:2])
    merged = json.loads(RunFolder(run).results.read_text())
    assert list(merged["targets"]) == [NAME] and merged["summary"]["ok"]
    assert f"; {NAME} ran on " in done.stdout  # the console's matrix lists its boards
    page = RunFolder(run).report.read_text()
    assert "boards: " in page and all(b in page for b in boards)


def test_edgepipe_run_reuses_a_pools_results_when_a_board_is_added(lab, tiny_bundle, tmp_path,
                                                                   cache):
    """`edgepipe run` with `[run] targets = ["pool:lab"]`; run again with one more board in the
    pool: every result is reused, and no board is even logged into."""
    model, (x_train, y_train, x_test, y_test) = tiny_bundle[1]["mlp"], tiny_bundle[2]["reg"]
    model.save(tmp_path / "mlp.keras")
    np.savez(tmp_path / "reg.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test)
    targets = f'[run]\ntargets = ["{NAME}"]\nmodes = ["float32", "int8"]\n'
    argv = ("run", "--model", tmp_path / "mlp.keras", "--data", tmp_path / "reg.npz", "--out",
            tmp_path / "run", "--config")
    done = edgepipe(cache, *argv, pool_config(lab, tmp_path / "c.toml", lab.urls[:2], targets))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = RunFolder(tmp_path / "run").target_results(NAME)
    records = by_id(json.loads(results.read_text()))
    assert {r.get("board") for r in records.values()} <= set(lab.urls[:2])
    before = [logins(server) for server in lab.servers]
    again = edgepipe(cache, *argv, pool_config(lab, tmp_path / "c.toml", lab.urls, targets))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"parity on {NAME}: {len(records)} reused" in again.stderr, again.stderr
    assert by_id(json.loads(results.read_text())) == records
    assert [logins(server) for server in lab.servers] == before
