"""The targets behind one interface (pipeline/targets/): the registry, names, report order, and
that every module imports on its own. Nothing here depends on what the machine has installed."""

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.core.errors import EdgepipeError
from edgepipe.pipeline import targets
from edgepipe.pipeline.targets import (
    REGISTRY,
    Target,
    TargetKind,
    TargetOptions,
    base,
    check_target,
    emulator,
    get_target,
    kind_of,
    listing,
    order_key,
    pool,
    ssh,
)

PACKAGE = Path(targets.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]))
KIND_MODULES = {"host", "host_ref", "tflm", "qemu_aarch64", "ethos_u", "ssh", "pool"}
FORMS = {TargetKind.SSH: ssh.FORM, TargetKind.POOL: pool.FORM}  # a name per board, per pool


def test_every_kind_has_a_registered_target_implementing_the_interface():
    assert list(REGISTRY) == list(TargetKind)
    for kind, target in REGISTRY.items():
        assert isinstance(target, Target), kind
        assert target.name and target.description, kind
        assert target.name == FORMS.get(kind, kind.value)
        assert target.claims(target.name) and kind_of(target.name) is kind
        assert target.compare_with is None or target.compare_with in targets.REGISTRY
        for module in target.modules:  # what its stage key hashes is real code
            assert importlib.util.find_spec(module) is not None, module
    assert {type(t).__module__.rpartition(".")[2] for t in REGISTRY.values()} == KIND_MODULES


def test_a_targets_code_key_covers_the_machinery_it_runs():
    from edgepipe.pipeline.stages import closure

    for kind, helper in [(TargetKind.QEMU_AARCH64, "emulator"), (TargetKind.ETHOS_U, "vela"),
                         (TargetKind.HOST, "base"), (TargetKind.SSH, "base")]:
        assert f"edgepipe.pipeline.targets.{helper}" in closure(*REGISTRY[kind].modules), kind


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module):
    """In a fresh interpreter: once as usual, once with the package's __init__ kept out (so a
    module that only imports because __init__ loaded its neighbours first fails here)."""
    name = f"edgepipe.pipeline.targets.{module}"
    alone = ("import importlib, importlib.util, sys, types\n"
             "import edgepipe.pipeline\n"
             "spec = importlib.util.find_spec('edgepipe.pipeline.targets')\n"
             "stub = types.ModuleType(spec.name)\n"
             "stub.__path__ = list(spec.submodule_search_locations)\n"
             "sys.modules[spec.name] = stub\n"
             f"importlib.import_module({name!r})\n")
    for code in (f"import {name}\n", alone):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def test_base_and_helpers_import_no_kind_module():
    """The interface knows no kind: the kind modules import it, never the reverse."""
    for module in set(MODULES) - KIND_MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = {node.module} if node.module else {a.name for a in node.names}
                assert not names & KIND_MODULES, (module, names)


def test_the_registry_order_is_the_report_order():
    names = [t.name for kind, t in REGISTRY.items() if kind not in FORMS]
    boards = ["ssh://a@board", "ssh://pi@zero:2222", "pool:lab", "pool:pi4"]
    shuffled = [boards[1], "ethos-u", boards[3], "tflm", boards[0], "host-ref", "qemu-aarch64",
                boards[2], "host"]
    assert sorted(shuffled, key=order_key) == names + boards
    assert [row[0] for row in listing()] == [t.name for t in REGISTRY.values()]
    assert order_key("not-a-target") > order_key(boards[1])  # sorts, never raises


@pytest.mark.parametrize("name, nearest", [
    ("hots", "host"), ("host_ref", "host-ref"), ("qemu-aarch46", "qemu-aarch64"),
    ("ethos_u", "ethos-u"),
])
def test_an_unknown_name_suggests_the_nearest(name, nearest):
    with pytest.raises(EdgepipeError, match=rf"Unknown target '{name}'\. Did you mean "
                                            rf"'{nearest}'\? Valid targets: ethos-u, host, "):
        get_target(name)
    assert kind_of(name) is None


def test_the_kind_name_alone_is_not_a_target():
    with pytest.raises(EdgepipeError, match=r"Unknown target 'ssh'\. Valid targets: .*"
                                            r"ssh://user@host\[:port\]"):
        check_target("ssh")


def test_an_ssh_url_is_the_ssh_kind():
    url = "ssh://pi@board:2222"
    assert kind_of(url) is TargetKind.SSH and check_target(url) == url
    board = get_target(url)
    assert isinstance(board, ssh.SshBoard) and board.name == url
    assert REGISTRY[TargetKind.SSH].name == ssh.FORM  # the registry's stands for every board
    with pytest.raises(EdgepipeError, match=r"Expected a target ssh://user@host\[:port\]\. "
                                            r"Received: 'ssh://pi@board:99999'"):
        get_target("ssh://pi@board:99999")


def test_sessions_stage_keys_and_comparisons(monkeypatch):
    options = TargetOptions(ssh_python="/opt/py/bin/python3", accelerator="ethos-u85-256")
    monkeypatch.setattr(emulator, "built_with", lambda cache_dir=None: {"suite": "stamp"})
    board = get_target("ssh://pi@board")
    expected = {"host": (4, None, None), "host-ref": (4, None, None),
                "tflm": (4, None, "host-ref"), "qemu-aarch64": (4, {"suite": "stamp"}, None),
                "ethos-u": (1, "ethos-u85-256", None)}
    for name, (sessions, key, compare_with) in expected.items():
        target = get_target(name)
        assert (target.sessions(4), target.stage_key(options), target.compare_with) == (
            sessions, key, compare_with), name
        assert target.sessions(0) >= 1
    assert (board.sessions(4), board.stage_key(options), board.compare_with) == (
        1, "/opt/py/bin/python3", None)


def test_availability_says_what_to_install(monkeypatch):
    assert base.missing_module("json", "install json") is None
    assert base.missing_module("edgepipe_no_such_module", "pip install it") == "pip install it"
    monkeypatch.setattr(ssh.shutil, "which", lambda tool: None)
    assert REGISTRY[TargetKind.SSH].availability() == (
        "the OpenSSH client is not installed: apt-get install openssh-client")


class _Fake(Target):
    name, description = "fake", "a target whose runner ends as told"

    def __init__(self, done):
        self.done = done

    def availability(self):
        return None

    def _run(self, run_dir, out_json, options, only, debug):
        return self.done


def test_run_returns_exit_0_and_1_and_raises_the_runners_line_otherwise(tmp_path):
    out = tmp_path / "results" / "fake.json"
    for code in (0, 1):
        done = subprocess.CompletedProcess([], code, "", "")
        assert _Fake(done).run(tmp_path, out, TargetOptions()) is done
    assert out.parent.is_dir()  # made for the runner
    refused = subprocess.CompletedProcess([], 2, "", "Traceback\nerror: bad bundle\nlast\n")
    with pytest.raises(EdgepipeError, match=r"^The parity runner failed on fake \(exit 2\): "
                                            r"bad bundle$"):
        _Fake(refused).run(tmp_path, out, TargetOptions())
