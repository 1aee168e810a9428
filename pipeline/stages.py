"""Incremental runs: a stage is redone only when the key of its inputs changed.

A stage's key is a sha256 over everything that decides its outputs: the code that computes it,
the settings, the data and the upstream artifacts (their sha256). The run folder remembers, per
stage, the key it was last done with and the sha256 of each file it wrote
(`.edgepipe/stages.json`). A stage is reused only when the key is equal and every file it wrote
is still there, byte for byte; `--force` redoes everything.

The code of a stage is derived, never listed by hand: a stage names the module(s) that do its
work, and `code_key` hashes their import closure, every edgepipe module they import, directly
or not (`closure`). The imports are read from the source (`ast`), not by importing it: keys are
computed without TensorFlow, and an import inside a function counts as much as one at the top.
A list typed by hand goes stale the day a module moves or gains an import; the closure cannot.
"""

import ast
import functools
import hashlib
import importlib.util
import json
from pathlib import Path

from ..core.files import sha256_file, write_json
from ..device_tests.schema import RunFolder

CACHE_SCHEMA = 1
ROOT = "edgepipe"  # the package whose modules are code; the rest (numpy, TensorFlow) are versions


def digest(*parts) -> str:
    """A stable sha256 of JSON-able parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def code_key(*modules: str) -> str:
    """sha256 over the name and source of every module in the closure of `modules` (dotted
    names, e.g. "edgepipe.pipeline.stage_train"): any edit to the code a stage runs redoes it.
    Names, not paths, are hashed, so a copy of the same code elsewhere has the same key."""
    h = hashlib.sha256()
    for module in closure(*modules):
        path = source_file(module)
        h.update(f"{module}:{path.name}\0".encode())  # x.py and x/__init__.py differ
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@functools.cache
def closure(*modules: str) -> tuple[str, ...]:
    """The sorted names of `modules` and of every edgepipe module they import, transitively."""
    seen: set[str] = set()
    todo = [m for module in modules for m in _with_packages(module, "the stage declaration")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imports(module)
    return tuple(sorted(seen))


@functools.cache
def imports(module: str) -> tuple[str, ...]:
    """The edgepipe modules `module`'s source imports anywhere in it (and the packages whose
    `__init__.py` those imports run); from `from pkg import name`, `pkg.name` when it is a
    module; from `importlib.import_module("literal", __package__)`, the module it names. A
    module reached by a computed name is not seen: declare it (build.py's stage modules)."""
    path = source_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names
                      if _is_module(f"{base}.{alias.name}")]
        elif (_called(node) == "import_module" and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            name = node.args[0].value  # absolute, or relative to __package__ (the house's way)
            level = len(name) - len(name.lstrip("."))
            found.append(_absolute(name[level:], level, package))
    return tuple(sorted({m for name in found if _in_root(name)
                         for m in _with_packages(name, module)}))


def source_file(module: str) -> Path:
    """The source of an edgepipe module, found as Python would import it (the editable install,
    or PYTHONPATH first), without importing it."""
    path = _find(module)
    if path is None:
        raise LookupError(f"Expected {module} to be an edgepipe module. Received: no such "
                          "file in any of edgepipe's packages.")
    return path


def _find(module: str) -> Path | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != ROOT:
        return None
    room = _package_dir(".".join(parts[:2]))
    if room is None:
        return None
    base = room.joinpath(*parts[2:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


@functools.cache
def _package_dir(room: str) -> Path | None:
    """Where the top package `edgepipe.<room>` is (its parent, a namespace package, has no
    `__init__.py` to run). find_spec of `edgepipe.<room>` does not run the room's own code."""
    try:
        spec = importlib.util.find_spec(room)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _is_module(module: str) -> bool:
    return _find(module) is not None


def _with_packages(module: str, importer: str) -> list[str]:
    """`module` and the packages above it: importing a.b.c runs a/b/__init__.py too."""
    parts = module.split(".")
    names = [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
    for name in names:
        if _find(name) is None:
            raise LookupError(f"Expected {name} (imported by {importer}) to be an edgepipe "
                              "module. Received: no such file; fix the import or the name.")
    return names


def _absolute(name: str, level: int, package: str) -> str:
    """The absolute name of `from <level dots><name> import ...` in `package`."""
    if not level:
        return name
    parts = package.split(".")
    base = parts[:len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _called(node: ast.AST) -> str | None:
    """The name of the function a call with arguments calls (`f(x)`, `m.f(x)`), else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return node.func.id if isinstance(node.func, ast.Name) else None


def _in_root(name: str) -> bool:
    return name == ROOT or name.startswith(f"{ROOT}.")


class Stages:
    """The record of the stages done in one run folder."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.force = force  # redo every stage once in this run: those it records are fresh
        self.redone: set = set()
        self.path = RunFolder(self.out).stages
        try:
            document = json.loads(self.path.read_text())
            self.done_stages = document["stages"] if document.get("schema") == CACHE_SCHEMA else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.done_stages = {}  # none yet, or unreadable: every stage is redone

    def fresh(self, name: str, key: str) -> bool:
        """Done with this key, and every file it wrote is unchanged."""
        done = self.done_stages.get(name)
        if (self.force and name not in self.redone) or not done or done.get("key") != key:
            return False
        for rel, sha in done.get("outputs", {}).items():
            path = self.out / rel
            if not path.is_file() or sha256_file(path) != sha:
                return False
        return True

    def outputs_of(self, names) -> list[str]:
        """The files (relative to the run folder) the stages `names` wrote, as recorded."""
        return [rel for name in names for rel in self.done_stages.get(name, {}).get("outputs", {})]

    def value(self, name: str):
        """What the stage returned when it was done (fresh stages only)."""
        return self.done_stages[name].get("value")

    def seconds(self, names) -> float | None:
        """What the stages `names` took when last done (fresh or not), or None when one of
        them has no time on record."""
        times = [self.done_stages.get(name, {}).get("seconds") for name in names]
        return None if None in times else sum(times)

    def record(self, name: str, key: str, outputs=(), value=None,
               seconds: float | None = None) -> None:
        """Remember a finished stage that wrote `outputs` (paths relative to the run folder)
        in `seconds`; `save` writes the record down."""
        files = {}
        for rel in outputs:
            files[Path(rel).as_posix()] = sha256_file(self.out / rel)
        self.done_stages[name] = {"key": key, "outputs": files, "value": value}
        if seconds is not None:
            self.done_stages[name]["seconds"] = round(seconds, 3)
        self.redone.add(name)

    def save(self) -> None:
        """Written after each job: an interrupted run keeps the stages it finished."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"schema": CACHE_SCHEMA, "stages": self.done_stages})
