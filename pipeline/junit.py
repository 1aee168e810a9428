"""`DIR/junit.xml` from the merged results: one testsuite per target, one testcase per entry.

CI systems read JUnit XML to show which checks failed; the mapping is
pass -> plain testcase, fail -> <failure>, error -> <error>, unsupported -> <skipped>.
"""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from ..models.files import atomic_path

STATUSES = ("pass", "fail", "unsupported", "error")

# XML 1.0 cannot carry these at all, escaped or not (an interpreter message can contain an
# ANSI escape or a NUL); ElementTree would write them and produce a file no parser accepts.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", "" if value is None else str(value))


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
        return f"{float(value):.3f}"
    except (TypeError, ValueError):
        return "0.000"


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
                ET.SubElement(properties, "property", name=f"{group}.{key}",
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
    root = junit_tree(results)
    ET.indent(root)
    dest = Path(run_dir) / "junit.xml"
    with atomic_path(dest) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return dest
