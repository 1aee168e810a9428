"""The shape of the JSON documents the reports read: manifest.json and results.json.

A document edited by hand or written by another program is checked before anything reads it:
every field the reports compute with must have the type docs/bundle.md gives it; other keys are
only shown. A spec is a kind ("!" before it: required, else null or absent is fine), an object
spec {key: spec}, a list spec [item spec], or {"*": spec}: an object whose every value has that
spec. The specs stay beside the checker that reads this little language (device_tests never
checks a shape; pipeline/results.py checks each target's file with RECORD).
"""

import re
import reprlib
from pathlib import Path

from ...core.errors import EdgepipeError

MAX_DEPTH = 32          # edgepipe writes about 8 levels; far deeper ones exhaust recursion
MAX_INTEGER = 2 ** 63   # no count or size edgepipe writes is larger; arithmetic on far larger
                        # ones overflows a float


def _is_number(value) -> bool:
    return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)
                                        and abs(value) <= MAX_INTEGER)


KINDS = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "number": ("a number", _is_number),
    "integer": ("an integer", lambda v: _is_number(v) and isinstance(v, int)),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "object": ("a JSON object", lambda v: isinstance(v, dict)),
    "strings": ("a list of strings",
                lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "integers": ("a list of integers", lambda v: isinstance(v, list) and all(
        _is_number(x) and isinstance(x, int) for x in v)),
}
TOLERANCE = {"max_abs": "number", "max_rel": "number", "output_step": "number",
             "steps": "number", "task_delta": "number", "min_top1_agreement": "number",
             "derivation": "string"}
TASK = {"metric": "string", "samples": "integer", "keras": "number", "variant": "number",
        "delta": "number", "top1_agreement": "number", "mae_keras": "number",
        "mae_variant": "number"}
METRICS = {"samples": "integer", "nan_mismatches": "integer", "nan_positions": "integer",
           "max_abs_error": "number", "mean_abs_error": "number", "rmse": "number",
           "rel_error": "number", "cosine": "number", "sqnr_db": "number", "steps": "number",
           "worst_sample": "integer", "worst_samples": "integers", "task": TASK,
           "latency_ms": "number", "arena_bytes": "integer", "arena_probes": "integer",
           "arena_recorded_bytes": "integer",
           "compressed": {"applies": "boolean", "bytes": "integer", "original_bytes": "integer",
                          "max_abs_vs_uncompressed": "number", "arena_bytes": "integer",
                          "why": "string", "error": "string", "file": "string"},
           "boundary": "object", "npu": "object", "vs_host-ref": "object"}
LAYER_ROW = {"layer": "string", "op": "string", "tensor": "integer", "max_abs": "number",
             "range": "number", "rel": "number", "sqnr_db": "number", "steps": "number",
             "simulated": "number", "bound": "number", "bound_steps": "number", "ok": "boolean",
             "error": "string"}
LAYERS = {"samples": "integer", "kernels": "string", "rows": [LAYER_ROW],
          "born": {"layer": "string", "op": "string", "steps": "number",
                   "simulated_steps": "number", "bound_steps": "number", "max_abs": "number",
                   "bound": "number"},
          "growth": {"layer": "string", "op": "string", "from": "number", "to": "number"},
          "text": "string", "unavailable": "string", "error": "string"}
RECORD = {"id": "!string", "target": "!string", "status": "!string", "model": "string",
          "mode": "string", "reason": "string", "seconds": "number", "metrics": METRICS,
          "checks": [{"name": "string", "ok": "boolean"}], "tolerance": TOLERANCE,
          "outputs": "string", "layers": LAYERS,
          "board": "string"}  # a pool's records: the ssh:// board that ran the entry
RESULTS = {"manifest_sha256": "string", "summary": "object",
           "targets": {"*": {"runtime": "object", "platform": "object", "seconds": "number"}},
           "results": [RECORD]}
# The manifest fields the report reads: a manifest.json of another shape is one line naming the
# field, not a crash halfway through the page.
MANIFEST = {
    "versions": "object",
    "datasets": {"*": {"task": "string", "labels": "string", "y_std": "number"}},
    "models": {"*": {"dataset": "string", "reference": "string",
                     "boundary": {"layers": "strings", "input_steps": "object"}}},
    "entries": [{"id": "!string", "model": "string", "mode": "string", "status": "string",
                 "reason": "string", "tflite": "string", "bytes": "integer",
                 "dataset": "string", "reference": "string", "expected_ops": "strings",
                 "tolerance": TOLERANCE}],
}


def check_shape(document, spec: dict, file: Path, fix: str) -> None:
    """Raise one line naming `file` and the field when `document` (a JSON object) is nested
    deeper than MAX_DEPTH or does not have `spec`'s shape; `fix` says what to do."""
    if not isinstance(document, dict):
        raise _wrong(file, "", "a JSON object", document, fix)
    stack = [(document, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EdgepipeError(f"Expected {file} to be nested at most {MAX_DEPTH} levels deep. "
                                f"Received: deeper at {_short(path)}. {fix}")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack += [(v, _field(path, k), depth + 1) for k, v in items
                  if isinstance(v, (dict, list))]
    _check(document, spec, file, "", fix)


def check_results(results, file: Path) -> dict:
    """`results` (the merged results.json at `file`) when it has the shape docs/bundle.md gives
    it; else one line naming the field."""
    check_shape(results, RESULTS, file, f"Rerun `edgepipe parity {file.parent}` to write it "
                                        "again.")
    return results


def _check(value, spec, file: Path, path: str, fix: str) -> None:
    if isinstance(spec, str):
        what, test = KINDS[spec.lstrip("!")]
        if (value is not None or spec.startswith("!")) and not test(value):
            raise _wrong(file, path, what, value, fix)
    elif value is None:
        return
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise _wrong(file, path, "a list", value, fix)
        for i, item in enumerate(value):
            _check(item, spec[0], file, f"{path}[{i}]", fix)
    elif not isinstance(value, dict):
        raise _wrong(file, path, "a JSON object", value, fix)
    elif "*" in spec:
        for key, item in value.items():
            _check(item, spec["*"], file, _field(path, key), fix)
    else:
        for key, item in spec.items():
            _check(value.get(key), item, file, _field(path, key), fix)


def _field(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_short(repr(key))}]"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40


def _wrong(file: Path, path: str, what: str, value, fix: str) -> EdgepipeError:
    if value is None:
        received = "nothing (absent or null)"
    elif isinstance(value, bool):
        received = str(value).lower()
    elif isinstance(value, int) and not _is_number(value):
        received = f"an integer of {value.bit_length()} bits"
    else:
        kind = {dict: "a JSON object", list: "a list", str: "a string"}.get(type(value),
                                                                          "a number")
        received = f"{kind} {_REPR.repr(value)}"
    where = f"{path} in {file}" if path else str(file)
    return EdgepipeError(f"Expected {where} to be {what}. Received: {received}. {fix}")
