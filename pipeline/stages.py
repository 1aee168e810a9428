"""Incremental runs: a stage is redone only when the key of its inputs changed.

A stage's key is a sha256 over everything that decides its outputs: the code that computes it,
the settings, the data and the upstream artifacts (their sha256). The run folder remembers, per
stage, the key it was last done with and the sha256 of each file it wrote
(`.edgepipe/stages.json`). A stage is reused only when the key is equal and every file it wrote
is still there, byte for byte; `--force` redoes everything.
"""

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

from ..core.files import sha256_file, write_json

CACHE = Path(".edgepipe") / "stages.json"
CACHE_SCHEMA = 1


def digest(*parts) -> str:
    """A stable sha256 of JSON-able parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def code_version(*parts: str) -> str:
    """sha256 over the source of edgepipe's rooms ("models") or single modules
    ("pipeline/bundle.py"), as installed: any edit to the code a stage runs redoes it."""
    h = hashlib.sha256()
    for part in parts:
        room, _, module = part.partition("/")
        spec = importlib.util.find_spec(f"edgepipe.{room}")
        root = Path(list(spec.submodule_search_locations)[0])
        files = [root / module] if module else sorted(root.rglob("*.py"))
        for path in files:
            h.update(f"{room}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class Stages:
    """The record of the stages done in one run folder."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.force = force
        self.path = self.out / CACHE
        try:
            document = json.loads(self.path.read_text())
            self.done_stages = document["stages"] if document.get("schema") == CACHE_SCHEMA else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.done_stages = {}  # none yet, or unreadable: every stage is redone

    def fresh(self, name: str, key: str) -> bool:
        """Done with this key, and every file it wrote is unchanged."""
        done = self.done_stages.get(name)
        if self.force or not done or done.get("key") != key:
            return False
        for rel, sha in done.get("outputs", {}).items():
            path = self.out / rel
            if not path.is_file() or sha256_file(path) != sha:
                return False
        return True

    def value(self, name: str):
        """What the stage returned when it was done (fresh stages only)."""
        return self.done_stages[name].get("value")

    def record(self, name: str, key: str, outputs=(), value=None) -> None:
        """Remember a finished stage that wrote `outputs` (paths relative to the run folder);
        `save` writes the record down."""
        files = {}
        for rel in outputs:
            files[Path(rel).as_posix()] = sha256_file(self.out / rel)
        self.done_stages[name] = {"key": key, "outputs": files, "value": value}

    def save(self) -> None:
        """Written after each job: an interrupted run keeps the stages it finished."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"schema": CACHE_SCHEMA, "stages": self.done_stages})
