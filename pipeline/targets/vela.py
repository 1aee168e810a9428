"""Arm's Vela compiler, run on one TFLite file: its figures for an Ethos-U NPU (ethos_u.py
reports them for every variant of a bundle). Vela (PyPI `ethos-u-vela`, the `npu` extra)
compiles a variant for an Ethos-U NPU and estimates cycles and memory; we report which operators
stay on the CPU, SRAM and flash use and cycles.

Vela runs in a child process: its compiler core is native code, and a crash must not take the
pipeline down. Its figures come from its machine-readable outputs, not its printed summary:
- `<name>_summary_<system config>.csv`: memory (in KiB), cycles, clock, configuration names;
- `<name>_vela.tflite`: the compiled model, in which the NPU's share is custom `ethos-u` ops and
  every operator left on the CPU is still there under its TFLite name. Counting those against
  the input's operators gives NPU/CPU counts in the model's own operators (Vela's printed
  "NPU operators" counts its internal operators: one SOFTMAX becomes ~30 of them).
The only prose read is Vela's "Reason:" line per CPU operator, kept as a hint.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ...converters.tflite_file import read_tflite_file
from ...core.errors import EdgepipeError

# Vela 5.2.0's --accelerator-config choices: checked before a run, so that a typo is one error
# instead of one per entry.
ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256",
                "ethos-u65-256", "ethos-u65-512", "ethos-u85-128", "ethos-u85-256",
                "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")
INSTALL_HINT = "pip install 'edgepipe[npu]' (or: pip install ethos-u-vela)"
_REASON = re.compile(r"operator: (\w+), ofm: .*\n\s*Reason: (.+)")
_KIB = 1024  # the summary CSV gives memory in KiB


def vela_command() -> list[str] | None:
    """How to start Vela: the `vela` of this environment first (the one pyproject installs),
    then one on PATH, then the module; None when it is not installed."""
    found = shutil.which("vela", path=str(Path(sys.executable).parent)) or shutil.which("vela")
    if found:
        return [found]
    try:
        if importlib.util.find_spec("ethosu.vela") is not None:
            return [sys.executable, "-m", "ethosu.vela"]
    except ImportError:  # no `ethosu` package at all
        pass
    return None


def vela_available() -> bool:
    return vela_command() is not None


@functools.lru_cache(maxsize=4)
def _version(cmd: tuple[str, ...]) -> str:
    try:
        done = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # the compile that follows says what is wrong, in one line
    return done.stdout.strip() or "unknown"


def _required_command() -> list[str]:
    cmd = vela_command()
    if cmd is None:
        raise EdgepipeError(f"Vela (Arm's Ethos-U compiler) is not installed; {INSTALL_HINT}")
    return cmd


def vela_version() -> str:
    return _version(tuple(_required_command()))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def vela_report(tflite: Path, workdir: Path, accelerator: str = "ethos-u55-256",
                timeout: float = 300, *, system_config: str | None = None,
                memory_mode: str | None = None) -> dict:
    """Compile `tflite` with Vela into a fresh folder under `workdir` and return its figures.

    `system_config`/`memory_mode` name sections of Vela's Arm/vela.ini; by default Vela picks
    the accelerator's default (U55: Ethos_U55_High_End_Embedded, Shared_Sram). Cycles and time
    cover the NPU part of one inference (batch 1); CPU operators are not estimated.
    Raises EdgepipeError (one line) when Vela is missing, fails or the file is not a TFLite model.
    """
    started = time.perf_counter()
    tflite = Path(tflite)
    model = read_tflite_file(tflite)  # a corrupt file is one TFLiteFormatError line, not Vela's
    cmd = _required_command()
    out = Path(tempfile.mkdtemp(prefix=f"vela-{tflite.stem}-", dir=workdir))
    args = [*cmd, str(tflite), "--output-dir", str(out), "--accelerator-config", accelerator]
    if system_config:
        args += ["--system-config", system_config]
    if memory_mode:
        args += ["--memory-mode", memory_mode]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgepipeError(f"vela did not finish within {timeout:g} s on {tflite} "
                            f"({accelerator}); raise the timeout or try a smaller model") from None
    summaries = sorted(out.glob(f"{tflite.stem}_summary_*.csv"))
    compiled = out / f"{tflite.stem}_vela.tflite"
    if done.returncode != 0 or not summaries or not compiled.is_file():
        why = (f"exit {done.returncode}" if done.returncode >= 0
               else f"killed by signal {-done.returncode}")
        raise EdgepipeError(
            f"vela failed on {tflite} for {accelerator} ({why}): "
            f"{_last_line(done.stderr or done.stdout)}; run `vela {tflite}` to see its full log")
    with open(summaries[0], newline="") as f:
        row = next(csv.DictReader(f))
    cpu = Counter(op.name for op in read_tflite_file(compiled).operators
                  if not (op.kind == "custom" and op.name == "ethos-u"))
    reasons: dict[str, list[str]] = {}
    for op, reason in _REASON.findall(done.stdout):
        if reason.strip() not in reasons.setdefault(op, []):
            reasons[op].append(reason.strip())
    # Weights (and the command stream) live in the memory the memory mode names: off-chip
    # flash on U55 (Shared_Sram), DRAM on U65/U85 by default.
    weights_area = row["weights_storage_area"]
    area_column = weights_area.lower().replace("-", "_").replace(" ", "_") + "_memory_used"
    return {
        "accelerator": accelerator,
        "vela_version": _version(tuple(cmd)),
        "npu_ops": len(model.operators) - sum(cpu.values()),
        "cpu_ops": sum(cpu.values()),
        "cpu_fallback": [{"op": op, "count": n, "reasons": reasons.get(op, [])}
                         for op, n in sorted(cpu.items(), key=lambda kv: (-kv[1], kv[0]))],
        "sram_bytes": round(float(row["sram_memory_used"]) * _KIB),
        "flash_bytes": round(float(row.get(area_column) or 0) * _KIB),
        "weights_area": weights_area,
        "cycles": int(float(row["cycles_total"])),
        "inference_ms": float(row["inference_time"]) * 1000,
        "clock_mhz": float(row["core_clock"]) / 1e6,
        "macs": int(float(row["nn_macs"])),
        "system_config": row["system_config"],
        "memory_mode": row["memory_mode"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def summary_reason(report: dict) -> str:
    """One line for the results record, e.g. "report only: 12/14 ops on the NPU; CPU: ..."."""
    total = report["npu_ops"] + report["cpu_ops"]
    text = f"report only: {report['npu_ops']}/{total} ops on the NPU"
    if report["cpu_fallback"]:
        text += "; CPU: " + ", ".join(f"{c['op']} x{c['count']}" for c in report["cpu_fallback"])
    return (f"{text}; ~{report['cycles']} NPU cycles ({report['inference_ms']:.4g} ms at "
            f"{report['clock_mhz']:g} MHz), SRAM {report['sram_bytes']} B, "
            f"{report['weights_area']} {report['flash_bytes']} B")
