"""`DIR/junit.xml` from the merged results: one testsuite per target, one testcase per entry.

CI systems read JUnit XML to show which checks failed; the mapping is
pass -> plain testcase, fail -> <failure>, error -> <error>, unsupported -> <skipped>.
The shape check of a results document (and of the manifest, for report.py) lives here too: both
reports read the same results.
"""

import math
import re
import reprlib
import xml.etree.ElementTree as ET
from pathlib import Path

from ..core.errors import EdgepipeError
from ..core.files import atomic_path

STATUSES = ("pass", "fail", "unsupported", "error")

# XML 1.0 cannot carry these at all, escaped or not (an interpreter message can contain an
# ANSI escape or a NUL); ElementTree would write them and produce a file no parser accepts.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", "" if value is None else str(value))


# ---------------------------------------------------------------- the shape of a JSON document

# A results.json (or manifest.json) edited by hand or written by another program is checked before
# anything reads it: every field the reports compute with must have the type docs/bundle.md gives
# it; other keys are only shown. A spec is a kind ("!" before it: required, else null or absent
# is fine), an object spec {key: spec}, a list spec [item spec], or {"*": spec}: an object whose
# every value has that spec.
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
           "boundary": "object", "npu": "object", "vs_host-ref": "object"}
RECORD = {"id": "!string", "target": "!string", "status": "!string", "model": "string",
          "mode": "string", "reason": "string", "seconds": "number", "metrics": METRICS,
          "checks": [{"name": "string", "ok": "boolean"}], "tolerance": TOLERANCE,
          "outputs": "string"}
RESULTS = {"manifest_sha256": "string", "summary": "object",
           "targets": {"*": {"runtime": "object", "platform": "object", "seconds": "number"}},
           "results": [RECORD]}


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


def check_results(results, file: Path) -> dict:
    """`results` (the merged results.json at `file`) when it has the shape docs/bundle.md gives
    it; else one line naming the field."""
    check_shape(results, RESULTS, file, f"Rerun `edgepipe parity {file.parent}` to write it "
                                        "again.")
    return results


def targets_of(results: dict) -> list[str]:
    """Targets in the order of `results["targets"]`, then any only named by a record."""
    names = list(results.get("targets") or {})
    for record in results.get("results", []):
        if record.get("target") not in names and record.get("target") is not None:
            names.append(record["target"])
    return names


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def metrics_text(record: dict) -> str:
    """The key metrics of a record as `name: value` lines, for a failure body."""
    metrics = record.get("metrics") or {}
    lines = [f"reason: {record['reason']}"] if record.get("reason") else []
    for key in ("samples", "max_abs_error", "mean_abs_error", "rel_error", "steps",
                "sqnr_db", "cosine", "worst_sample"):
        if metrics.get(key) is not None:
            lines.append(f"{key}: {_number(metrics[key])}")
    task = metrics.get("task") or {}
    for key in ("metric", "keras", "variant", "delta", "top1_agreement"):
        if task.get(key) is not None:
            lines.append(f"task.{key}: {_number(task[key])}")
    for key, value in (metrics.get("boundary") or {}).items():
        lines.append(f"boundary.{key}: {_number(value)}")
    for check in record.get("checks") or []:
        if not check.get("ok", True):
            lines.append(f"failed check {check.get('name')}: {_number(check.get('value'))} "
                         f"> bound {_number(check.get('bound'))}")
    derivation = (record.get("tolerance") or {}).get("derivation")
    if derivation:
        lines.append(f"tolerance: {derivation}")
    if record.get("outputs"):
        lines.append(f"outputs: {record['outputs']}")
    return "\n".join(lines)


def _seconds(value) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return "0.000"
    return f"{seconds:.3f}" if math.isfinite(seconds) else "0.000"


def _counts(element: ET.Element, records: list[dict]) -> dict:
    counts = {
        "tests": len(records),
        "failures": sum(r.get("status") == "fail" for r in records),
        # An unknown status is reported as an error (see _testcase), so it is counted as one.
        "errors": sum(r.get("status") not in ("pass", "fail", "unsupported") for r in records),
        "skipped": sum(r.get("status") == "unsupported" for r in records),
    }
    for key, value in counts.items():
        element.set(key, str(value))
    return counts


def junit_tree(results: dict) -> ET.Element:
    """The `<testsuites>` element for a merged results document."""
    root = ET.Element("testsuites", name="edgepipe")
    all_records = []
    total_seconds = 0.0
    for target in targets_of(results):
        records = [r for r in results.get("results", []) if r.get("target") == target]
        all_records += records
        info = (results.get("targets") or {}).get(target) or {}
        suite = ET.SubElement(root, "testsuite", name=xml_text(target))
        _counts(suite, records)
        seconds = info.get("seconds")
        if seconds is None:
            seconds = sum(float(r.get("seconds") or 0.0) for r in records)
        total_seconds += float(seconds)
        suite.set("time", _seconds(seconds))
        properties = ET.SubElement(suite, "properties")
        for group in ("runtime", "platform"):
            for key, value in (info.get(group) or {}).items():
                ET.SubElement(properties, "property", name=xml_text(f"{group}.{key}"),
                              value=xml_text(value))
        for record in records:
            _testcase(suite, target, record)
    _counts(root, all_records)
    root.set("time", _seconds(total_seconds))
    return root


def _testcase(suite: ET.Element, target: str, record: dict) -> None:
    case = ET.SubElement(suite, "testcase", classname=xml_text(f"edgepipe.{target}"),
                         name=xml_text(record.get("id", "?")), time=_seconds(record.get("seconds")))
    status = record.get("status")
    reason = xml_text(record.get("reason"))
    if status == "fail":
        failure = ET.SubElement(case, "failure", message=reason or "a tolerance bound failed",
                                type="ParityFailure")
        failure.text = xml_text(metrics_text(record))
    elif status == "error":
        error = ET.SubElement(case, "error", message=reason or "error", type="RunError")
        error.text = reason
    elif status == "unsupported":
        ET.SubElement(case, "skipped", message=reason or "unsupported")
    elif status != "pass":
        # An unknown status must not pass silently in CI.
        ET.SubElement(case, "error", message=f"unknown status {status!r}", type="BadStatus")


def write_junit(run_dir: Path, results: dict) -> Path:
    """Write `run_dir/junit.xml` from the merged results document; return its path."""
    dest = Path(run_dir) / "junit.xml"
    root = junit_tree(check_results(results, dest.with_name("results.json")))
    ET.indent(root)
    with atomic_path(dest) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return dest
