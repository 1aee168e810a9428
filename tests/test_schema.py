"""device_tests/schema.py, the contract between the heavy side and the boards: it imports with
the stdlib alone, its enums serialise as their values, and no other module spells a status, a
schema version or a run-folder path (an AST scan of the code, tests excepted)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.device_tests.schema import (
    MANIFEST_SCHEMA_VERSION,
    RESULTS_SCHEMA_VERSION,
    ConversionStatus,
    ResultStatus,
    RunFolder,
    base_record,
    count_statuses,
    not_run,
    results_document,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "device_tests" / "schema.py"
ROOMS = ("core", "models", "converters", "pipeline", "device_tests", "tools", "bench")


def test_schema_imports_with_the_stdlib_alone():
    """Loaded by path in an interpreter without site-packages (-S) or the project (-I): it must
    need neither numpy nor any other edgepipe module, as on a board."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('schema', {str(SCHEMA)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['schema'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if m.split(".")[0] in ("numpy", "edgepipe")] == []


def test_schema_parses_as_python_3_9():
    """Boards run Python 3.9 (tflite-runtime); a newer syntax would fail there on import."""
    ast.parse(SCHEMA.read_text(encoding="utf-8"), feature_version=(3, 9))


def test_enums_serialise_format_and_compare_as_their_values():
    record = {"status": ResultStatus.PASS, "conversion": ConversionStatus.UNSUPPORTED}
    assert json.dumps(record) == '{"status": "pass", "conversion": "unsupported"}'
    assert f"{ResultStatus.FAIL}" == str(ResultStatus.FAIL) == "fail"
    assert f"{ResultStatus.ERROR:>7}" == "  error"
    assert ResultStatus.UNSUPPORTED == "unsupported" and "pass" == ResultStatus.PASS
    assert ResultStatus.values() == ("pass", "fail", "unsupported", "error")
    assert ConversionStatus.values() == ("converted", "unsupported", "failed")
    assert [s.ok for s in ResultStatus] == [True, False, True, False]
    assert ResultStatus("error") is ResultStatus.ERROR


ENTRY = {"id": "m-int8", "model": "m", "mode": "int8", "tolerance": {"max_abs": 0.1}}


@pytest.mark.parametrize("status, reason, expected, expected_reason", [
    pytest.param("converted", None, None, None, id="converted-runs"),
    pytest.param("unsupported", "no int16x8 kernel", "unsupported", "no int16x8 kernel",
                 id="unsupported"),
    pytest.param("failed", "converter crashed", "error", "converter crashed", id="failed"),
    pytest.param("failed", None, "error", "manifest marks it failed (no reason given)",
                 id="failed-no-reason"),
    pytest.param("unsupported", "", "unsupported",
                 "manifest marks it unsupported (no reason given)", id="unsupported-no-reason"),
])
def test_not_run_maps_conversion_statuses_as_the_runner_did(status, reason, expected,
                                                            expected_reason):
    record = not_run({**ENTRY, "status": status, "reason": reason}, "host")
    if expected is None:
        assert record is None
        return
    assert record == {**base_record(ENTRY, "host"), "status": expected,
                      "reason": expected_reason}
    assert json.loads(json.dumps(record))["status"] == expected


def test_the_results_document_and_the_counts():
    records = [{**base_record(ENTRY, "tflm"), "status": s} for s in ("pass", "pass", "error")]
    doc = results_document("tflm", "ab" * 32, records, seconds=1.234567)
    assert json.loads(json.dumps(doc))["schema_version"] == RESULTS_SCHEMA_VERSION == 1
    assert doc["seconds"] == 1.2346 and doc["target"] == "tflm"
    assert count_statuses(records) == {"pass": 2, "fail": 0, "unsupported": 0, "error": 1}
    assert MANIFEST_SCHEMA_VERSION == 1
    folder = RunFolder(Path("/run"))
    assert folder.target_results("ssh://pi@board") == Path("/run/results/ssh___pi_board.json")
    assert folder.rel(folder.variant("m", "int8")) == "tflite/m.int8.tflite"


# ------------------------------------------------------------------------- the literal scan
STATUSES = frozenset(ResultStatus.values() + ConversionStatus.values())
FOLDER_FILES = frozenset({"manifest.json", "results.json", "junit.xml", "report.html"})
FOLDER_DIRS = ("results", "tflite", "models", "reference", "data", ".edgepipe")
JOINS = {"Path", "PurePath", "PurePosixPath", "joinpath", "join"}


