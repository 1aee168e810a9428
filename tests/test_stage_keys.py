"""Stage keys cannot go stale: a stage's code is the import closure of the modules it declares.

The rooms are copied into a temporary `edgepipe` package and the keys computed in a fresh
Python with that copy first on PYTHONPATH (it wins over the editable install), from a tiny fake
run folder: no training, no TensorFlow. Then one module that only one stage runs is edited in a
copy of the copy, and exactly the stages whose code holds it must get a new key.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgepipe.device_tests.schema import ConversionStatus, RunFolder

ROOMS = ("core", "models", "converters", "pipeline", "device_tests")
MODEL = "mlp_swish"
MODES = ("float32", "int8")
TARGETS = ("host", "tflm")
# Stage order: an edit may change its own stage and later ones, never an earlier one.
ORDER = ("train", "convert", "bundle", *(f"parity:{t}" for t in TARGETS), "collect")

# The keys of every stage of MODEL, as `edgepipe run` computes them, from the run folder argv[1].
KEYS = f"""
import json, sys
from pathlib import Path

import edgepipe.pipeline.stages
from edgepipe.converters.modes import QuantMode
from edgepipe.device_tests.schema import RunFolder
from edgepipe.pipeline.build import STAGES, stage_key
from edgepipe.pipeline.config import RunConfig
from edgepipe.pipeline.parity import entry_key, target_key
from edgepipe.pipeline.results import collect
from edgepipe.pipeline.targets import TargetOptions


class Spy:
    # collect's stage record: keep its key and say it is fresh, so nothing is merged
    def fresh(self, name, key):
        keys[name] = key
        return True


folder = RunFolder(sys.argv[1])
config = RunConfig(models=({MODEL!r},), modes=tuple(QuantMode(m) for m in {MODES!r}),
                   targets={TARGETS!r}, epochs=3)
keys = {{stage: stage_key(stage, config, folder.root, {MODEL!r}) for stage in STAGES}}
manifest = json.loads(folder.manifest.read_text())
for target in {TARGETS!r}:
    keys["parity:" + target] = entry_key(target_key(target, TargetOptions()),
                                         manifest["entries"][0], manifest)
collect(folder.root, Spy())
print(json.dumps({{"source": edgepipe.pipeline.stages.__file__, "keys": keys,
                  "tensorflow": "tensorflow" in sys.modules}}))
"""

# Each stage's closure, and the file of every module in it.
CLOSURES = f"""
import json

from edgepipe.pipeline.build import STAGES, stage_modules
from edgepipe.pipeline import parity
from edgepipe.pipeline.results import collect
from edgepipe.pipeline.stages import closure, source_file
from edgepipe.pipeline.targets import get_target

declared = {{stage: stage_modules(stage) for stage in STAGES}}
for target in {TARGETS!r}:
    declared["parity:" + target] = parity.stage_modules(target)
declared["collect"] = (collect.__module__,)
print(json.dumps({{stage: {{m: str(source_file(m)) for m in closure(*modules)}}
                  for stage, modules in declared.items()}}))
