"""TFLite Micro (PyPI `tflite-micro`) as a runner runtime: the reference kernels that
microcontrollers run, on the host.

TFLM is not a TFLite interpreter with another resolver: it runs in a fixed tensor arena, takes
batch 1 only, names what it refuses on C's stderr (the exception only says "failed to allocate
tensors"), and a too-small arena can kill the process. So each model is first loaded in child
processes (tflm_probe.py): one with a generous arena, which yields TFLM's own reason when it
refuses the model and its allocation total, then a binary search for the smallest arena that
runs. Only then is the model loaded here, in exactly that arena, for the parity run.

The probes are forked by one probe server per process (`tflm_probe.py --serve`, started on the
first search), which has imported numpy and tflite-micro once: a new Python per probe cost
~0.3 s for milliseconds of TFLM work, ~95% of the target's time on the zoo (issue 17). A
model's arena is kept by its sha256 for the runtime's life: the same bytes are not searched
twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .bundle import one_line
from .interpreters import (
    KernelMissing,
    LoadedModel,
    ModelError,
    PreserveUnavailable,
    Preserving,
    _module_version,
)
from .isolation import last_words, signal_name

PROBE = str(Path(__file__).with_name("tflm_probe.py"))
PROBE_TIMEOUT = 120
ALIGN = 16  # TFLM aligns arena allocations to 16 bytes: search no finer than that
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_NO_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_NODE = re.compile(r"Node ([A-Z0-9_]+) \(number \d+\) failed to (prepare|invoke)")
_STAGE = re.compile(r"^stage: (.+)$", re.MULTILINE)  # tflm_probe.py's steps, on its stdout


def import_tflm():
    """(tflite_micro runtime module, version); ImportError when absent."""
    import tflite_micro
    from tflite_micro.python.tflite_micro import runtime

    return runtime, _module_version(tflite_micro, ("tflite-micro", "tflite_micro"))


def refusal(stderr: str) -> str | None:
    """TFLM's reason for refusing a model, from its C stderr, or None."""
    found = _NO_OP.search(stderr)
    if found:
        return f"TFLite Micro has no kernel for {found.group(1)}"
    found = _NODE.search(stderr)
    if found:
        lines = stderr[:found.start()].strip().splitlines()
        why = lines[-1].strip() if lines else ""
        why = re.sub(r"^\S*tensorflow/lite/micro/\S+\s*", "", why)  # drop the source path
        return f"TFLite Micro's {found.group(1)} kernel refuses this model ({why})"
    return None


def search_arena(runs, guess: int, generous: int) -> int:
    """The smallest arena that runs the model, to ALIGN bytes: `runs(size)` says whether it
    runs in a `size`-byte arena (it runs in `generous`); `guess` is TFLM's allocation total.

    The total is close to, not always at, the minimum: widen above it until the model runs,
    then bisect down from 1 KB below it to ALIGN bytes. That bisection is the one edgepipe has
    always done, so the arenas found stay what they were; but running is monotonic in the
    size (a larger arena never fails where a smaller one ran), so a size whose answer the
    probes before imply is not probed, and as the total is most often exactly the minimum,
    one probe a byte below it (when it runs) settles the whole bisection."""
    known = [generous, -1]  # the smallest size known to run, the largest known to fail

    def fits(size: int) -> bool:
        if size >= known[0]:
            return True
        if size <= known[1]:
            return False
        if runs(size):
            known[0] = size
            return True
        known[1] = size
        return False

    hi, step = guess, ALIGN * 16
    if fits(hi) and hi > 0:
        fits(hi - 1)
    while not fits(hi):
        hi = min(generous, hi + step)
        step *= 2
    lo = max(0, guess - ALIGN * 64)
    if lo and fits(lo):
        lo = 0
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


