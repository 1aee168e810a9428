"""The emulated 64-bit Arm board the `qemu-aarch64` target runs the parity runner on.

The board is Debian arm64's Python 3.11 run by qemu-user (`qemu-aarch64-static`), with numpy and
ai-edge-litert's aarch64 wheels from PyPI. There is no binfmt_misc here (no chroot into the tree),
so the emulator is called directly: `qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11`.
`-L` makes the guest's absolute paths (its loader, /usr/lib) resolve inside SYSROOT first and on
the host otherwise, so the guest reads the bundle and writes results where the host put them.

`setup()` builds the cache once:
  CACHE/sysroot/     debootstrap's first stage plus `dpkg -x` of every package it fetched
  CACHE/site/        the aarch64 wheels, unpacked (the guest's PYTHONPATH)
  CACHE/stamp.json   written last: what was built; without it the cache is not ready
Pinned versions: ai-edge-litert 2.x with numpy 2 crashes (SIGSEGV) under the emulator when the
interpreter is created; 1.2.0 with numpy 1.26.4 runs. tflite-runtime 2.14.0 also runs but lacks
kernels that newer TF files need.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import unquote

from ...core.errors import EdgepipeError
from .base import cache_root, device_tests_dir, timed_out

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
GUEST_PYTHON = "usr/bin/python3.11"
WHEELS = {"numpy": "1.26.4", "ai-edge-litert": "1.2.0", "flatbuffers": "25.2.10"}
PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64")
QEMU = "qemu-aarch64-static"
SETUP_HINT = "run `edgepipe emulator setup` (or `make emulator`) first"
REBUILD_HINT = "run `edgepipe emulator setup` (or `make emulator`) to rebuild it"
APT_HINT = "apt-get install qemu-user-static debootstrap"
STAMP = "stamp.json"
# Seconds of single-sample invokes that time each entry's latency_ms in the guest (the runner's
# default is 0.5): emulated latency is the emulator's speed, not a board's, and at 50 invokes of
# a few ms each it was a tenth of the runner's time on the zoo.
LATENCY_BUDGET = 0.05
# The guest's own start-up check: what the stamp records about the board.
_PROBE = ("import json, platform, numpy, ai_edge_litert.interpreter as i; "
          "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(),"
          " 'numpy': numpy.__version__, 'interpreter': i.__name__}))")
# Host variables that would make the guest load the host's Python or x86-64 libraries.
_HOST_ONLY = ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE",
              "LD_LIBRARY_PATH", "LD_PRELOAD")


def default_cache() -> Path:
    return cache_root() / "qemu-aarch64"


def _which(tool: str) -> str | None:
    # debootstrap lives in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _read_stamp(cache: Path) -> dict | None:
    try:
        stamp = json.loads((cache / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def built_with(cache_dir: Path | None = None) -> dict | None:
    """What the emulated board was built with (its stamp), or None when it is not built."""
    return _read_stamp(Path(cache_dir) if cache_dir else default_cache())


def ready(cache_dir: Path | None = None) -> str | None:
    """None when the emulated board can run here, else why not (one line, with what to do)."""
    cache = Path(cache_dir) if cache_dir else default_cache()
    if _which(QEMU) is None:
        return f"{QEMU} is not installed: {APT_HINT}"
    stamp = _read_stamp(cache)
    if stamp is None:
        return f"the arm64 sysroot is not set up in {cache}: {SETUP_HINT}"
    if stamp.get("suite") != SUITE or stamp.get("wheels") != WHEELS:
        return (f"the arm64 sysroot in {cache} was built for other versions "
                f"({stamp.get('suite')}, {stamp.get('wheels')}): {REBUILD_HINT}")
    if not (cache / "sysroot" / GUEST_PYTHON).is_file():
        return f"the arm64 sysroot in {cache} has no {GUEST_PYTHON}: {REBUILD_HINT}"
    return None


def _last_meaningful(text: str) -> str:
    """The line of a tool's output that says what went wrong: its last error line, else its
    last line; pip's config warnings ("Location ... ignored") are never it."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.startswith("WARNING")
             and not ("Location" in line and "ignored" in line)]
    errors = [line for line in lines if re.match(r"(E:|ERROR:|error:|dpkg-deb: error)", line)]
    return (errors or lines or ["(no message)"])[-1]


