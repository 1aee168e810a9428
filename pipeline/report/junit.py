"""`DIR/junit.xml` from the merged results: one testsuite per target, one testcase per entry.

CI systems read JUnit XML to show which checks failed; the mapping is
pass -> plain testcase, fail -> <failure>, error -> <error>, unsupported -> <skipped>.
"""

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ...core.files import atomic_path
from ...device_tests.schema import ResultStatus, RunFolder, count_statuses
from .read import targets_of
from .shape import check_results
from .text import xml_text


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
    statuses = count_statuses(records)
    counts = {
        "tests": len(records),
        "failures": statuses[ResultStatus.FAIL],
        # An unknown status is reported as an error (see _testcase), so it is counted as one.
        "errors": len(records) - statuses[ResultStatus.PASS] - statuses[ResultStatus.FAIL]
        - statuses[ResultStatus.UNSUPPORTED],
        "skipped": statuses[ResultStatus.UNSUPPORTED],
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
    if status == ResultStatus.FAIL:
        failure = ET.SubElement(case, "failure", message=reason or "a tolerance bound failed",
                                type="ParityFailure")
        failure.text = xml_text(metrics_text(record))
    elif status == ResultStatus.ERROR:
        error = ET.SubElement(case, "error", message=reason or ResultStatus.ERROR.value,
                              type="RunError")
        error.text = reason
    elif status == ResultStatus.UNSUPPORTED:
        ET.SubElement(case, "skipped", message=reason or ResultStatus.UNSUPPORTED.value)
    elif status != ResultStatus.PASS:
        # An unknown status must not pass silently in CI.
        ET.SubElement(case, "error", message=f"unknown status {status!r}", type="BadStatus")


def write_junit(run_dir: Path, results: dict) -> Path:
    """Write `run_dir/junit.xml` from the merged results document; return its path."""
    folder = RunFolder(run_dir)
    dest = folder.junit
    root = junit_tree(check_results(results, folder.results))
    ET.indent(root)
    with atomic_path(dest) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return dest