class TflmRuntime:
    """The runner's view of TFLite Micro: `load()` finds the smallest arena, then loads."""

    name = "tflite_micro"
    kernels = "reference"
    integer_only = True  # a microcontroller's int8 build: no float kernels beside (interpreters)

    def __init__(self, module, version: str):
        self._runtime = module
        self.version = version
        self.probe_timeout = PROBE_TIMEOUT  # seconds, per probe
        self._server = None  # started by the first search in this process
        # sha256 of a model's bytes -> (its smallest arena, TFLM's recorded allocation total)
        self._arenas: dict = {}

    @property
    def label(self) -> str:
        return f"tflite_micro {self.version}"

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "kernels": self.kernels}

    def _probe(self, arena: int, allocations: bool = False) -> _Probed:
        done = self._server.probe(arena, allocations, self.probe_timeout)
        if done is None:
            raise ModelError(f"{self.label} did not finish loading and invoking the model "
                             f"within {self.probe_timeout:g} s (arena {arena} bytes)")
        return done

    def smallest_arena(self, data: bytes) -> tuple:
        """(smallest arena in bytes that runs the model, probes used, the allocation total
        TFLM's recording allocator reported in a generous arena, or None); probes 0 when this
        runtime found it before for the same bytes."""
        key = hashlib.sha256(data).hexdigest()
        if key in self._arenas:
            arena, recorded = self._arenas[key]
            return arena, 0, recorded
        if self._server is None or not self._server.usable():
            self._server = _ProbeServer()
        try:
            arena, probes, recorded = self._search(data)
        except _ServerGone as exc:
            self._server = None  # the next model starts a new one
            raise ModelError(f"{self.label}'s probe server ended unexpectedly: {exc}") from None
        self._arenas[key] = (arena, recorded)
        return arena, probes, recorded

    def _search(self, data: bytes) -> tuple:
        self._server.send_model(data)
        generous = max(8 << 20, 20 * len(data))
        first = self._probe(generous, allocations=True)
        if first.returncode != 0:
            why = refusal(first.stderr)
            if why:
                raise KernelMissing(why)
            raise ModelError(f"{self.label} failed to run the model with a {generous}-byte "
                             f"arena (exit {first.returncode}): {_probe_failure(first)}")
        found = _TOTAL.search(first.stderr)
        recorded = int(found.group(1)) if found else None
        probes = [1]

        def runs(size: int) -> bool:
            probes[0] += 1
            return self._probe(size).returncode == 0

        return search_arena(runs, recorded or generous, generous), probes[0], recorded

    def load(self, data: bytes) -> LoadedModel:
        arena, probes, recorded = self.smallest_arena(data)
        try:
            interpreter = self._runtime.Interpreter.from_bytes(data, arena_size=arena)
        except Exception as exc:
            raise ModelError(f"{self.label} failed to load the model in its {arena}-byte arena "
                             f"here although a child process ran it: {exc}") from None
        model = LoadedModel(_Adapter(interpreter), self.label)
        model.facts = {"arena_bytes": arena, "arena_probes": probes}
        if recorded is not None:  # what TFLM's recording allocator reported: a planning figure
            model.facts["arena_recorded_bytes"] = recorded
        return model

    def compressed(self, data: bytes, inputs, outputs: np.ndarray) -> tuple[dict, bytes | None]:
        """(the record's `metrics.compressed`, the compressed model or None): the model after
        TFLite Micro's LUT compression (tflm_compression.py) where it applies, run on the same
        inputs; `max_abs_vs_uncompressed` must be 0, the compression being lossless. Never
        raises: a compressor or a load that fails is the block's `error`."""
        from .tflm_compression import compress

        try:
            packed, block = compress(data)
        except Exception as exc:  # the compressor's own error, whatever its kind
            return {"applies": False, "error": f"the compressor failed: {one_line(exc)}"}, None
        if packed is None:
            return block, None
        try:
            model = self.load(packed)
            got, _ = model.run(inputs)
        except Exception as exc:
            block["error"] = f"{self.label} did not run the compressed model: {one_line(exc)}"
            return block, packed
        got = got.reshape(outputs.shape)
        block["max_abs_vs_uncompressed"] = float(np.max(np.abs(
            got.astype(np.float64) - outputs.astype(np.float64)))) if outputs.size else 0.0
        block["arena_bytes"] = model.facts["arena_bytes"]  # DECODE expands into the arena
        return block, packed

    def load_preserving(self, data: bytes) -> Preserving:
        """A second interpreter in TFLM's preserve-all-tensors mode (`GetTensor` works only
        there; it records no allocations, so it is not the arena-measuring one above). Every
        tensor then has its own place in the arena: it gets a generous one, no search."""
        config = getattr(getattr(self._runtime, "InterpreterConfig", None),
                         "kPreserveAllTensors", None)
        if config is None:
            raise PreserveUnavailable(f"{self.label} cannot preserve intermediate tensors (its "
                                      f"Python runtime has no InterpreterConfig."
                                      f"kPreserveAllTensors)")
        arena = max(16 << 20, 40 * len(data))
        try:
            with _quiet_stderr():
                interpreter = self._runtime.Interpreter.from_bytes(
                    data, arena_size=arena, intrepreter_config=config)
        except Exception as exc:
            raise ModelError(f"{self.label} failed to load the model with all tensors preserved "
                             f"in a {arena}-byte arena: {exc}") from None

        def read(index: int) -> np.ndarray:
            return np.array(interpreter.GetTensor(index, 0)["tensor_data"])

        return Preserving(LoadedModel(_Adapter(interpreter), self.label), read, None,
                          f"reference (TFLite Micro preserve-all-tensors mode, {arena}-byte "
                          f"arena)")


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to fd 2 for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _probe_failure(done) -> str:
    """Why a probe failed, one line: its last line on stderr; for one killed by a signal
    (an abort() in a kernel's check prints nothing), the signal, the step it was in, and its
    last words."""
    if done.returncode >= 0:
        return _last_line(done.stderr)
    number = -done.returncode
    steps = _STAGE.findall(done.stdout or "")
    step = f" while {steps[-1]}" if steps else ""
    return (f"killed by signal {number} ({signal_name(number)}){step}"
            f"{last_words(done.stderr or '', '; it printed nothing on stderr')}")