def _run(cmd: list, what: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a setup tool quietly; EdgepipeError with its last meaningful line when it fails."""
    try:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise EdgepipeError(f"{what} did not finish within {timeout:g} s; check the network "
                            f"and run `edgepipe emulator setup` again") from None
    if done.returncode != 0:
        raise EdgepipeError(f"{what} failed (exit {done.returncode}): "
                            f"{_last_meaningful(done.stdout + chr(10) + done.stderr)}")
    return done


def guest_env(site: Path, staging: Path | None = None) -> dict:
    """The host environment without what would leak the host's Python into the guest."""
    env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
    paths = [str(staging)] if staging else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(site)])
    # The guest sees the host's files where the sysroot has none: keep it off ~/.local.
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _guest_python(sysroot: Path) -> list[str]:
    return [_which(QEMU) or QEMU, "-L", str(sysroot), str(sysroot / GUEST_PYTHON)]


def _check_tools() -> None:
    missing = [tool for tool in (QEMU, "debootstrap", "dpkg") if _which(tool) is None]
    if missing:
        raise EdgepipeError(f"The emulated board needs {', '.join(missing)}, not found on PATH "
                            f"({os.environ.get('PATH', '')}); {APT_HINT}")
    if os.geteuid() != 0:
        raise EdgepipeError("debootstrap must run as root to build the arm64 sysroot; run "
                            "`edgepipe emulator setup` as root (or under fakeroot)")


