"""The contract between the heavy side and the boards, in one place: the schema versions, the
statuses, the result record and the results document, and the paths inside a run folder.

Stdlib only and Python 3.9: it travels to the boards with the runner. The writer
(pipeline/bundle.py), the runner, the Vela report and the reports import their names from here;
nothing else spells a status, a schema version or a run-folder path (docs/bundle.md).
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

MANIFEST_SCHEMA_VERSION = 1  # manifest.json
RESULTS_SCHEMA_VERSION = 1  # results/<target>.json and results.json

# An entry id, a model name, a dataset name: one safe file-name part (use with fullmatch).
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


class _Text(str, enum.Enum):
    """A `str` enum that prints, formats and serialises as its value on every Python (3.9-3.12
    disagree on what `format()` of a str mixin enum gives)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple:
        return tuple(member.value for member in cls)


class ConversionStatus(_Text):
    """What converting a model to one mode gave (an entry's `status` in the manifest)."""

    CONVERTED = "converted"
    UNSUPPORTED = "unsupported"  # a documented TFLite limit: no file, the reason says which
    FAILED = "failed"  # the converter failed where it should not have


class ResultStatus(_Text):
    """One entry's parity on one target."""

    PASS = "pass"
    FAIL = "fail"  # ran, outside its tolerance
    UNSUPPORTED = "unsupported"  # cannot run there, a documented limit: not a failure
    ERROR = "error"  # could not be run (crash, timeout, unreadable file, failed conversion)

    @property
    def ok(self) -> bool:
        """Whether this status lets a run pass."""
        return self in (ResultStatus.PASS, ResultStatus.UNSUPPORTED)


def base_record(entry: dict, target: str) -> dict:
    """An entry's result before it runs: an error until the target says otherwise."""
    return {"id": entry["id"], "model": entry.get("model"), "mode": entry.get("mode"),
            "target": target, "status": ResultStatus.ERROR, "reason": "", "invoke": None,
            "seconds": 0.0, "metrics": None, "checks": [], "tolerance": entry.get("tolerance")}


def not_run(entry: dict, target: str) -> dict | None:
    """The result of an entry the manifest says has no file to run (an unsupported conversion
    is unsupported everywhere; a failed one is an error everywhere), else None."""
    status = entry.get("status")
    if status == ConversionStatus.CONVERTED:
        return None
    record = base_record(entry, target)
    if status == ConversionStatus.UNSUPPORTED:
        record["status"] = ResultStatus.UNSUPPORTED
    record["reason"] = entry.get("reason") or f"manifest marks it {status} (no reason given)"
    return record


def results_document(target: str, manifest_sha256: str, results: list, runtime=None,
                     platform=None, seconds: float = 0.0) -> dict:
    """One target's results file."""
    return {"schema_version": RESULTS_SCHEMA_VERSION, "manifest_sha256": manifest_sha256,
            "target": target, "runtime": runtime, "platform": platform,
            "seconds": round(seconds, 4), "results": results}


def count_statuses(results: list) -> dict:
    """{status: how many results have it}, every status present."""
    return {s.value: sum(r.get("status") == s for r in results) for s in ResultStatus}


# "A path stays inside its folder", the one definition: by its name (`leads_out`), then with
# its links resolved (`resolved_inside`). The bundle's paths, the report's and the members of a
# user's .keras archive are all held to it.

