"""What every target is: the interface the pipeline drives, and the pieces targets share.

A target turns a bundle into a results file (docs/bundle.md): `run` writes it and returns the
CompletedProcess of its runner. The kind modules subclass `Target`; this module imports none of
them, so each imports on its own.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import EdgepipeError

if TYPE_CHECKING:  # options.py imports Vela's names; the interface only needs the type
    from .options import TargetOptions


class Target(abc.ABC):
    """One kind of target. A module defines a subclass and one instance, which the registry in
    `targets/__init__.py` lists; a target with a variable name (a board's URL) makes a bound
    copy of itself in `named`."""

    name: str  # what a user writes in --targets and [run] targets
    description: str  # one line for `edgepipe targets`
    compare_with: str | None = None  # the target whose outputs this one's are compared with
    # Whether any machine with edgepipe installed can run it (a cluster's worker), or only
    # this one (an emulator image in its cache, a board it reaches).
    portable: bool = False
    # The op audit's op set (converters/op_audit.OP_SETS) that says, without running, which ops
    # in which types it has; None: only running the model tells.
    op_set: str | None = None

    def claims(self, name: str) -> bool:
        """Whether `name` is this kind of target."""
        return name == self.name

    def named(self, name: str) -> Target:
        """The target called `name` (one it `claims`); EdgepipeError when it is malformed."""
        return self

    def check_options(self, options: TargetOptions) -> None:
        """EdgepipeError, before any work, when the run config cannot run this target (a pool
        it does not define)."""
        return None  # most targets need nothing of it

    @abc.abstractmethod
    def availability(self) -> str | None:
        """None when the target can run on this machine, else why not (what to install)."""

    def sessions(self, workers: int) -> int:
        """How many runners may run on it at once, given `--jobs`."""
        return max(1, workers)

    def spread(self, options: TargetOptions, chunks: int) -> str:
        """How its stale entries run, for the console: "in 2 runner(s)"."""
        return f"in {chunks} runner(s)"

    def stage_key(self, options: TargetOptions):
        """What of the options and of the target's own software decides its results (JSON-able);
        part of each result's stage key."""
        return None

    @property
    def modules(self) -> tuple:
        """The modules that do its work (dotted names); its results' stage key hashes their
        import closure (stages.code_key)."""
        return (type(self).__module__,)

    def run(self, run_dir: Path, out_json: Path, options: TargetOptions, only=None,
            debug: bool = False) -> subprocess.CompletedProcess:
        """Run the bundle in `run_dir` (only the entry ids `only`, when given), the results
        written to `out_json`; returns the CompletedProcess of its runner (exit 0 or 1: results
        written; anything else raises an EdgepipeError here)."""
        out_json = Path(out_json)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        done = self._run(Path(run_dir), out_json, options, only, debug)
        if done.returncode not in (0, 1):
            raise EdgepipeError(f"The parity runner failed on {self.name} (exit "
                                f"{done.returncode}): {runner_said(done.stderr, debug)}")
        return done

    @abc.abstractmethod
    def _run(self, run_dir: Path, out_json: Path, options: TargetOptions, only,
             debug: bool) -> subprocess.CompletedProcess:
        """`run` without its checks: start the runner and return how it ended."""


class LocalRunner(Target):
    """A target that runs `device_tests.runner` on this machine's Python, in a child process: a
    crash in native code must not take the pipeline down. It needs nothing but edgepipe's
    install, so a cluster's worker may run its chunks (`portable`)."""

    runner_options: tuple = ()  # the runner's options that make it this target
    portable = True

    def _run(self, run_dir, out_json, options, only, debug):
        cmd = [sys.executable, "-m", "edgepipe.device_tests.runner", str(run_dir),
               *self.runner_options, "--target", self.name, "--out", str(out_json),
               "--save-outputs", *runner_args(options, only)]
        try:
            return subprocess.run(cmd, capture_output=not debug, text=True,
                                  timeout=options.timeout)
        except subprocess.TimeoutExpired:
            raise timed_out(self.name, options.timeout) from None


def cache_root() -> Path:
    """edgepipe's cache folder: $EDGEPIPE_CACHE, else ~/.cache/edgepipe (the emulated board's
    sysroot, ssh's connection sockets)."""
    root = os.environ.get("EDGEPIPE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "edgepipe"


def runner_reads(bundle_dir: Path, only=None) -> list[str]:
    """The bundle's files (relative paths) the runner reads for the entries `only` (default:
    all): manifest.json, and what their entries, models and datasets name (not the run
    folder's results, models or report). Files that are missing are left out: the runner
    reports them on their entries. BundleError when the manifest is bad."""
    from ...device_tests.bundle import dataset_inputs, load_bundle, resolve_inside  # numpy
    from ...device_tests.schema import RunFolder

    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    entries = [e for e in manifest["entries"] if only is None or e["id"] in set(only)]
    models = {e.get("model") for e in entries}
    names = {RunFolder.MANIFEST}
    for name, model in (manifest.get("models") or {}).items():
        if name not in models:
            continue
        dataset = (manifest.get("datasets") or {}).get(model.get("dataset")) or {}
        names.update(item["path"] for item in dataset_inputs(dataset))
        names.update((dataset.get("labels"), model.get("reference")))
        # the Keras outputs of every layer, for the per-layer comparison
        names.update(item.get("path") for item in (model.get("layers") or {}).get(
            "outputs") or ())
    for entry in entries:
        dataset = (manifest.get("datasets") or {}).get(entry.get("dataset")) or {}
        names.update(item["path"] for item in dataset_inputs(dataset))
        names.update((dataset.get("labels"), entry.get("tflite"), entry.get("reference")))
    names.discard(None)
    return sorted(n for n in names if resolve_inside(bundle.root, n, n).is_file())


def runner_args(options: TargetOptions, only) -> list:
    """The runner's per-entry options: its time limit, and the entries to run."""
    return ["--entry-timeout", f"{options.entry_timeout:g}", *(["--only", *only] if only else [])]


def timed_out(target: str, timeout: float) -> EdgepipeError:
    return EdgepipeError(f"The parity runner on {target} did not finish within {timeout:g} s; "
                         f"raise [targets] timeout in the run config.")


def missing_module(module: str, message: str) -> str | None:
    """None when `module` is importable here, else `message`."""
    return None if importlib.util.find_spec(module) else message


def device_tests_dir() -> Path:
    """The installed `device_tests` package, which the emulator and boards run as their own."""
    spec = importlib.util.find_spec("edgepipe.device_tests")
    if spec is None or not spec.submodule_search_locations:
        raise EdgepipeError("edgepipe.device_tests is not importable; reinstall edgepipe "
                            "(pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0])


def runner_said(stderr: str | None, debug: bool = False) -> str:
    """The runner's own one-line error (`error: ...`, its last), else its last line."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if errors or lines:
        return (errors or lines)[-1].removeprefix("error: ")
    return "(its output is above)" if debug else "(no message)"
