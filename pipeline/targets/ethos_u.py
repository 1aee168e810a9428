"""The `ethos-u` target: what Arm's Vela compiler makes of the int8 and int16x8 variants.

Report only: there is no Ethos-U simulator here, so nothing runs and nothing is compared. Each
integer variant is compiled by Vela (vela.py); its figures become the entry's metrics and a
one-line reason, in a results file like every other target's.
"""

from __future__ import annotations

import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

from ...converters.modes import QuantMode
from ...core.errors import EdgepipeError, unknown_name
from ...device_tests.schema import ResultStatus, base_record, not_run, results_document
from . import vela
from .base import Target

INTEGER_MODES = tuple(mode.value for mode in QuantMode if mode.integer_only)


class EthosU(Target):
    name = "ethos-u"
    description = ("Arm Ethos-U NPU: Vela's compile report (operators, memory, cycles; "
                   "no numerics)")

    def availability(self):
        return None if vela.vela_available() else f"Vela is not installed: {vela.INSTALL_HINT}"

    def sessions(self, workers):
        return 1  # Vela is quick

    def stage_key(self, options):
        return options.accelerator

    def _run(self, run_dir, out_json, options, only, debug):
        run_vela(run_dir, out_json, accelerator=options.accelerator, target=self.name,
                 timeout=options.timeout, only=only)
        return subprocess.CompletedProcess([], 0, "", "")


TARGET = EthosU()


def run_vela(bundle_dir: Path, out_json: Path, *, accelerator: str = "ethos-u55-256",
             target: str = "ethos-u", timeout: float = 300, only=None) -> dict:
    """Compile every int8/int16x8 variant of the bundle with Vela and write a results document
    (docs/bundle.md schema) to `out_json`; return it. Each tflite is verified against its
    sha256 and Vela reads that verified copy. One entry's problem is that entry's error;
    an unusable bundle, an unknown accelerator or a missing Vela raises EdgepipeError.
    `timeout`: seconds per variant; `only`: these entry ids (default: all)."""
    # Here, not at the top: listing the targets must not load numpy.
    from ...device_tests.bundle import BundleError, load_bundle, one_line
    from ...device_tests.runner import integer_only_refusal, write_json_atomic

    started = time.perf_counter()
    if accelerator not in vela.ACCELERATORS:
        raise unknown_name("accelerator", accelerator, vela.ACCELERATORS)
    try:
        bundle = load_bundle(bundle_dir)
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    version = vela.vela_version()
    results = []
    with tempfile.TemporaryDirectory(prefix="edgepipe-vela-") as work:
        for entry in bundle.entries:
            if only is not None and entry["id"] not in only:
                continue
            entry_started = time.perf_counter()
            record = not_run(entry, target)
            # The NPU runs integer models integer-only: a float op inside one is unsupported.
            refusal = integer_only_refusal(entry, target)
            if record is None and entry.get("mode") not in INTEGER_MODES:
                record = base_record(entry, target)
                record["status"] = ResultStatus.UNSUPPORTED
                record["reason"] = "Ethos-U runs int8 and int16x8 models only"
            elif record is None and refusal:
                record = base_record(entry, target)
                record["status"], record["reason"] = ResultStatus.UNSUPPORTED, refusal
            elif record is None:
                record = base_record(entry, target)
                try:
                    data = bundle.read(entry.get("tflite"), entry.get("sha256"),
                                       f"entry {entry['id']} tflite")
                    folder = Path(work) / entry["id"]
                    folder.mkdir()
                    copy = folder / Path(entry["tflite"]).name
                    copy.write_bytes(data)
                    report = vela.vela_report(copy, folder, accelerator, timeout)
                    record.update(status=ResultStatus.PASS, reason=vela.summary_reason(report),
                                  metrics={"npu": report})
                except Exception as exc:  # one entry's failure must not stop the others
                    record["reason"] = one_line(exc)
            record["seconds"] = round(time.perf_counter() - entry_started, 4)
            results.append(record)
    document = results_document(
        target, bundle.manifest_sha256, results,
        runtime={"name": "vela", "version": version, "kernels": accelerator},
        platform={"machine": platform.machine(), "system": platform.system(),
                  "python": platform.python_version(), "numpy": metadata.version("numpy"),
                  "device": "none: Vela's compile-time estimate on this host"},
        seconds=time.perf_counter() - started)
    write_json_atomic(document, out_json)
    return document