def leads_out(name: str, folder: str = "the folder") -> str | None:
    """How the relative path `name`, joined to `folder`, leads out of it by its name alone
    ("is an absolute path": `/x`, `C:x`; "contains '..' (leaves <folder>)"), else None. A
    backslash counts as a separator, as Windows (where an archive may be extracted) reads it."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "is an absolute path"
    if ".." in posix.split("/"):
        return f"contains '..' (leaves {folder})"
    return None


def resolved_inside(root: Path, path: Path) -> tuple:
    """(`path` with every link resolved, whether that is inside `root`, a resolved folder)."""
    resolved = Path(os.path.realpath(path))
    try:
        resolved.relative_to(root)
    except ValueError:
        return resolved, False
    return resolved, True


def target_folder(target: str) -> str:
    """A target name as one safe file name (`ssh://pi@board` -> `ssh___pi_board`, `pool:pi4`
    -> `pool-pi4`; `..` -> `__`: never a name that leads up)."""
    name = re.sub(r"^([a-z]+):(?!//)", r"\1-", target)  # a kind:name target, e.g. a pool
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "target"
    return "_" * len(name) if set(name) == {"."} else name


class RunFolder:
    """Every path inside a run folder (a bundle plus its results); `rel` gives the manifest's
    relative POSIX form of any of them.

        manifest.json  tflite/  data/  reference/  models/  results/  results.json
        overlays/  junit.xml  report.html  .edgepipe/
    """

    MANIFEST = "manifest.json"
    RESULTS = "results.json"

    def __init__(self, root):
        self.root = Path(root)

    def rel(self, path: Path) -> str:
        return Path(path).relative_to(self.root).as_posix()

    # The bundle (docs/bundle.md)
    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    @property
    def tflite_dir(self) -> Path:
        return self.root / "tflite"

    def variant(self, model: str, mode: str) -> Path:
        return self.tflite_dir / f"{model}.{mode}.tflite"

    def conversion_record(self, model: str, mode: str) -> Path:
        return self.tflite_dir / f"{model}.{mode}.json"

    def inputs(self, dataset: str, index: int | None = None) -> Path:
        """The test inputs of `dataset`, or of its model input `index` (several inputs)."""
        name = f"{dataset}.inputs.npy" if index is None else f"{dataset}.inputs.{index}.npy"
        return self.root / "data" / name

    def labels(self, dataset: str) -> Path:
        return self.root / "data" / f"{dataset}.labels.npy"

    def reference(self, model: str, layer: str | None = None) -> Path:
        """The Keras outputs of `model`, or the Keras inputs of one of its layers."""
        return self.root / "reference" / (f"{model}.{layer}.npy" if layer else f"{model}.npy")

    def layer_reference(self, model: str, index: int) -> Path:
        """The Keras outputs of the `index`-th layer of `model`'s `layers` block."""
        return self.root / "reference" / "layers" / f"{model}.{index}.npy"

    # What was trained (zoo models)
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def keras(self, model: str) -> Path:
        return self.models_dir / f"{model}.keras"

    def training_record(self, model: str) -> Path:
        return self.models_dir / f"{model}.json"

    # Results
    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def target_results(self, target: str) -> Path:
        return self.results_dir / f"{target_folder(target)}.json"

    @property
    def results(self) -> Path:
        return self.root / self.RESULTS

    @property
    def overlays_dir(self) -> Path:
        return self.root / "overlays"

    def overlay(self, model: str, tag: str, metric: str | None = None) -> Path:
        """A variant's Model Explorer node-data overlay (pipeline/overlay.py): the error, or
        another `metric` of its tensors. `tag`: its entry id after `<model>-`."""
        suffix = f".{metric}" if metric else ""
        return self.overlays_dir / f"{model}.{tag}.overlay{suffix}.json"

    @property
    def junit(self) -> Path:
        return self.root / "junit.xml"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    # edgepipe's own state: the stage record, the plot cache
    @property
    def state_dir(self) -> Path:
        return self.root / ".edgepipe"

    @property
    def stages(self) -> Path:
        return self.state_dir / "stages.json"

    @property
    def plots_dir(self) -> Path:
        return self.state_dir / "plots"


OUTPUTS = "outputs"  # beside a results file: OUTPUTS/<target folder>/<entry id>.npy


def outputs_dir(results_file: Path, target: str) -> Path:
    """Where the runner saves a target's outputs: `outputs/<target>/` beside its results file
    (inside the run folder, results/outputs/<target>/)."""
    return Path(results_file).parent / OUTPUTS / target_folder(target)
