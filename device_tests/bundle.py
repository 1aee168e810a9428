"""Load a bundle (docs/bundle.md, schema version 1) and read its files safely.

Every field of the manifest is checked when the bundle is loaded: its type and range, the names
it refers to, and every path: relative, POSIX-style, no `..`, and (when the file exists)
resolving inside the bundle, symlinks included. Any violation refuses the whole bundle with one
line naming the field. Each file is then read once, its sha256 checked against the manifest,
and only those verified bytes are used (no second read that could differ).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from .metrics import ToleranceError, finite_number, read_bounds
from .schema import (
    MANIFEST_SCHEMA_VERSION,
    SAFE_ID,
    ConversionStatus,
    RunFolder,
    leads_out,
    resolved_inside,
)

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")  # converters' QuantMode values
TASKS = ("classification", "regression")
# What a model input's test samples may be stored as: float32, or integers (token ids).
INPUT_DTYPES = ("float32", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                "uint64")
KINK_KINDS = ("jump", "slope")  # pipeline/boundary.py: a threshold, a change of slope
MAX_MANIFEST_BYTES = 64 * 2 ** 20
MAX_DEPTH = 32  # lists and objects inside one another; edgepipe's manifest nests 8 at most
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


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
                f"{RunFolder.MANIFEST}: {section[:-1]} {name!r} is not in {section!r} (known: "
                f"{', '.join(sorted(known)) or 'none'}); fix the manifest or rebuild the bundle")
        return known[name]

    def path(self, rel: object, where: str) -> Path:
        """The file `rel` names, checked to stay inside the bundle."""
        return resolve_inside(self.root, rel, where)

    def read(self, rel: object, sha256: object, where: str) -> bytes:
        """The bytes of `rel` after checking them against `sha256`."""
        if not isinstance(sha256, str) or not sha256:
            raise BundleError(
                f"{RunFolder.MANIFEST}: {where} has no sha256 for {rel!r}; every file a target "
                f"runs must carry one, rebuild the bundle")
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


def dataset_inputs(dataset: dict) -> list:
    """A manifest dataset's test input files, in the model's input order: its `input_files`
    (a model with several inputs: each {"name", "path", "sha256", "dtype"}), or its one
    `inputs` file as [{"name": None, "path", "sha256"}]."""
    if dataset.get("input_files") is not None:
        return list(dataset["input_files"])
    return [{"name": None, "path": dataset.get("inputs"), "sha256": dataset.get("inputs_sha256")}]


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line: its type when the message is empty, whitespace collapsed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_relative(rel: object, where: str) -> PurePosixPath:
    """A manifest path, refused unless it is a non-empty relative POSIX path without `..`."""
    fix = "paths must be relative POSIX paths inside the bundle; rebuild the bundle"
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{where} must be a relative path inside the bundle. Received: "
                          f"{_shown(rel)}; rebuild the bundle")
    if "\x00" in rel:  # no file name holds one; os calls raise ValueError on it
        raise BundleError(f"{where} = {_shown(rel)} holds a NUL character; {fix}")
    if "\\" in rel:
        raise BundleError(f"{where} = {_shown(rel)} uses a backslash; {fix}")
    how = leads_out(rel, "the bundle")
    if how is not None:
        raise BundleError(f"{where} = {_shown(rel)} {how}; {fix}")
    pure = PurePosixPath(rel)
    if any(len(part.encode("utf-8", "replace")) > 255 for part in pure.parts):
        raise BundleError(f"{where} = {_shown(rel)} has a name longer than 255 bytes, which no "
                          f"file system holds; rebuild the bundle")
    return pure


def resolve_inside(root: Path, rel: object, where: str) -> Path:
    """`root / rel`, refused when `rel` is unsafe or resolves (through symlinks) outside root."""
    pure = check_relative(rel, where)
    candidate = root.joinpath(*pure.parts)
    resolved, inside = resolved_inside(root, candidate)
    if not inside:
        raise BundleError(
            f"{where} = {_shown(rel)} resolves to {resolved}, outside the bundle {root} "
            f"(a symlink leads out); copy the file into the bundle instead of linking it")
    return candidate


# ---------------------------------------------------------------------------- the manifest's
# field types (docs/bundle.md). Every field the runner or the pipeline reads is checked here,
# once, when the bundle is loaded: what passes cannot raise a TypeError or KeyError later.

def _shown(value: object) -> str:
    """A manifest value as JSON, cut to one short line."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse(where: str, expected: str, value: object) -> None:
    raise BundleError(f"{where} must be {expected}. Received: {_shown(value)}; rebuild the "
                      f"bundle")


