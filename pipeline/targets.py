"""The targets parity runs on, by name, and how each runs a bundle.

Every target but ethos-u runs the same `device_tests` runner on the same bundle, so the checks
are identical everywhere; each leaves `results/<target>.json` (and the outputs beside it) in the
run folder. No TensorFlow here: `edgepipe targets` and `edgepipe parity` stay light.
"""

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import EdgepipeError, unknown_name
from ..device_tests.runner import target_folder
from .npu import ACCELERATORS
from .values import SECONDS, TEXT, Rule, check_table, is_text

SSH_PREFIX = "ssh://"
# name -> what it is; the order is the report's column order.
TARGETS = {
    "host": "this machine's TFLite interpreter, default kernels (XNNPACK)",
    "host-ref": "this machine's TFLite interpreter, reference kernels (BUILTIN_REF)",
    "tflm": "TFLite Micro's reference kernels on this machine (PyPI tflite-micro)",
    "qemu-aarch64": "an emulated 64-bit Arm board: qemu-user, Debian arm64 Python 3.11",
    "ethos-u": "Arm Ethos-U NPU: Vela's compile report (operators, memory, cycles; no numerics)",
    "ssh://user@host[:port]": "a real board over SSH: copy the bundle and the runner, run, fetch",
}
# Runner options of the targets that run on this machine's Python.
LOCAL_RUNNER = {"host": ["--kernels", "default"], "host-ref": ["--kernels", "reference"],
                "tflm": ["--runtime", "tflite_micro"]}


@dataclass(frozen=True)
class TargetOptions:
    """How to reach and bound the targets; the run config's [targets] table."""
    timeout: float = 1800.0             # seconds, per target
    entry_timeout: float = 300.0        # seconds per entry: a hung interpreter fails that entry
    ssh_python: str = "python3"         # the board's Python
    ssh_identity: str | None = None     # a private key; default: ssh's own (agent, ~/.ssh)
    ssh_options: tuple = ()             # extra arguments for ssh, e.g. ("-o", "ProxyJump=gw")
    accelerator: str = "ethos-u55-256"  # Vela's --accelerator-config

    def __post_init__(self):
        check_table(TARGET_RULES, asdict(self), "[targets]")
        if self.accelerator not in ACCELERATORS:  # before any work, not when ethos-u runs
            raise unknown_name("accelerator", self.accelerator, ACCELERATORS)


# [targets] key -> what it must be
TARGET_RULES = {
    "timeout": SECONDS,
    "entry_timeout": SECONDS,
    "ssh_python": TEXT,
    "ssh_identity": Rule("a non-empty string", lambda v: v is None or is_text(v)),
    "ssh_options": Rule('a list of strings, e.g. ["-o", "ProxyJump=gw"]',
                        lambda v: isinstance(v, (list, tuple)) and all(is_text(x) for x in v)),
    "accelerator": TEXT,
}


def device_tests_dir() -> Path:
    """The installed `device_tests` package, which the emulator and boards run as their own."""
    spec = importlib.util.find_spec("edgepipe.device_tests")
    if spec is None or not spec.submodule_search_locations:
        raise EdgepipeError("edgepipe.device_tests is not importable; reinstall edgepipe "
                            "(pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0])


def is_ssh(target: str) -> bool:
    return target.startswith(SSH_PREFIX)


def check_target(target: str) -> str:
    """The target name, validated; EdgepipeError naming the nearest valid one."""
    if is_ssh(target):
        from .ssh_target import parse_url

        parse_url(target)
        return target
    if target not in TARGETS or target == "ssh://user@host[:port]":
        raise unknown_name("target", target, [t for t in TARGETS])
    return target


def order_key(target: str) -> tuple:
    """Report order: the table above, boards last by name."""
    names = list(TARGETS)
    return (names.index(target) if target in names else len(names), target)


def results_path(run_dir: Path, target: str) -> Path:
    return run_dir / "results" / f"{target_folder(target)}.json"


def run_target(target: str, run_dir: Path, options: TargetOptions, debug: bool = False,
               only=None, out_json: Path | None = None):
    """Run one target on the bundle in `run_dir` (only the entry ids `only`, when given), the
    results written to `out_json` (default `results_path`); returns the CompletedProcess of its
    runner (exit 0 or 1: results written; anything else: an EdgepipeError is raised here)."""
    out = out_json or results_path(run_dir, target)
    out.parent.mkdir(parents=True, exist_ok=True)
    if target == "ethos-u":
        from .npu import run_target as vela_run

        vela_run(run_dir, out, accelerator=options.accelerator, target=target,
                 timeout=options.timeout, only=only)
        return subprocess.CompletedProcess([], 0, "", "")
    entry_args = ["--entry-timeout", f"{options.entry_timeout:g}",
                  *(["--only", *only] if only else [])]
    if target == "qemu-aarch64":
        from .emulator import run_runner

        done = run_runner(run_dir, out, target=target, timeout=options.timeout, debug=debug,
                          extra_args=entry_args)
    elif is_ssh(target):
        from .ssh_target import run_runner as ssh_run

        done = ssh_run(target, run_dir, out, python=options.ssh_python,
                       identity=Path(options.ssh_identity).expanduser()
                       if options.ssh_identity else None,
                       ssh_options=tuple(options.ssh_options), timeout=options.timeout,
                       extra_args=entry_args,
                       debug=debug)
    else:
        cmd = [sys.executable, "-m", "edgepipe.device_tests.runner", str(run_dir),
               *LOCAL_RUNNER[target], "--target", target, "--out", str(out), "--save-outputs",
               *entry_args]
        try:
            done = subprocess.run(cmd, capture_output=not debug, text=True,
                                  timeout=options.timeout)
        except subprocess.TimeoutExpired:
            raise EdgepipeError(f"The parity runner on {target} did not finish within "
                                f"{options.timeout:g} s; raise [targets] timeout in the run "
                                f"config.") from None
    if done.returncode not in (0, 1):
        raise EdgepipeError(f"The parity runner failed on {target} (exit {done.returncode}): "
                            f"{runner_said(done.stderr, debug)}")
    return done


def runner_said(stderr: str | None, debug: bool = False) -> str:
    """The runner's own one-line error (`error: ...`, its last), else its last line."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if errors or lines:
        return (errors or lines)[-1].removeprefix("error: ")
    return "(its output is above)" if debug else "(no message)"


def availability(target: str) -> str | None:
    """None when the target can run on this machine, else why not (what to install)."""
    if target in ("host", "host-ref"):
        return None if importlib.util.find_spec("ai_edge_litert") else (
            "ai-edge-litert is not installed: pip install ai-edge-litert")
    if target == "tflm":
        return None if importlib.util.find_spec("tflite_micro") else (
            "tflite-micro is not installed: pip install 'edgepipe[micro]' (x86-64 Linux)")
    if target == "qemu-aarch64":
        from .emulator import ready

        return ready()
    if target == "ethos-u":
        from .npu import INSTALL_HINT, vela_available

        return None if vela_available() else f"Vela is not installed: {INSTALL_HINT}"
    if shutil.which("ssh") is None:
        return "the OpenSSH client is not installed: apt-get install openssh-client"
    return None  # a board: whether it answers is only known by trying