@contextlib.contextmanager
def _locked(cache: Path, say):
    """One setup at a time per cache folder (a second one waits, then finds it ready)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another setup of {cache} to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def setup(cache_dir: Path | None = None, say=print, force: bool = False) -> Path:
    """Build the emulated board's sysroot and wheels in the cache once; returns the cache
    folder. Built in a temporary folder beside it and renamed into place when complete, so an
    interrupted setup is never taken for a ready one (the next call starts over)."""
    cache = Path(cache_dir) if cache_dir else default_cache()
    stamp = _read_stamp(cache)
    if not force and ready(cache) is None:
        say(f"the emulated arm64 board is ready in {cache} (built {stamp.get('date')})")
        return cache
    _check_tools()
    with _locked(cache, say):
        if not force and ready(cache) is None:  # another setup finished while we waited
            say(f"the emulated arm64 board is ready in {cache}")
            return cache
        for stale in cache.parent.glob(f".{cache.name}.partial-*"):
            say(f"removing an interrupted setup: {stale}")
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{cache.name}.partial-", dir=cache.parent))
        try:
            _build(work, say)
            _swap_in(work, cache)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        say(f"the emulated arm64 board is ready in {cache} "
            f"({time.monotonic() - started:.0f} s in all)")
    return cache


def _build(work: Path, say) -> None:
    sysroot, site = work / "sysroot", work / "site"

    def step(text: str):
        say(text)
        return time.monotonic()

    def done(since: float, text: str = "") -> None:
        say(f"  done in {time.monotonic() - since:.0f} s{text}")

    t = step(f"debootstrap arm64 {SUITE} (first stage) into {sysroot} from {MIRROR}")
    _run(["debootstrap", "--arch=arm64", "--variant=minbase", "--foreign", "--include=python3",
          SUITE, sysroot, MIRROR], "debootstrap", timeout=1800)
    done(t)

    # The first stage unpacks only the "required" packages; python3 and its dependencies are
    # downloaded but left as .debs, and the second stage would need to run arm64 code in a
    # chroot. Unpacking every .deb (no maintainer scripts) is enough to run python3.11.
    archives = sysroot / "var" / "cache" / "apt" / "archives"
    debs = sorted(archives.glob("*.deb"))
    t = step(f"dpkg -x {len(debs)} arm64 packages into {sysroot}")
    for deb in debs:
        _run(["dpkg", "-x", deb, sysroot], f"dpkg -x {deb.name}", timeout=600)
    # name_version_arch.deb, the epoch's colon written %3a.
    packages = dict(unquote(deb.name).split("_")[:2] for deb in debs)
    for deb in debs:  # the unpacked tree is what runs; archives and indexes only take space
        deb.unlink()
    shutil.rmtree(sysroot / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    done(t)

    t = step(f"pip download {', '.join(f'{k}=={v}' for k, v in WHEELS.items())} "
             f"(cp311 aarch64 wheels) into {site}")
    wheels = work / "wheels"
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--python-version", "3.11", "--implementation", "cp", *platforms,
          "--disable-pip-version-check", "--dest", wheels,
          *(f"{k}=={v}" for k, v in WHEELS.items())], "pip download", timeout=900)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:  # a wheel is a zip of its site-packages files
            archive.extractall(site)
    shutil.rmtree(wheels)
    done(t)

    # Debian compiles the stdlib's .pyc files in maintainer scripts, which never ran: compile
    # once here, or every emulated start compiles what it imports again (slowly).
    t = step("compile the guest's Python files (python3.11 -m compileall under the emulator)")
    guest = _guest_python(sysroot)
    _run([*guest, "-m", "compileall", "-q", sysroot / "usr/lib/python3.11", site],
         "compileall under the emulator", timeout=1800, env=guest_env(site))
    done(t)

    t = step("check: the emulated python3.11 imports numpy and ai_edge_litert")
    probe = _run([*guest, "-c", _PROBE], "the emulated python3.11", timeout=600,
                 env=guest_env(site))
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    done(t, f": {facts['machine']}, Python {facts['python']}, numpy {facts['numpy']}")
    if facts["machine"] != "aarch64":
        raise EdgepipeError(f"the emulated python3.11 reports machine {facts['machine']!r}; "
                            f"expected 'aarch64'")

    stamp = {"suite": SUITE, "arch": "arm64", "mirror": MIRROR, "wheels": WHEELS,
             "python": facts["python"], "machine": facts["machine"], "numpy": facts["numpy"],
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "debian_packages": packages}
    work.chmod(0o755)  # mkdtemp made it private; the cache is readable like any other
    (work / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")  # last: marks it complete


def _swap_in(work: Path, cache: Path) -> None:
    """Rename the finished build into place; an older cache is moved aside first, then
    removed, so the cache path only ever holds a complete build."""
    old = None
    if cache.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{cache.name}.partial-", dir=cache.parent))
        cache.rename(old / cache.name)
    work.rename(cache)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_runner(bundle_dir: Path, out_json: Path, *, target: str = "qemu-aarch64",
               timeout: float = 1800, debug: bool = False, extra_args=(),
               cache_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run `device_tests.runner` on the bundle inside the emulator; it writes `out_json` (and
    the outputs beside it) itself. Exit 0/1: results written; 2: bad input, one line on stderr.
    Output is captured unless `debug`."""
    cache = Path(cache_dir) if cache_dir else default_cache()
    why = ready(cache)
    if why:
        raise EdgepipeError(f"The {target} target cannot run: {why}")
    bundle_dir, out_json = Path(bundle_dir).resolve(), Path(out_json).resolve()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgepipe-qemu-") as staging:
        # The runner travels as the top-level package `device_tests`, as on a real board.
        package = Path(staging) / "device_tests"
        package.mkdir()
        for source in device_tests_dir().glob("*.py"):
            shutil.copy2(source, package / source.name)
        # --isolate-blas: numpy's BLAS (its SVE kernels) run in a process slows every
        # interpreter that process creates afterwards, under qemu-user (runner.blas_apart).
        cmd = [*_guest_python(cache / "sysroot"), "-m", "device_tests.runner", str(bundle_dir),
               "--out", str(out_json), "--target", target, "--save-outputs", "--isolate-blas",
               "--latency-budget", f"{LATENCY_BUDGET:g}", *extra_args]
        if debug:
            cmd.append("--debug")
        try:
            return subprocess.run(cmd, capture_output=not debug, text=True, timeout=timeout,
                                  cwd=staging, env=guest_env(cache / "site", Path(staging)))
        except subprocess.TimeoutExpired:
            raise timed_out(target, timeout) from None
