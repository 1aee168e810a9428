"""`edgepipe check PATH`: the op audit of a `.tflite` (no TensorFlow) or of a `.keras` model."""

import tempfile
from pathlib import Path

from ..converters.modes import QuantMode
from ..converters.op_audit import TARGETS, audit
from ..converters.tflite_file import read_tflite_file
from ..models.errors import unknown_name
from ..models.files import sha256_file


def parse_targets(target: str | None) -> tuple[str, ...]:
    if target is None:
        return TARGETS
    if target not in TARGETS:
        raise unknown_name("target", target, TARGETS)
    return (target,)


def mode_from_filename(path: Path) -> QuantMode | None:
    """`mlp_swish.int8.tflite` -> int8: what `edgepipe convert` meant the file to be."""
    suffix = Path(path.stem).suffix.lstrip(".")
    return QuantMode(suffix) if suffix in {m.value for m in QuantMode} else None


def check_tflite(path: Path, targets: tuple[str, ...]) -> dict:
    model = read_tflite_file(path)  # memory-mapped: a 2 GB model is not read into memory
    mode = mode_from_filename(path)
    report = audit(model, mode, targets, source=str(path))
    return {"file": str(path), "bytes": model.size, "sha256": sha256_file(path),
            "mode": mode.value if mode else None,
            "status": "converted" if report.ok else "failed",
            "reason": "; ".join(report.problems), "audit": report.as_dict()}


def check_keras(path: Path, modes: list[QuantMode], rep_data, rep_samples: int,
                debug: bool) -> list[dict]:
    """Convert in a scratch folder and return the conversion records (audit included)."""
    from .conversion import convert_files

    with tempfile.TemporaryDirectory(prefix="edgepipe-check-") as tmp:
        variants, _ = convert_files([path], modes, Path(tmp), rep_data, rep_samples, debug)
    return [v.record for v in variants]


def failed(record: dict, targets: tuple[str, ...], strict_target: bool) -> bool:
    """A check fails on a failed conversion or audit, and, when one target was named, on any op
    that target cannot run."""
    if record["status"] == "failed":
        return True
    audit_ = record.get("audit")
    return bool(strict_target and audit_ and any(
        audit_["targets"][t]["unsupported_ops"] for t in targets))
