"""TFLite Micro (PyPI `tflite-micro`) as a runner runtime: the reference kernels that
microcontrollers run, on the host.

TFLM is not a TFLite interpreter with another resolver: it runs in a fixed tensor arena, takes
batch 1 only, names what it refuses on C's stderr (the exception only says "failed to allocate
tensors"), and a too-small arena can kill the process. So each model is first loaded in child
processes (tflm_probe.py): one with a generous arena, which yields TFLM's own reason when it
refuses the model and its allocation total, then a binary search for the smallest arena that
runs. Only then is the model loaded here, in exactly that arena, for the parity run.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

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


class TflmRuntime:
    """The runner's view of TFLite Micro: `load()` finds the smallest arena, then loads."""

    name = "tflite_micro"
    kernels = "reference"
    integer_only = True  # a microcontroller's int8 build: no float kernels beside (interpreters)

    def __init__(self, module, version: str):
        self._runtime = module
        self.version = version

    @property
    def label(self) -> str:
        return f"tflite_micro {self.version}"

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "kernels": self.kernels}

    def _probe(self, path: str, arena: int, allocations: bool = False):
        cmd = [sys.executable, PROBE, path, str(arena)] + (["--allocations"] if allocations
                                                            else [])
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{self.label} did not finish loading and invoking the model "
                             f"within {PROBE_TIMEOUT} s (arena {arena} bytes)") from None

    def smallest_arena(self, data: bytes) -> tuple:
        """(smallest arena in bytes that runs the model, child processes used)."""
        handle, path = tempfile.mkstemp(suffix=".tflite")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            generous = max(8 << 20, 20 * len(data))
            first = self._probe(path, generous, allocations=True)
            if first.returncode != 0:
                why = refusal(first.stderr)
                if why:
                    raise KernelMissing(why)
                raise ModelError(f"{self.label} failed to run the model with a {generous}-byte "
                                 f"arena (exit {first.returncode}): {_probe_failure(first)}")
            found = _TOTAL.search(first.stderr)
            guess = int(found.group(1)) if found else generous
            probes = [1]

            def runs(size: int) -> bool:
                probes[0] += 1
                return self._probe(path, size).returncode == 0

            # The allocation total is close to, not always at, the minimum: widen around it.
            hi, step = guess, ALIGN * 16
            while not runs(hi):
                hi = min(generous, hi + step)
                step *= 2
            lo = max(0, guess - ALIGN * 64)
            if lo and runs(lo):
                lo = 0
            while hi - lo > ALIGN:
                mid = (lo + hi) // 2
                if runs(mid):
                    hi = mid
                else:
                    lo = mid
            return hi, probes[0]
        finally:
            os.unlink(path)

    def load(self, data: bytes) -> LoadedModel:
        arena, probes = self.smallest_arena(data)
        try:
            interpreter = self._runtime.Interpreter.from_bytes(data, arena_size=arena)
        except Exception as exc:
            raise ModelError(f"{self.label} failed to load the model in its {arena}-byte arena "
                             f"here although a child process ran it: {exc}") from None
        model = LoadedModel(_Adapter(interpreter), self.label)
        model.facts = {"arena_bytes": arena, "arena_probes": probes}
        return model

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
