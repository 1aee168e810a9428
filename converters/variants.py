"""Convert a `.keras` model into every requested mode, audit each variant, and record it.

Writes `<model>.<mode>.tflite` and `<model>.<mode>.json` (the conversion record) per mode. A
mode TFLite cannot produce for this model gets a record with status `unsupported` (op named)
or `failed` and no `.tflite`; the other modes go on. A float op left inside an integer variant
is a finding (`findings` in the record): the variant is converted and runs where float kernels
exist.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.files import atomic_path, write_json
from ..core.versions import versions
from ..device_tests.schema import ConversionStatus
from .convert import (
    ConversionFailure,
    convert_saved_model,
    converter_options,
    saved_model_gradients,
    temporary_export,
)
from .forward_check import forward_equality, run_tflite
from .modes import QuantMode
from .op_audit import OP_SETS, audit
from .representative import by_input_name, representative_count
from .tflite_file import read_tflite

RECORD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Variant:
    model: str
    mode: QuantMode
    status: ConversionStatus
    reason: str
    record: dict
    path: Path | None = None


def tensor_info(t) -> dict:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
            "scale": list(t.scales), "zero_point": list(t.zero_points)}


def file_record(flatbuffer: bytes, parsed, report, tflite_path: Path) -> dict:
    """What a variant's record says of its file, converted here or given by the user: the
    status its audit gives, its name, size and hash, its input and output tensors, the audit."""
    return {"status": ConversionStatus.CONVERTED if report.ok else ConversionStatus.FAILED,
            "reason": "; ".join(report.problems),
            "file": tflite_path.name, "bytes": len(flatbuffer),
            "sha256": hashlib.sha256(flatbuffer).hexdigest(),
            "inputs": [tensor_info(t) for t in parsed.input_tensors()],
            "outputs": [tensor_info(t) for t in parsed.output_tensors()],
            "audit": report.as_dict(),
            "findings": [f.as_dict() for f in report.findings]}


def save_variant(tflite_path: Path, flatbuffer: bytes, record: dict) -> None:
    """The .tflite, then its record beside it (`<stem>.json`): a record names a whole file."""
    with atomic_path(tflite_path) as tmp:
        tmp.write_bytes(flatbuffer)
    write_json(tflite_path.with_suffix(".json"), record)


def convert_model(model, name: str, modes, out_dir: Path, representative=None,
                  representative_source: str = "", check_data=None, check_source: str = "",
                  debug: bool = False, no_representative: str = "",
                  zoo: bool = False) -> list[Variant]:
    """`check_data`: inputs on which the float32 variant must reproduce Keras' forward.
    `no_representative`: without `representative`, what to do to get the integer modes (they
    are recorded as not converted; the float modes still are). `zoo`: the model is one of
    edgepipe's own (its activations' limits are documented outcomes: `explain_failure`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layer_names = [layer.name for layer in model.layers]
    results = []
    with temporary_export(model, debug) as saved_model:
        gradients = saved_model_gradients(saved_model)
        for mode in modes:
            base = {"schema_version": RECORD_SCHEMA_VERSION, "model": name, "mode": mode.value,
                    "converter": {**converter_options(mode),
                                  "representative_samples": (
                                      representative_count(representative)
                                      if mode.needs_representative_data
                                      and representative is not None else 0),
                                  "representative_source": (representative_source if
                                                            mode.needs_representative_data
                                                            else "")},
                    "versions": versions()}
            tflite_path = out_dir / f"{name}.{mode.value}.tflite"
            try:
                flatbuffer, seconds = convert_saved_model(
                    saved_model, mode, by_input_name(model, representative), layer_names, debug,
                    zoo)
            except ConversionFailure as f:
                if representative is None and mode.needs_representative_data:
                    f.suggestion = no_representative
                tflite_path.unlink(missing_ok=True)  # never leave a stale variant beside
                record = {**base, "status": f.status, "reason": str(f), "ops": list(f.ops),
                          "layers": list(f.layers)}
                write_json(out_dir / f"{name}.{mode.value}.json", record)
                results.append(Variant(name, mode, f.status, str(f), record))
                continue
            parsed = read_tflite(flatbuffer, source=tflite_path.name)
            report = audit(parsed, mode, op_sets=OP_SETS, source=tflite_path.name)
            record = {**base, **file_record(flatbuffer, parsed, report, tflite_path),
                      "seconds": round(seconds, 3),
                      "custom_gradients": {"saved_model": gradients,
                                           "tflite_subgraphs": len(parsed.subgraphs),
                                           "dropped": report.ok and len(parsed.subgraphs) == 1}}
            if mode is QuantMode.FLOAT32 and check_data is not None:
                named = by_input_name(model, check_data)  # Keras and the .tflite alike
                keras_out = np.asarray(model(named, training=False))
                check = forward_equality(keras_out, run_tflite(flatbuffer, named), check_source)
                record["forward_check"] = check
                if not check["ok"]:
                    record["status"] = ConversionStatus.FAILED
                    record["reason"] = (f"float32 forward differs from Keras: max relative "
                                        f"error {check['max_rel_error']:.3g} > {check['bound']:g}")
            save_variant(tflite_path, flatbuffer, record)
            results.append(Variant(name, mode, record["status"], record["reason"], record,
                                   tflite_path))
    return results
