"""Load a bundle (docs/bundle.md, schema version 1) and read its files safely.

Every path in the manifest is checked when the bundle is loaded: relative, POSIX-style, no `..`,
and (when the file exists) resolving inside the bundle, symlinks included. Any violation refuses
the whole bundle. Each file is then read once, its sha256 checked against the manifest, and only
those verified bytes are used (no second read that could differ).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ENTRY_STATUSES = ("converted", "unsupported", "failed")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


class BundleError(Exception):
    """A bundle that cannot be used as it is: one line saying what, where and what to do."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _short(digest: object) -> str:
    text = str(digest)
    return text[:12] + "..." if len(text) > 12 else text


class Bundle:
    """A loaded manifest and the folder it came from.

    Attributes: `root` (resolved folder), `manifest` (the parsed dict), `manifest_sha256`.
    """

    def __init__(self, root: Path, manifest: dict, manifest_sha256: str):
        self.root = root
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256
        self._arrays: dict = {}

    @property
    def entries(self) -> list:
        return self.manifest["entries"]

    @property
    def entry_ids(self) -> list:
        return [entry["id"] for entry in self.entries]

    def dataset(self, name: str) -> dict:
        return self._lookup("datasets", name)

    def model(self, name: str) -> dict:
        return self._lookup("models", name)

    def _lookup(self, section: str, name: str) -> dict:
        known = self.manifest.get(section) or {}
        if name not in known:
            raise BundleError(
                f"{MANIFEST}: {section[:-1]} {name!r} is not in {section!r} (known: "
                f"{', '.join(sorted(known)) or 'none'}); fix the manifest or rebuild the bundle")
        return known[name]

    def path(self, rel: object, where: str) -> Path:
        """The file `rel` names, checked to stay inside the bundle."""
        return resolve_inside(self.root, rel, where)

    def read(self, rel: object, sha256: object, where: str) -> bytes:
        """The bytes of `rel` after checking them against `sha256`."""
        if not isinstance(sha256, str) or not sha256:
            raise BundleError(
                f"{MANIFEST}: {where} has no sha256 for {rel!r}; every file a target runs must "
                f"carry one, rebuild the bundle")
        path = self.path(rel, where)
        if not path.is_file():
            raise BundleError(
                f"{rel}: file not found in bundle {self.root} (named by {where}); re-copy the "
                f"whole bundle folder")
        data = path.read_bytes()
        got = sha256_bytes(data)
        if got != sha256.lower():
            raise BundleError(
                f"{rel}: sha256 is {_short(got)} but the manifest expects {_short(sha256)} "
                f"({where}); the file changed after the bundle was made, re-copy or rebuild it")
        return data

    def array(self, rel: object, sha256: object, where: str) -> np.ndarray:
        """A verified `.npy` file (cached: each file is read and verified once per bundle)."""
        key = (rel, sha256)
        if key not in self._arrays:
            data = self.read(rel, sha256, where)
            try:
                self._arrays[key] = np.load(io.BytesIO(data), allow_pickle=False)
            except Exception as exc:
                raise BundleError(
                    f"{rel}: not a readable .npy array without pickle ({one_line(exc)}); "
                    f"rebuild the bundle") from None
        return self._arrays[key]


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line: its type when the message is empty, whitespace collapsed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_relative(rel: object, where: str) -> PurePosixPath:
    """A manifest path, refused unless it is a non-empty relative POSIX path without `..`."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(
            f"{MANIFEST}: {where} must be a relative path inside the bundle. Received: {rel!r}")
    fix = "paths must be relative POSIX paths inside the bundle; rebuild the bundle"
    if "\\" in rel:
        raise BundleError(f"{MANIFEST}: {where} = {rel!r} uses a backslash; {fix}")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"{MANIFEST}: {where} = {rel!r} is an absolute path; {fix}")
    if ".." in pure.parts:
        raise BundleError(f"{MANIFEST}: {where} = {rel!r} contains '..' (leaves the bundle); {fix}")
    return pure


def resolve_inside(root: Path, rel: object, where: str) -> Path:
    """`root / rel`, refused when `rel` is unsafe or resolves (through symlinks) outside root."""
    pure = check_relative(rel, where)
    candidate = root.joinpath(*pure.parts)
    resolved = Path(os.path.realpath(candidate))
    try:
        resolved.relative_to(root)
    except ValueError:
        raise BundleError(
            f"{MANIFEST}: {where} = {rel!r} resolves to {resolved}, outside the bundle {root} "
            f"(a symlink leads out); copy the file into the bundle instead of linking it") from None
    return candidate


def _manifest_paths(manifest: dict):
    """Every (where, path) pair the manifest names, for the checks at load time."""
    for name, dataset in sorted((manifest.get("datasets") or {}).items()):
        for key in ("inputs", "labels"):
            if dataset.get(key) is not None:
                yield f"datasets.{name}.{key}", dataset[key]
    for name, model in sorted((manifest.get("models") or {}).items()):
        if model.get("reference") is not None:
            yield f"models.{name}.reference", model["reference"]
        boundary = model.get("boundary") or {}
        for i, rel in enumerate(boundary.get("preact") or []):
            yield f"models.{name}.boundary.preact[{i}]", rel
    for i, entry in enumerate(manifest["entries"]):
        for key in ("tflite", "reference"):
            if entry.get(key) is not None:
                yield f"entries[{i}].{key} ({entry.get('id')})", entry[key]


def _check_structure(manifest: object, where: str) -> None:
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: expected a JSON object at the top level, got "
                          f"{type(manifest).__name__}; rebuild the bundle")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: schema_version {version!r} is not supported; this runner reads schema "
            f"version {SCHEMA_VERSION} only: rebuild the bundle with a matching edgepipe, or use "
            f"the device_tests that came with it")
    for key, kind in (("entries", list), ("datasets", dict), ("models", dict)):
        if not isinstance(manifest.get(key), kind):
            raise BundleError(f"{where}: '{key}' must be a JSON {kind.__name__}. Received: "
                              f"{type(manifest.get(key)).__name__}; rebuild the bundle")
    for key in ("datasets", "models"):
        for name, value in manifest[key].items():
            if not isinstance(value, dict):
                raise BundleError(f"{where}: {key}.{name} must be a JSON object. Received: "
                                  f"{type(value).__name__}; rebuild the bundle")
    if not manifest["entries"]:
        raise BundleError(f"{where}: 'entries' is empty, there is nothing to check; rebuild the "
                          f"bundle with at least one model and mode")
    seen = set()
    for i, entry in enumerate(manifest["entries"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise BundleError(f"{where}: entries[{i}] needs a non-empty string 'id'; rebuild "
                              f"the bundle")
        if not _SAFE_ID.match(entry["id"]):
            raise BundleError(f"{where}: entry id {entry['id']!r} may hold only letters, digits, "
                              f"'.', '_' and '-' (it names output files); rebuild the bundle")
        if entry["id"] in seen:
            raise BundleError(f"{where}: entry id {entry['id']!r} appears twice; ids must be "
                              f"unique, rebuild the bundle")
        seen.add(entry["id"])


def load_bundle(bundle_dir: str | os.PathLike) -> Bundle:
    """Read and check `bundle_dir/manifest.json`; raises BundleError on anything unusable."""
    given = Path(bundle_dir)
    if not given.is_dir():
        raise BundleError(f"{given}: not a folder; pass the bundle folder that holds {MANIFEST}")
    root = Path(os.path.realpath(given))
    manifest_path = root / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise BundleError(f"{given}: no {MANIFEST} (a regular file) in this folder; pass the "
                          f"bundle folder itself")
    data = manifest_path.read_bytes()
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({one_line(exc)}); rebuild the "
                          f"bundle") from None
    _check_structure(manifest, str(manifest_path))
    for where, rel in _manifest_paths(manifest):
        resolve_inside(root, rel, where)
    return Bundle(root, manifest, sha256_bytes(data))