"""


def python(root: Path, script: str, *args) -> dict:
    """Run `script` in a fresh Python that imports edgepipe from `root`."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def copy_rooms(root: Path) -> Path:
    """The installed rooms, copied as the package `edgepipe` under `root`."""
    for room in ROOMS:
        spec = importlib.util.find_spec(f"edgepipe.{room}")
        shutil.copytree(list(spec.submodule_search_locations)[0], root / "edgepipe" / room,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def module_file(root: Path, module: str) -> Path:
    base = root.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def fake_run_folder(out: Path) -> Path:
    """Just what the stage keys read: a model and its training record, a conversion record per
    mode, a manifest with one entry, one target's results, results.json."""
    folder = RunFolder(out)
    folder.models_dir.mkdir(parents=True)
    folder.keras(MODEL).write_bytes(b"not a model: the keys only hash it")
    folder.training_record(MODEL).write_text("{}")
    folder.tflite_dir.mkdir()
    for mode in MODES:
        folder.conversion_record(MODEL, mode).write_text(json.dumps(
            {"status": ConversionStatus.CONVERTED, "file": f"{MODEL}.{mode}.tflite",
             "seconds": 1.0}))
    folder.manifest.write_text(json.dumps({
        "models": {MODEL: {"dataset": "digits", "reference_sha256": "0" * 64}},
        "datasets": {"digits": {"inputs_sha256": "1" * 64, "labels_sha256": "2" * 64,
                                "samples": 4}},
        "entries": [{"id": f"{MODEL}-int8", "model": MODEL, "mode": "int8",
                     "sha256": "3" * 64}]}))
    folder.results_dir.mkdir()
    folder.target_results("host").write_text("{}")
    folder.results.write_text("{}")
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A copy of the rooms, the fake run folder and the keys computed from them."""
    root = copy_rooms(tmp_path_factory.mktemp("pristine"))
    out = fake_run_folder(tmp_path_factory.mktemp("run"))
    return root, out, python(root, KEYS, out)


def test_the_keys_come_from_the_copy_without_tensorflow(pristine):
    root, _, computed = pristine
    assert Path(computed["source"]).is_relative_to(root)  # PYTHONPATH won
    assert set(computed["keys"]) == set(ORDER)
    assert not computed["tensorflow"]


# Each edit, and the stages whose key it must change. A later stage that reads an upstream
# stage's artifacts (convert: the .keras file; parity: the manifest's entry; collect: the
# results files) changes when those do, which the fake run folder holds still; the bundle stage
# holds the convert stage's key itself.
EDITS = [
    pytest.param("edgepipe.models.training", {"train"}, id="training"),
    pytest.param("edgepipe.pipeline.stage_train", {"train"}, id="train-stage"),
    pytest.param("edgepipe.models.activations.swish", {"train", "convert", "bundle"},
                 id="activation-layer"),  # loading a .keras file imports the layers too
    pytest.param("edgepipe.pipeline.conversion", {"convert", "bundle"}, id="conversion"),
    pytest.param("edgepipe.converters.variants", {"convert", "bundle"}, id="converter"),
    pytest.param("edgepipe.pipeline.bundle", {"bundle"}, id="bundle-writer"),
    pytest.param("edgepipe.pipeline.tolerances", {"bundle"}, id="tolerances"),
    pytest.param("edgepipe.pipeline.build", {"train", "convert", "bundle"}, id="orchestration"),
    pytest.param("edgepipe.device_tests.runner", {"parity:host", "parity:tflm", "collect"},
                 id="runner"),
    pytest.param("edgepipe.pipeline.results", {"collect"}, id="merge"),
    pytest.param("edgepipe.pipeline.parity", {"parity:host", "parity:tflm"},
                 id="parity"),
    pytest.param("edgepipe.pipeline.report", {"collect"}, id="report"),
]


@pytest.mark.parametrize("module, changed", EDITS)
def test_an_edit_redoes_exactly_the_stages_that_run_it(pristine, tmp_path, module, changed):
    root, out, before = pristine
    edited = tmp_path / "edited"
    shutil.copytree(root / "edgepipe", edited / "edgepipe")  # elsewhere: keys hash no paths
    path = module_file(edited, module)
    path.write_text(path.read_text() + "\n# an edit\n")
    after = python(edited, KEYS, out)["keys"]
    assert {s for s in ORDER if after[s] != before["keys"][s]} == changed
    first = min(ORDER.index(s) for s in changed)
    assert all(after[s] == before["keys"][s] for s in ORDER[:first])  # upstream: unchanged


@pytest.fixture(scope="module")
def closures(pristine):
    return python(pristine[0], CLOSURES)


def test_every_module_of_every_closure_is_a_file_of_the_copy(pristine, closures):
    root = pristine[0]
    assert set(closures) == set(ORDER)
    for modules in closures.values():
        for module, path in modules.items():
            assert Path(path).is_file() and Path(path) == module_file(root, module), module


def test_each_closure_holds_what_the_stage_runs_and_no_more(closures):
    def rooms(stage):
        return {m.split(".")[1] for m in closures[stage]}

    for stage in ("train", "convert", "bundle"):
        assert {"edgepipe.core.files", "edgepipe.core.versions", "edgepipe.core.errors",
                "edgepipe.pipeline.build"} <= set(closures[stage]), stage
    assert "converters" not in rooms("train")
    assert {"edgepipe.models.training", "edgepipe.models.activations.step"} <= set(
        closures["train"])  # the layers, imported by name (models/registry.py)
    assert {"edgepipe.pipeline.conversion", "edgepipe.converters.variants"} <= set(
        closures["convert"])
    assert "edgepipe.models.training" not in closures["convert"]
    assert {"edgepipe.pipeline.bundle", "edgepipe.pipeline.tolerances"} <= set(
        closures["bundle"])
    for target in TARGETS:
        assert {"edgepipe.device_tests.runner", "edgepipe.device_tests.metrics",
                f"edgepipe.pipeline.targets.{target}"} <= set(closures[f"parity:{target}"])
        assert rooms(f"parity:{target}") <= {"core", "converters", "device_tests", "pipeline"}
        assert "edgepipe.pipeline.build" not in closures[f"parity:{target}"]
    assert {"edgepipe.pipeline.results", "edgepipe.core.files"} <= set(closures["collect"])
    assert any(m.startswith("edgepipe.pipeline.report") for m in closures["collect"])


# Every way an import is written, in a made-up room `probe`.
PROBE = {
    "__init__.py": "",
    "top.py": "import json\n\nfrom . import sub\nfrom .helpers import VALUE\nfrom .pkg import leaf"
              "\n\n\ndef later():\n    import importlib\n\n    from ..probe import lazy\n\n"
              "    return importlib.import_module('.dynamic', __package__), lazy, VALUE\n",
    "sub.py": "import edgepipe.probe.chain\n",
    "chain.py": "",
    "helpers.py": "VALUE = 1\n",
    "pkg/__init__.py": "from .inner import X\n",
    "pkg/inner.py": "X = 1\n",
    "pkg/leaf.py": "",
    "lazy.py": "",
    "dynamic.py": "",
    "unused.py": "",
    "broken.py": "from .nowhere import name\n",
}
SCAN = """
import json
from edgepipe.pipeline.stages import closure
try:
    closure("edgepipe.probe.broken")
    broken = None
except LookupError as exc:
    broken = str(exc)
print(json.dumps({"top": closure("edgepipe.probe.top"), "broken": broken}))
"""


def test_the_scan_follows_every_form_of_import(pristine, tmp_path):
    root = tmp_path / "probed"
    shutil.copytree(pristine[0] / "edgepipe", root / "edgepipe")
    for rel, text in PROBE.items():
        (root / "edgepipe" / "probe" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "edgepipe" / "probe" / rel).write_text(text)
    scanned = python(root, SCAN)
    expected = {"", ".top", ".sub", ".chain", ".helpers", ".pkg", ".pkg.inner", ".pkg.leaf",
                ".lazy", ".dynamic"}
    assert set(scanned["top"]) == {f"edgepipe.probe{m}" for m in expected}
    assert "edgepipe.probe.nowhere" in scanned["broken"]
