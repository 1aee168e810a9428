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
from .op_audit import OP_SETS, audit, batch_bound
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

    @property
    def tag(self) -> str:
        """What follows the model's name in its files and its entry id: a given file's label,
        a repair's tag, a batch-1 export's `<mode>.batch1`, else the mode."""
        if self.record.get("given"):
            return self.record["given"]["label"]
        made = self.record.get("repair") or self.record.get("fixed_batch")
        return made["tag"] if made else self.mode.value


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
                  zoo: bool = False, batch_one_for: str | None = None) -> list[Variant]:
    """`check_data`: inputs on which the float32 variant must reproduce Keras' forward.
    `no_representative`: without `representative`, what to do to get the integer modes (they
    are recorded as not converted; the float modes still are). `zoo`: the model is one of
    edgepipe's own (its activations' limits are documented outcomes: `explain_failure`).
    `batch_one_for`: an op set (tflm, when it is a target); a variant whose graph computes the
    dynamic batch's shapes with ops that op set refuses or is not known to run also gets a
    batch-1 variant, `<mode>.batch1`: exported with static shapes, which removes them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    convert = _Converter(model, name, out_dir, representative, representative_source, debug,
                         no_representative, zoo)
    with temporary_export(model, debug) as saved_model:
        gradients = saved_model_gradients(saved_model)
        results = [convert(saved_model, mode, gradients, check_data, check_source)
                   for mode in modes]
    bound = {v.mode: ops for v in results if v.path is not None and v.record.get("audit")
             and (ops := batch_bound(v.record["audit"], batch_one_for))}
    if bound:
        with temporary_export(model, debug, batch=1) as saved_model:
            results += [convert(saved_model, mode, gradients, removes=ops)
                         for mode, ops in bound.items()]
    return results


@dataclass(frozen=True)
class _Converter:
    """One variant of the model from a SavedModel: converted, audited, recorded, saved."""

    model: object
    name: str
    out_dir: Path
    representative: object
    representative_source: str
    debug: bool
    no_representative: str
    zoo: bool

    def __call__(self, saved_model: Path, mode: QuantMode, gradients: list, check_data=None,
                 check_source: str = "", removes: list | None = None) -> Variant:
        """`removes`: this is the batch-1 export, made to remove these dynamic-batch ops."""
        name, representative = self.name, self.representative
        tag = mode.batch_one_tag if removes is not None else mode.value
        base = {"schema_version": RECORD_SCHEMA_VERSION, "model": name, "mode": mode.value,
                "converter": {**converter_options(mode),
                              "representative_samples": (
                                  representative_count(representative)
                                  if mode.needs_representative_data
                                  and representative is not None else 0),
                              "representative_source": (self.representative_source if
                                                        mode.needs_representative_data
                                                        else "")},
                "versions": versions()}
        if removes is not None:
            base["fixed_batch"] = {"batch": 1, "tag": tag, "removes": removes}
        tflite_path = self.out_dir / f"{name}.{tag}.tflite"
        try:
            flatbuffer, seconds = convert_saved_model(
                saved_model, mode, by_input_name(self.model, representative),
                [layer.name for layer in self.model.layers], self.debug, self.zoo)
        except ConversionFailure as f:
            if representative is None and mode.needs_representative_data:
                f.suggestion = self.no_representative
            return self._unmade(base, tflite_path, mode, f.status, str(f),
                                {"ops": list(f.ops), "layers": list(f.layers)})
        parsed = read_tflite(flatbuffer, source=tflite_path.name)
        report = audit(parsed, mode, op_sets=OP_SETS, source=tflite_path.name)
        left = [op.name for op in report.ops if op.dynamic_batch]
        if removes is not None and left:
            return self._unmade(base, tflite_path, mode, ConversionStatus.UNSUPPORTED,
                                f"unsupported: exported with batch 1, the model still computes "
                                f"shapes at run time ({', '.join(dict.fromkeys(left))}): "
                                "another of its dimensions is dynamic")
        record = {**base, **file_record(flatbuffer, parsed, report, tflite_path),
                  "seconds": round(seconds, 3),
                  "custom_gradients": {"saved_model": gradients,
                                       "tflite_subgraphs": len(parsed.subgraphs),
                                       "dropped": report.ok and len(parsed.subgraphs) == 1}}
        if mode is QuantMode.FLOAT32 and check_data is not None:
            named = by_input_name(self.model, check_data)  # Keras and the .tflite alike
            keras_out = np.asarray(self.model(named, training=False))
            check = forward_equality(keras_out, run_tflite(flatbuffer, named), check_source)
            record["forward_check"] = check
            if not check["ok"]:
                record["status"] = ConversionStatus.FAILED
                record["reason"] = (f"float32 forward differs from Keras: max relative "
                                    f"error {check['max_rel_error']:.3g} > {check['bound']:g}")
        save_variant(tflite_path, flatbuffer, record)
        return Variant(name, mode, record["status"], record["reason"], record, tflite_path)

    def _unmade(self, base: dict, tflite_path: Path, mode: QuantMode, status, reason: str,
                extra: dict | None = None) -> Variant:
        """A variant that could not be made: its record alone, no .tflite (never a stale one
        left beside it)."""
        tflite_path.unlink(missing_ok=True)
        record = {**base, "status": status, "reason": reason, **(extra or {})}
        write_json(tflite_path.with_suffix(".json"), record)
        return Variant(self.name, mode, status, reason, record)