def _text(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _statuses(node) -> list:
    """The status constants `node` is or directly holds (a tuple/list/set of them)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [item for item in items if _text(item) in STATUSES]


def _statuses_within(node) -> list:
    """Every status constant in an expression (a conditional, a tuple), f-strings excepted."""
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.JoinedStr):
            continue
        if _text(item) in STATUSES:
            found.append(item)
        stack.extend(ast.iter_child_nodes(item))
    return found


def _names_status(node) -> bool:
    """`x["status"]`, `x.status`, `status`."""
    if isinstance(node, ast.Subscript):
        return _text(node.slice) == "status"
    if isinstance(node, ast.Attribute):
        return node.attr == "status"
    return isinstance(node, ast.Name) and node.id == "status"


def _tally(node) -> bool:
    """A container named as a tally of statuses: `counts`, `by_status`, `doc["summary"]` (the
    results document's), not any variable called `summary`."""
    if isinstance(node, ast.Subscript):
        return _text(node.slice) in ("summary", "counts")
    name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
            else None) or ""
    return any(word in name.lower() for word in ("count", "status", "tally"))


class _Scan(ast.NodeVisitor):
    def __init__(self):
        self.found: dict = {}  # (line, col) -> what

    def _add(self, node, what: str) -> None:
        self.found.setdefault((node.lineno, node.col_offset), f"{what} {node.value!r}")

    def visit_Compare(self, node):  # r["status"] == "pass", status in ("pass", "unsupported")
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
            if isinstance(op, (ast.Eq, ast.NotEq)):
                sides = [left, right]
            elif isinstance(op, (ast.In, ast.NotIn)):  # not `"converted" in summary`: a key
                sides = [right]
            else:
                continue
            for item in (i for side in sides for i in _statuses(side)):
                self._add(item, "status compared:")
        self.generic_visit(node)

    def visit_Dict(self, node):  # {"status": "error"}, {"pass": 0, "fail": 0}, schema_version
        keyed_by_status = len(_statuses(ast.Tuple(elts=node.keys))) >= 2  # not {"error": text}
        for key, value in zip(node.keys, node.values, strict=True):
            if _text(key) == "status":
                for item in _statuses_within(value):
                    self._add(item, "status value:")
            elif _text(key) in STATUSES and keyed_by_status:
                self._add(key, "status as a key:")
            elif _text(key) == "schema_version" and isinstance(value, ast.Constant):
                self._add(value, "schema version:")
        self.generic_visit(node)

    def visit_Assign(self, node):  # record["status"] = "unsupported"
        targets = [t for target in node.targets
                   for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
        if any(_names_status(t) for t in targets):
            for item in _statuses_within(node.value):
                self._add(item, "status assigned:")
        self.generic_visit(node)

    def visit_keyword(self, node):  # f(status="pass")
        if node.arg == "status":
            for item in _statuses_within(node.value):
                self._add(item, "status argument:")
        self.generic_visit(node)

    def visit_Subscript(self, node):  # counts["fail"], not result["error"] (a message)
        if _text(node.slice) in STATUSES and _tally(node.value):
            self._add(node.slice, "status as a key:")
        self.generic_visit(node)

    def _collection(self, node):  # for s in ("pass", "fail", "unsupported", "error")
        if len(_statuses(node)) >= 2:
            for item in _statuses(node):
                self._add(item, "statuses listed:")
        self.generic_visit(node)

    visit_Tuple = visit_List = visit_Set = _collection

    def visit_BinOp(self, node):  # out / "results"
        if isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if _text(side) in FOLDER_DIRS:
                    self._add(side, "run-folder path joined:")
        self.generic_visit(node)

    def visit_Call(self, node):  # Path(out, "results"), out.joinpath("tflite")
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name in JOINS:
            for arg in node.args:
                if _text(arg) in FOLDER_DIRS:
                    self._add(arg, "run-folder path joined:")
        self.generic_visit(node)

    def visit_Constant(self, node):  # "manifest.json", "tflite/x.tflite"
        text = _text(node)
        if text in FOLDER_FILES or (text and text.split("/")[0] in FOLDER_DIRS
                                    and "/" in text and " " not in text):
            self._add(node, "run-folder path:")

    def visit_JoinedStr(self, node):  # f"tflite/{name}.tflite"
        head = _text(node.values[0]) if node.values else None
        if head and "/" in head and head.split("/")[0] in FOLDER_DIRS:
            self._add(node.values[0], "run-folder path:")
        # the rest of an f-string is a message, not a path: not visited


# A line that names a file of its own which happens to share a run-folder name (the bench's
# bench/results.json) says so, and is not counted.
NOT_A_RUN_FOLDER = "# not a run folder"


def literal_uses(root: Path = REPO) -> list[str]:
    """Every status, schema version and run-folder path spelt as a literal outside
    device_tests/schema.py, as "file:line: what"."""
    found = []
    for room in ROOMS:
        for path in sorted((root / room).rglob("*.py")):
            if path == SCHEMA or ".venv" in path.parts:
                continue
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines()
            scan = _Scan()
            scan.visit(ast.parse(source, str(path)))
            rel = path.relative_to(root).as_posix()
            found += [f"{rel}:{line}: {what}" for (line, _), what in sorted(scan.found.items())
                      if NOT_A_RUN_FOLDER not in lines[line - 1]]
    return found


def test_the_scan_catches_real_uses_and_not_words():
    code = '''
"""A docstring saying pass, fail, error and results/ in words."""
def f(r, out, counts):
    if r["status"] == "pass" or r.status != "error":
        return {"status": "error", "reason": "it failed: see results.json"}
    ok = r["status"] in ("pass", "unsupported")
    r["status"], r["reason"] = "unsupported", "no kernel"
    r["status"] = "fail" if ok else "pass"
    rows = [counts["fail"] for s in ("pass", "fail", "unsupported", "error")]
    doc = {"schema_version": 1, "pass": 0, "fail": 0, "x": doc["summary"]["error"]}
    words = {"status": "runs", "error": None}, r["error"], r.pass_rate == 1, "converted" in r
    words = summary["converted"], r["failed"] if r else words
    raise ValueError(f"{out} has no manifest.json; the data is an error")
    return out / "results", out / "manifest.json", f"tflite/{r}.tflite", Path(out, "data")
'''
    scan = _Scan()
    scan.visit(ast.parse(code))
    lines = sorted({line for line, _ in scan.found})
    assert lines == [4, 5, 6, 7, 8, 9, 10, 14], scan.found
    assert len(scan.found) == 21, scan.found


def test_no_status_schema_version_or_run_folder_path_is_spelt_outside_the_schema():
    found = literal_uses()
    assert not found, (f"{len(found)} literal(s) to replace with device_tests/schema.py's "
                       "names:\n" + "\n".join(found))