def _text(value: object, where: str) -> None:
    if not isinstance(value, str):
        _refuse(where, "a string", value)


def _whole(low: int):
    """A check for a whole number from `low` to 2**63 - 1 (what a 64-bit size can hold)."""
    def check(value: object, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2 ** 63:
            _refuse(where, f"a whole number from {low} to 2**63 - 1", value)
    return check


_count, _size = _whole(1), _whole(0)


def _integer(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2 ** 63:
        _refuse(where, "a whole number (64 bits)", value)


def _number(value: object, where: str) -> None:
    if not finite_number(value):
        _refuse(where, "a finite number", value)


def _positive(value: object, where: str) -> None:
    if not finite_number(value) or value <= 0:
        _refuse(where, "a finite number > 0", value)


def _at_least_zero(value: object, where: str) -> None:
    if not finite_number(value) or value < 0:
        _refuse(where, "a finite number >= 0", value)


def _sha256(value: object, where: str) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        _refuse(where, "a sha256 (64 hexadecimal digits)", value)


def _object(value: object, where: str) -> None:
    if not isinstance(value, dict):
        _refuse(where, "a JSON object", value)


def _key_of(section: str, known: dict):
    def check(value: object, where: str) -> None:
        if not isinstance(value, str) or value not in known:
            names = ", ".join(list(known)[:10]) + (", ..." if len(known) > 10 else "")
            _refuse(where, f"a key of '{section}' ({names or 'none'})", value)
    return check


def _one_of(choices: tuple):
    def check(value: object, where: str) -> None:
        if not isinstance(value, str) or value not in choices:
            _refuse(where, f"one of {', '.join(choices)}", value)
    return check


def _list_of(check, length: int | None = None):
    def check_list(value: object, where: str) -> None:
        if not isinstance(value, list):
            _refuse(where, "a JSON list", value)
        if length is not None and len(value) != length:
            _refuse(where, f"a list of {length} (one per boundary.preact file)", value)
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")
    return check_list


def _inside(root: Path):
    def check(rel: object, where: str) -> None:
        resolve_inside(root, rel, where)
    return check


def _strings_object(value: object, where: str) -> None:
    _object(value, where)
    for key, item in value.items():
        if item is not None:
            _text(item, f"{where}.{key}")


class _Fields:
    """One JSON object of the manifest; `get` reads a field and checks its type."""

    def __init__(self, value: object, where: str):
        _object(value, where)
        self.value, self.where = value, where

    def get(self, key: str, check, required: bool = False):
        value = self.value.get(key)
        if value is None and required:
            raise BundleError(f"{self.where}.{key} is missing (or null); rebuild the bundle")
        if value is not None:
            check(value, f"{self.where}.{key}" if self.where else key)
        return value


def _check_nesting_and_text(manifest: object) -> None:
    """No list or object nested deeper than MAX_DEPTH (the pipeline walks them recursively),
    and no string that is not Unicode text: JSON's \\ud800 escapes decode to lone surrogates,
    which every later file write or path lookup would fail on. Walked without recursion."""
    stack = [(manifest, "", 1)]
    while stack:
        item, where, depth = stack.pop()
        texts = [item] if isinstance(item, str) else list(item) if isinstance(item, dict) else []
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise BundleError(f"{where or 'the top level'} holds {_shown(text)}, a lone "
                                  f"surrogate that is not Unicode text; rebuild the "
                                  f"bundle") from None
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise BundleError(f"lists and objects nest more than {MAX_DEPTH} levels deep; "
                                  f"an edgepipe manifest nests a few: rebuild the bundle")
            if isinstance(item, dict):
                stack.extend((child, f"{where}.{key}" if where else key, depth + 1)
                             for key, child in item.items())
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def _check_input_file(fields: _Fields, root: Path) -> None:
    fields.get("name", _text, required=True)
    fields.get("path", _inside(root), required=True)
    fields.get("sha256", _sha256, required=True)
    fields.get("dtype", _one_of(INPUT_DTYPES), required=True)


def _check_dataset(fields: _Fields, root: Path) -> None:
    fields.get("task", _one_of(TASKS), required=True)
    files = fields.get("input_files", _list_of(_object))
    if files is None:  # one model input: one file
        fields.get("inputs", _inside(root), required=True)
        fields.get("inputs_sha256", _sha256, required=True)
    else:
        if not files or "inputs" in fields.value:
            _refuse(f"{fields.where}.input_files", "a non-empty list (one file per model "
                    "input), given instead of inputs", files)
        for i, item in enumerate(files):
            _check_input_file(_Fields(item, f"{fields.where}.input_files[{i}]"), root)
        names = [item["name"] for item in files]
        if len(set(names)) != len(names):
            _refuse(f"{fields.where}.input_files", "one entry per model input (unique names)",
                    names)
    fields.get("labels", _inside(root), required=True)
    fields.get("labels_sha256", _sha256, required=True)
    fields.get("samples", _count)
    fields.get("y_mean", _number)
    fields.get("y_std", _positive)
    fields.get("classes", _count)
    fields.get("sha256", _strings_object)


def _check_kink(value: object, where: str) -> None:
    kink = _Fields(value, where)
    kink.get("at", _number, required=True)
    kink.get("kind", _one_of(KINK_KINDS))
    kink.get("height", _number)
    kink.get("slopes", _list_of(_number))


def _check_boundary(fields: _Fields, root: Path) -> None:
    preact = fields.get("preact", _list_of(_inside(root)), required=True)
    fields.get("preact_sha256", _list_of(_sha256, len(preact)), required=True)
    fields.get("layers", _list_of(_text, len(preact)), required=True)
    # `kinks`, one list per layer; a bundle written before kinks were probed has one `kink`
    kink = fields.get("kink", _number)
    fields.get("kinks", _list_of(_list_of(_check_kink), len(preact)), required=kink is None)
    steps = fields.get("input_steps", _object) or {}
    for mode, values in steps.items():
        _one_of(MODES)(mode, f"{fields.where}.input_steps key")
        _list_of(_number, len(preact))(values, f"{fields.where}.input_steps.{mode}")
        for i, step in enumerate(values):
            if step < 0:
                _refuse(f"{fields.where}.input_steps.{mode}[{i}]", "a number >= 0", step)


def _check_layer_outputs(fields: _Fields, root: Path, test_samples: object) -> None:
    """`models.<name>.layers`: each layer's Keras output on some samples of the test split."""
    samples = fields.get("samples", _list_of(_size), required=True)
    if samples != sorted(set(samples)) or (isinstance(test_samples, int) and samples
                                           and samples[-1] >= test_samples):
        _refuse(f"{fields.where}.samples", "distinct ascending indices into the test split "
                f"({test_samples} samples)", samples)
    for i, item in enumerate(fields.get("outputs", _list_of(_object), required=True)):
        output = _Fields(item, f"{fields.where}.outputs[{i}]")
        output.get("layer", _text, required=True)
        output.get("class", _text)
        output.get("path", _inside(root), required=True)
        output.get("sha256", _sha256, required=True)
        shape = output.get("shape", _list_of(_size), required=True)
        if not shape or shape[0] != len(samples):
            _refuse(f"{output.where}.shape", f"a shape whose first axis is {len(samples)} (one "
                    "row per sample)", shape)
        output.get("range", _positive, required=True)


def _check_layer_row(fields: _Fields) -> None:
    """`entries[i].layers[j]`: a tensor of the variant mapped to a Keras layer."""
    for key in ("layer", "op", "tensor_name", "dtype"):
        fields.get(key, _text, required=key != "tensor_name")
    fields.get("tensor", _size, required=True)
    fields.get("scale", _at_least_zero)
    fields.get("zero_point", _integer)
    fields.get("simulated", _at_least_zero)
    fields.get("bound", _at_least_zero)


def _check_model(fields: _Fields, root: Path, datasets: dict) -> None:
    dataset = fields.get("dataset", _key_of("datasets", datasets), required=True)
    fields.get("reference", _inside(root), required=True)
    fields.get("reference_sha256", _sha256, required=True)
    for key in ("activation", "family", "keras_sha256"):
        fields.get(key, _text)
    fields.get("training", _object)
    boundary = fields.get("boundary", _object)
    if boundary is not None:
        _check_boundary(_Fields(boundary, f"{fields.where}.boundary"), root)
    layers = fields.get("layers", _object)
    if layers is not None:
        _check_layer_outputs(_Fields(layers, f"{fields.where}.layers"), root,
                             datasets[dataset].get("samples"))


def _check_finding(fields: _Fields) -> None:
    """A float op inside an integer variant (runner.integer_only_refusal reads it)."""
    fields.get("op", _text, required=True)
    fields.get("index", _size, required=True)
    fields.get("subgraph", _size)
    fields.get("types", _list_of(_text))
    fields.get("message", _text)
    fields.get("rewrite", _text)


def _check_entry(fields: _Fields, root: Path, models: dict, datasets: dict) -> None:
    model = fields.get("model", _key_of("models", models), required=True)
    fields.get("mode", _one_of(MODES), required=True)
    status = fields.get("status", _one_of(ConversionStatus.values()), required=True)
    converted = status == ConversionStatus.CONVERTED
    fields.get("reason", _text)
    fields.get("tflite", _inside(root), required=converted)
    fields.get("sha256", _sha256, required=converted)
    fields.get("bytes", _size)
    fields.get("dataset", _key_of("datasets", datasets))
    reference = fields.get("reference", _inside(root))
    if fields.get("reference_sha256", _sha256) is None and converted and \
            reference not in (None, models[model]["reference"]):
        raise BundleError(f"{fields.where}.reference_sha256 is missing: the entry names its "
                          f"own reference {_shown(reference)}, and every file a target runs "
                          f"must carry a sha256; rebuild the bundle")
    fields.get("expected_ops", _list_of(_text))
    fields.get("converter", _object)
    fields.get("given", _text)
    fields.get("fixed_batch", _size)
    for i, finding in enumerate(fields.get("findings", _list_of(_object)) or ()):
        _check_finding(_Fields(finding, f"{fields.where}.findings[{i}]"))
    for i, row in enumerate(fields.get("layers", _list_of(_object)) or ()):
        _check_layer_row(_Fields(row, f"{fields.where}.layers[{i}]"))
    for i, fused in enumerate(fields.get("layers_fused", _list_of(_object)) or ()):
        for key in ("layer", "into"):
            _Fields(fused, f"{fields.where}.layers_fused[{i}]").get(key, _text, required=True)
    for target, bound in (fields.get("target_bounds", _object) or {}).items():
        checked = _Fields(bound, f"{fields.where}.target_bounds.{target}")
        checked.get("steps", _at_least_zero, required=True)
        checked.get("derivation", _text)
        checked.get("ops", _list_of(_object))
    tolerance = fields.get("tolerance", _object, required=converted)
    if tolerance is not None:
        try:
            read_bounds(tolerance)
        except ToleranceError as exc:
            raise BundleError(f"{fields.where}: {exc}; rebuild the bundle") from None


def _check_manifest(manifest: object, root: Path) -> None:
    """Every field's type, range and cross-reference; BundleError naming the first bad one."""
    _check_nesting_and_text(manifest)
    if not isinstance(manifest, dict):
        _refuse("the top level", "a JSON object", manifest)
    top = _Fields(manifest, "")
    version = manifest.get("schema_version")
    if type(version) is not int or version != MANIFEST_SCHEMA_VERSION:
        raise BundleError(
            f"schema_version {_shown(version)} is not supported; this runner reads schema "
            f"version {MANIFEST_SCHEMA_VERSION} only: rebuild the bundle with a matching "
            f"edgepipe, or use the device_tests that came with it")
    top.get("created_by", _text)
    top.get("versions", _strings_object)
    top.get("seed", _integer)
    for key, kind in (("entries", list), ("datasets", dict), ("models", dict)):
        if not isinstance(manifest.get(key), kind):
            _refuse(key, "a JSON list" if kind is list else "a JSON object", manifest.get(key))
    datasets, models = manifest["datasets"], manifest["models"]
    for name, dataset in datasets.items():
        _check_dataset(_Fields(dataset, f"datasets.{name}"), root)
    for name, model in models.items():
        _check_model(_Fields(model, f"models.{name}"), root, datasets)
    if not manifest["entries"]:
        raise BundleError("'entries' is empty, there is nothing to check; rebuild the bundle "
                          "with at least one model and mode")
    seen = set()
    for i, entry in enumerate(manifest["entries"]):
        fields = _Fields(entry, f"entries[{i}]")
        entry_id = fields.get("id", _text, required=True)
        if not SAFE_ID.fullmatch(entry_id):
            raise BundleError(f"entries[{i}].id {_shown(entry_id)} must be 1 to 200 letters, "
                              f"digits, '.', '_' or '-' (it names output files); rebuild the "
                              f"bundle")
        if entry_id in seen:
            raise BundleError(f"entries[{i}].id {entry_id!r} appears twice; ids must be "
                              f"unique, rebuild the bundle")
        seen.add(entry_id)
        fields.where = f"entries[{i}] ({entry_id})"
        _check_entry(fields, root, models, datasets)
    ids = set(seen)

    def an_entry(value: object, where: str) -> None:
        if not isinstance(value, str) or value not in ids:
            _refuse(where, "the id of an entry of this manifest", value)

    for entry in manifest["entries"]:
        repair = _Fields(entry, f"entries ({entry['id']})").get("repair", _object)
        if repair is not None:  # a repaired variant: its label, and the entry it repairs
            where = f"entries ({entry['id']}).repair"
            _Fields(repair, where).get("label", _text, required=True)
            _Fields(repair, where).get("of", an_entry, required=True)
    for i, record in enumerate(_Fields(manifest, "manifest").get("repairs", _list_of(_object))
                               or ()):
        _Fields(record, f"repairs[{i}]").get("of", an_entry, required=True)
    failed = _Fields(manifest, "manifest").get("failed_models", _object) or {}
    for name, why in failed.items():  # models whose job died on a cluster worker
        _text(why, f"manifest.failed_models.{name}")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON (a number must be finite)")


def load_bundle(bundle_dir: str | os.PathLike) -> Bundle:
    """Read and check `bundle_dir/manifest.json`; raises BundleError on anything unusable."""
    given = Path(bundle_dir)
    if not given.is_dir():
        raise BundleError(f"{given}: not a folder; pass the bundle folder that holds "
                          f"{RunFolder.MANIFEST}")
    root = Path(os.path.realpath(given))
    manifest_path, shown = RunFolder(root).manifest, RunFolder(given).manifest
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise BundleError(f"{given}: no {RunFolder.MANIFEST} (a regular file) in this folder; "
                          f"pass the bundle folder itself")
    try:
        size = manifest_path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{shown}: {size} bytes, more than any manifest edgepipe writes "
                              f"({MAX_MANIFEST_BYTES // 2 ** 20} MiB at most); rebuild the bundle")
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{shown}: cannot be read ({exc.strerror or one_line(exc)}); check "
                          f"its permissions") from None
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise BundleError(f"{shown}: not valid JSON (lists or objects nest too deeply to "
                          f"read); rebuild the bundle") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{shown}: not valid JSON ({one_line(exc)}); rebuild the "
                          f"bundle") from None
    try:
        _check_manifest(manifest, root)
    except BundleError as exc:
        raise BundleError(f"{shown}: {exc}") from None
    return Bundle(root, manifest, sha256_bytes(data))
