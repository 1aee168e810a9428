"""Reading a run folder for the reports: manifest.json and results.json checked for the shape
the reports read, the `.npy` files they name, and the model of the page (`Run`, `ReportEntry`).
Nothing here decides pass or fail: it shows what the runner decided."""

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ...converters.modes import QuantMode
from ...core.errors import EdgepipeError
from ...device_tests.schema import ResultStatus, RunFolder, leads_out, outputs_dir, resolved_inside
from .shape import MANIFEST, check_results, check_shape

MODES = [m.value for m in QuantMode]


class Files:
    """The `.npy` files of a run folder, read once, never from outside it."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.root = run_dir.resolve()
        self.cache: dict[str, np.ndarray | None] = {}
        self.problems: dict[str, str] = {}

    def array(self, rel: str | None) -> np.ndarray | None:
        if not rel:
            return None
        if rel not in self.cache:
            self.cache[rel] = self._load(rel)
        return self.cache[rel]

    def exists(self, rel: str) -> bool:
        path = self._inside(rel)
        return isinstance(path, Path) and path.is_file()

    def _inside(self, rel: str) -> Path | str:
        """The file `rel` names, or why it is not read."""
        if leads_out(rel):
            return "path leaves the run folder; not read"
        try:
            path, inside = resolved_inside(self.root, self.run_dir / PurePosixPath(rel))
        except (OSError, ValueError) as err:  # a NUL
            return f"not a usable path ({err}); not read"
        return path if inside else "path leaves the run folder; not read"

    def _load(self, rel: str) -> np.ndarray | None:
        path = self._inside(rel)
        if isinstance(path, str):
            self.problems[rel] = path
            return None
        if not path.is_file():
            self.problems[rel] = "not a regular file" if path.exists() else "file missing"
            return None
        try:
            # Mapped, then copied: a header that declares more data than the file holds is
            # refused, where np.load would first allocate all of it.
            loaded = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            self.problems[rel] = f"unreadable: {err}"
            return None
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            self.problems[rel] = "an .npz archive, not one .npy array"
            return None
        array = np.array(loaded)
        if not any(np.issubdtype(array.dtype, kind) for kind in (np.integer, np.floating,
                                                                  np.bool_)):
            self.problems[rel] = f"not real numbers: dtype {array.dtype}"
            return None
        return array


def _read_json(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        received = "not a regular file" if path.exists() else "no such file"
        raise EdgepipeError(f"Expected {what} at {path}. Received: {received}. Run "
                            "`edgepipe run --out DIR` first, then report on DIR.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, too deep, a huge number
        raise EdgepipeError(f"Expected {what} at {path} to be JSON. Received: "
                            f"{type(err).__name__}: {err}. {fix}") from None


def read_manifest(run_dir: Path) -> dict:
    """The run folder's manifest.json, with the shape the report reads (else one line)."""
    path = RunFolder(run_dir).manifest
    fix = f"Rebuild the bundle with `edgepipe run --out {run_dir}`."
    manifest = _read_json(path, f"the bundle's {path.name}", fix)
    check_shape(manifest, MANIFEST, path, fix)
    return manifest


def read_results(run_dir: Path) -> dict:
    """The run folder's merged results.json, with the shape docs/bundle.md gives it (else one
    line naming the field)."""
    path = RunFolder(run_dir).results
    fix = f"Rerun `edgepipe parity {run_dir}` to write it again."
    return check_results(_read_json(path, f"the merged {path.name}", fix), path)


def targets_of(results: dict) -> list[str]:
    """Targets in the order of `results["targets"]`, then any only named by a record."""
    names = list(results.get("targets") or {})
    for record in results.get("results", []):
        if record.get("target") not in names and record.get("target") is not None:
            names.append(record["target"])
    return names


def boards_of(records: list, target: str) -> dict:
    """{board: how many entries it ran} of a pool's records on `target` (first seen first);
    empty for a target that is not a pool."""
    counts: dict = {}
    for record in records:
        if record.get("target") == target and record.get("board"):
            counts[record["board"]] = counts.get(record["board"], 0) + 1
    return counts