class _Probed(NamedTuple):
    """How one probe ended, as subprocess.run would say it (returncode -N: signal N)."""

    returncode: int
    stdout: str
    stderr: str


class _ServerGone(Exception):
    """The probe server itself ended or stopped answering (not a probe: it forks those)."""


class _ProbeServer:
    """`tflm_probe.py --serve` in a child process of this one, which forks a child of its own
    for each probe (the protocol is in tflm_probe.py's docstring)."""

    SLACK = 30.0  # seconds past a probe's timeout before the server itself counts as hung

    def __init__(self):
        self.owner = os.getpid()
        self._log = tempfile.TemporaryFile()  # the server's own stderr, for when it dies
        self._process = subprocess.Popen([sys.executable, PROBE, "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log)
        self._buffer = b""
        weakref.finalize(self, _stop_server, self._process, self.owner)

    def usable(self) -> bool:
        """Whether this process started it (a fork holds a copy of the object, not the
        server) and it still runs."""
        return self.owner == os.getpid() and self._process.poll() is None

    def _send(self, payload: bytes) -> None:
        try:
            self._process.stdin.write(payload)
            self._process.stdin.flush()
        except OSError:  # a broken pipe: it is gone
            raise self._gone("it ended") from None

    def send_model(self, data: bytes) -> None:
        """The model the next probes load."""
        self._send(json.dumps({"bytes": len(data)}).encode() + b"\n" + data)

    def probe(self, arena: int, allocations: bool, timeout: float) -> _Probed | None:
        """How the probe ended; None when it ran past `timeout` seconds (it was killed)."""
        self._send(json.dumps({"arena": arena, "allocations": allocations,
                               "timeout": timeout}).encode() + b"\n")
        deadline = time.monotonic() + timeout + self.SLACK
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise self._gone(f"no answer within {timeout + self.SLACK:g} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._gone("it ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = json.loads(line)
        if answer["timed_out"]:
            return None
        return _Probed(answer["returncode"], answer["stdout"], answer["stderr"])

    def _gone(self, why: str) -> _ServerGone:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._log.seek(0)
        said = self._log.read().decode("utf-8", errors="replace")
        return _ServerGone(f"{why} ({_describe_exit(self._process.returncode)}): "
                           f"{_last_line(said)}")


def _stop_server(process, owner: int) -> None:
    """End a probe server: EOF on its stdin ends it; a kill if it does not. Only the process
    that started it may (a fork holds a copy of the object, not the server)."""
    if os.getpid() != owner:
        return
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode} ({signal_name(-returncode)})"
    return f"exit {returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


class _Adapter:
    """TFLM's interpreter behind the few TFLite-interpreter methods LoadedModel calls.

    The batch is fixed at 1 (TFLM runs a -1 batch only as 1), so LoadedModel runs per sample."""

    def __init__(self, interpreter):
        self._interpreter = interpreter
        # Fixed for TFLM's life (no resizing): read once, not on every per-sample invoke.
        self._inputs = self._all(interpreter.get_input_details)
        self._outputs = self._all(interpreter.get_output_details)

    @staticmethod
    def _details(raw: dict, index: int) -> dict:
        quant = raw.get("quantization_parameters") or {}
        scales, zero_points = quant.get("scales", []), quant.get("zero_points", [])
        shape = np.array([max(1, int(d)) for d in raw["shape"]], dtype=np.int32)
        return {"index": index, "dtype": raw["dtype"], "shape": shape,
                "shape_signature": shape.copy(),
                "quantization": (float(scales[0]) if len(scales) else 0.0,
                                 int(zero_points[0]) if len(zero_points) else 0)}

    def _all(self, getter) -> list:
        found, index = [], 0
        while True:
            try:
                with _quiet_stderr():  # TFLM prints "index out of range" before raising
                    found.append(self._details(getter(index), index))
            except (IndexError, RuntimeError):
                return found
            index += 1

    def get_input_details(self) -> list:
        return [dict(d) for d in self._inputs]

    def get_output_details(self) -> list:
        return [dict(d) for d in self._outputs]

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self._interpreter.set_input(value, index)

    def invoke(self) -> None:
        self._interpreter.invoke()

    def get_tensor(self, index: int) -> np.ndarray:
        return np.array(self._interpreter.get_output(index))
