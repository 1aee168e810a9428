"""`edgepipe report` on a finished run folder whose data was edited: NaN and infinities in the
saved outputs, unreadable arrays, and a results.json or manifest.json of the wrong shape. Odd
arrays still give a report that shows them (exit 0); a JSON file of the wrong shape is one line
naming the file and the field (exit 2)."""

import io
import json

import numpy as np
from bad_inputs import Case

REPORT = ("report", "run")
WROTE = "wrote run/report.html"
OUTPUTS = "run/results/outputs/host/mlp-float32.npy"


def _array(rel: str, change):
    """A finished run whose array `rel` is replaced by change(array)."""

    def setup(folder):
        folder.run_folder()
        path = folder.path / rel
        np.save(path, change(np.load(path)))

    return setup


def _put(array, where, value):
    array = array.copy()
    array[where] = value
    return array


def _bytes(rel: str, content: bytes):
    def setup(folder):
        folder.run_folder()
        (folder.path / rel).write_bytes(content)

    return setup


def _json(name: str, change):
    """A finished run whose `name` (results.json or manifest.json) is rewritten after change(doc);
    `record(doc)` and `entry(doc)` below pick mlp-float32's result on host and manifest entry."""

    def setup(folder):
        folder.run_folder()
        path = folder.path / "run" / name
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return setup


def record(doc: dict) -> dict:
    return next(r for r in doc["results"] if r["id"] == "mlp-float32" and r["target"] == "host")


def entry(doc: dict) -> dict:
    return next(e for e in doc["entries"] if e["id"] == "mlp-float32")


def _huge_header() -> bytes:
    """An .npy header that declares 10^12 float32 values, followed by 64 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    return buf.getvalue() + bytes(64)


def _nested(depth: int):
    value = 0
    for _ in range(depth):
        value = [value]
    return value


CASES = [
    # Arrays: the report is written and shows what is wrong (tests/test_report.py checks the page)
    Case("report-data-outputs-inf", "one +inf in a variant's saved outputs on host", REPORT, 0,
         WROTE, _array(OUTPUTS, lambda a: _put(a, (3, 0), np.inf))),
    Case("report-data-outputs-nan", "NaN in a whole sample of the saved outputs", REPORT, 0,
         WROTE, _array(OUTPUTS, lambda a: _put(a, 5, np.nan))),
    Case("report-data-outputs-all-nan", "every saved output is NaN", REPORT, 0, WROTE,
         _array(OUTPUTS, lambda a: a * np.nan)),
    Case("report-data-reference-inf", "-inf in the Keras reference outputs", REPORT, 0, WROTE,
         _array("run/reference/mlp.npy", lambda a: _put(a, (0, 0), -np.inf))),
    Case("report-data-outputs-empty-file", "a saved outputs .npy file of 0 bytes", REPORT, 0,
         WROTE, _bytes(OUTPUTS, b"")),
    Case("report-data-outputs-huge-header", "a saved outputs .npy whose header declares 10^12 "
         "values", REPORT, 0, WROTE, _bytes(OUTPUTS, _huge_header())),
    Case("report-data-outputs-complex", "saved outputs of complex numbers", REPORT, 0, WROTE,
         _array(OUTPUTS, lambda a: a.astype(np.complex64))),
    Case("report-data-status-unknown", "a result whose status is 'crashed'", REPORT, 0, WROTE,
         _json("results.json", lambda d: record(d).update(status="crashed"))),
    # results.json: one line naming the field
    Case("report-data-results-not-json", "results.json cut short (not JSON)", REPORT, 2,
         "Expected the merged results.json at run/results.json to be JSON",
         _bytes("run/results.json", b'{"results": [')),
    Case("report-data-results-not-utf8", "results.json that is not UTF-8", REPORT, 2,
         "UnicodeDecodeError", _bytes("run/results.json", b"\xff\xfe{}")),
    Case("report-data-results-nested-deep", "results.json nested 100,000 levels deep", REPORT,
         2, "RecursionError", _bytes("run/results.json", b"[" * 100_000 + b"]" * 100_000)),
    Case("report-data-results-huge-integer", "a 5,000-digit integer in results.json", REPORT, 2,
         "Exceeds the limit (4300 digits)",
         _bytes("run/results.json", b'{"results": [], "seconds": ' + b"9" * 5000 + b"}")),
    Case("report-data-results-top-list", "results.json holding a list, not an object", REPORT, 2,
         "Expected run/results.json to be a JSON object. Received: a list",
         _bytes("run/results.json", b"[]")),
    Case("report-data-results-records-object", "results.json's results is an object, not a list",
         REPORT, 2, "Expected results in run/results.json to be a list",
         _json("results.json", lambda d: d.update(results={}))),
    Case("report-data-record-not-object", "a result record that is a number", REPORT, 2,
         "Expected results[0] in run/results.json to be a JSON object. Received: a number 5",
         _json("results.json", lambda d: d["results"].__setitem__(0, 5))),
    Case("report-data-record-id-number", "a result whose id is a number", REPORT, 2,
         ".id in run/results.json to be a string. Received: a number 7",
         _json("results.json", lambda d: record(d).update(id=7))),
    Case("report-data-metrics-string", "a result whose metrics is a string", REPORT, 2,
         ".metrics in run/results.json to be a JSON object. Received: a string 'abc'",
         _json("results.json", lambda d: record(d).update(metrics="abc"))),
    Case("report-data-metric-string", "max_abs_error written as a string", REPORT, 2,
         ".metrics.max_abs_error in run/results.json to be a number. Received: a string '0.1'",
         _json("results.json", lambda d: record(d)["metrics"].update(max_abs_error="0.1"))),
    Case("report-data-metric-huge-integer", "max_abs_error of 10^30, as an integer", REPORT, 2,
         "to be a number. Received: an integer of 100 bits",
         _json("results.json", lambda d: record(d)["metrics"].update(max_abs_error=10**30))),
    Case("report-data-check-name-list", "a check whose name is a list", REPORT, 2,
         ".checks[0].name in run/results.json to be a string. Received: a list",
         _json("results.json", lambda d: record(d)["checks"][0].update(name=["max_abs"]))),
    Case("report-data-targets-list", "results.json's targets is a list", REPORT, 2,
         "Expected targets in run/results.json to be a JSON object. Received: a list",
         _json("results.json", lambda d: d.update(targets=["host"]))),
    Case("report-data-metrics-nested-40", "a metric nested 40 lists deep", REPORT, 2,
         "Expected run/results.json to be nested at most 32 levels deep",
         _json("results.json", lambda d: record(d)["metrics"].update(extra=_nested(40)))),
    # manifest.json
    Case("report-data-manifest-entries-object", "manifest.json's entries is an object", REPORT,
         2, "Expected entries in run/manifest.json to be a list",
         _json("manifest.json", lambda d: d.update(entries={}))),
    Case("report-data-manifest-bytes-string", "a manifest entry whose bytes is a string",
         REPORT, 2, ".bytes in run/manifest.json to be an integer. Received: a string 'big'",
         _json("manifest.json", lambda d: entry(d).update(bytes="big"))),
    Case("report-data-manifest-y-std-string", "a dataset whose y_std is a string", REPORT, 2,
         "Expected datasets.reg.y_std in run/manifest.json to be a number",
         _json("manifest.json", lambda d: d["datasets"]["reg"].update(y_std="2.5"))),
]