def status_ok(status) -> bool:
    """Whether `status` lets a run pass; an unknown one counts as an error."""
    return status in ResultStatus.values() and ResultStatus(status).ok


@dataclass
class ReportEntry:
    """One manifest entry (model x mode) and its result record on each target: a row of the
    matrix and a section of the page."""

    id: str
    model: str
    mode: str
    entry: dict
    records: dict[str, dict] = field(default_factory=dict)

    @property
    def statuses(self) -> list[str]:
        return [r["status"] for r in self.records.values()]

    @property
    def failing(self) -> bool:
        """Any status but pass and unsupported: an unknown one counts as an error."""
        return not all(status_ok(s) for s in self.statuses)


@dataclass
class Run:
    run_dir: Path
    manifest: dict
    results: dict
    files: Files
    targets: list[str]
    entries: list[ReportEntry]
    warnings: list[str]

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    def model(self, v: ReportEntry) -> dict:
        return (self.manifest.get("models") or {}).get(v.model) or {}

    def dataset(self, v: ReportEntry) -> tuple[str | None, dict]:
        name = v.entry.get("dataset") or self.model(v).get("dataset")
        return name, (self.manifest.get("datasets") or {}).get(name) or {}

    def task(self, v: ReportEntry) -> str:
        return self.dataset(v)[1].get("task") or "regression"

    def reference_path(self, v: ReportEntry) -> str | None:
        return v.entry.get("reference") or self.model(v).get("reference")

    def reference(self, v: ReportEntry) -> np.ndarray | None:
        return self.files.array(self.reference_path(v))

    def labels(self, v: ReportEntry) -> np.ndarray | None:
        return self.files.array(self.dataset(v)[1].get("labels"))

    def outputs_path(self, v: ReportEntry, target: str) -> str | None:
        record = v.records.get(target)
        if record is None:
            return None
        if record.get("outputs"):
            return record["outputs"]
        # A record that does not name its outputs: where the runner saves them.
        folder = self.folder
        saved = folder.rel(outputs_dir(folder.target_results(target), target) / f"{v.id}.npy")
        return saved if self.files.exists(saved) else None

    def outputs(self, v: ReportEntry, target: str) -> np.ndarray | None:
        return self.files.array(self.outputs_path(v, target))


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    return build_run(run_dir, read_manifest(run_dir), read_results(run_dir))


def build_run(run_dir: Path, manifest: dict, results: dict) -> Run:
    folder = RunFolder(run_dir)
    manifest_name, results_name = folder.manifest.name, folder.results.name
    targets = targets_of(results)
    entries: dict[str, ReportEntry] = {}
    warnings = []
    for entry in manifest.get("entries") or []:
        if entry["id"] in entries:
            warnings.append(f"{manifest_name} lists {entry['id']} more than once; the last "
                            "entry is shown.")
        entries[entry["id"]] = ReportEntry(entry["id"], entry.get("model") or "?",
                                           entry.get("mode") or "?", entry)
    for i, record in enumerate(results.get("results") or []):
        rid, target = record["id"], record["target"]
        if rid not in entries:
            entries[rid] = ReportEntry(rid, record.get("model") or "?",
                                       record.get("mode") or "?", {})
            warnings.append(f"{rid} has results but no manifest entry.")
        if record["status"] not in ResultStatus.values():
            warnings.append(f"{results_name} results[{i}] ({rid} on {target}) has status "
                            f"{record['status']!r}, none of {', '.join(ResultStatus.values())}: "
                            "counted as an error.")
        v = entries[rid]
        if target in v.records:
            warnings.append(f"{rid} has more than one result on {target}; the last one is "
                            "shown.")
        v.records[target] = record
    model_order = {}
    for v in entries.values():
        model_order.setdefault(v.model, len(model_order))
    ordered = sorted(entries.values(), key=lambda v: (
        model_order[v.model], MODES.index(v.mode) if v.mode in MODES else len(MODES), v.id))
    return Run(run_dir, manifest, results, Files(run_dir), targets, ordered, warnings)
