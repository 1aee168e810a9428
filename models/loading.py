"""Load a `.keras` file with edgepipe's layers registered and Keras' safe_mode on.

The user's own layers come from `--custom-objects` files (models/custom_objects.py) and
`--unsafe` turns safe_mode off (Lambda layers): both are `LoadOptions`, given to `load_keras`
or set for a whole command with `with load_options(...)`. Every loaded model's weights are
checked to be finite before anything converts it.

A user's file is looked at before anything opens it for real (`regular_file`, `check_keras_file`:
no TensorFlow needed), so a wrong path is answered at once and a FIFO or a device never hangs.
"""

import contextvars
import json
import os
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import EdgepipeError
from ..core.files import file_kind
from ..device_tests.schema import leads_out


@dataclass(frozen=True)
class LoadOptions:
    custom_objects: dict = field(default_factory=dict)  # {name: class or function}
    sources: tuple = ()  # the --custom-objects files they came from, for messages
    unsafe: bool = False  # Keras safe_mode off: Lambda layers run their Python code

    @classmethod
    def from_files(cls, files, unsafe: bool = False) -> "LoadOptions":
        from .custom_objects import import_custom_objects

        return cls(import_custom_objects(files), tuple(str(f) for f in files), unsafe)


_OPTIONS: contextvars.ContextVar = contextvars.ContextVar("edgepipe_load_options",
                                                          default=None)


@contextmanager
def load_options(options: LoadOptions):
    """Every `load_keras` inside uses `options` (a command's --custom-objects / --unsafe)."""
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)


def regular_file(path: Path, what: str, hint: str) -> None:
    """Refuse `path` unless it is a regular file (a link to one is fine), from its stat alone:
    opening a FIFO blocks for ever and /dev/zero never ends. `what` names the file in the
    message ("Data file"), `hint` says what to pass instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise EdgepipeError(f"{what} {path} is a symbolic link to {os.readlink(path)}, "
                                f"which does not exist. {hint}") from None
        raise EdgepipeError(f"{what} {path} does not exist. {hint}") from None
    except OSError as e:
        raise EdgepipeError(f"Cannot read {what.lower()} {path}: {e.strerror}. {hint}") from None
    if file_kind(mode):
        raise EdgepipeError(f"{what} {path} is {file_kind(mode)}, not a regular file. {hint}")


def not_an_archive(path: Path, error: Exception) -> str:
    """Why a regular file that should be a zip archive is none, for a message: "it is empty",
    "it starts with text '<html>...'", "it is a damaged zip archive (...)"."""
    with open(path, "rb") as f:
        head = f.read(48)
    if not head:
        return "it is empty (0 bytes)"
    if head.startswith(b"PK"):
        return f"it is a damaged zip archive ({error})"
    if head.startswith(b"\x93NUMPY"):
        return "it is a single .npy array (numpy.save)"
    text = head.decode("utf-8", "replace").rstrip("\ufffd")  # a character cut at byte 48
    if "\ufffd" not in text and all(c.isprintable() or c.isspace() for c in text):
        return f"it starts with text {text.strip()[:40]!r}"
    return f"it starts with bytes {head[:12].hex(' ')}"


KERAS_HINT = "Save the model with model.save('name.keras')."


def check_keras_file(path: Path) -> None:
    """What can be seen of a .keras file without Keras: a regular file, a zip archive, with a
    config.json and no member whose name leads out of the folder it is extracted into (Keras
    skips those with a warning each; Keras never writes one, so the file was made by hand)."""
    regular_file(path, "Model file", "Train one with `edgepipe train`, or save yours with "
                 "model.save('name.keras').")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except OSError as e:
        raise EdgepipeError(f"Cannot read model file {path}: {e.strerror}.") from None
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise EdgepipeError(f"{path} is not a .keras file (a .keras file is a zip archive; "
                            f"{not_an_archive(path, e)}). {KERAS_HINT}") from None
    escaping = [name for name in names if leads_out(name)]  # "zip slip"
    if escaping:
        raise EdgepipeError(f"{path} holds {len(escaping)} member(s) whose names lead out of the "
                            f"folder it is extracted into ({escaping[0]!r}); Keras never writes "
                            "such names, so the file was altered: load only the model as Keras "
                            "saved it.")
    if "config.json" not in names:
        given = ", ".join(map(repr, names[:5])) or "nothing"
        raise EdgepipeError(f"{path} is a zip archive but not a .keras model: it has no "
                            f"config.json (it has: {given}). {KERAS_HINT}")


UNSAFE_WARNING = ("--unsafe: Keras safe_mode is off, so Lambda layers in the .keras files run "
                  "their Python code; load only files you trust.")


def _saved_layers(path: Path) -> list[dict]:
    """Every layer config in the archive's config.json (nested models included), best effort."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    layers = []

    def walk(node, in_layers=False):
        if isinstance(node, dict):
            if in_layers and "class_name" in node:
                layers.append(node)
            for key, value in node.items():
                walk(value, key == "layers")
        elif isinstance(node, list):
            for value in node:
                walk(value, in_layers)

    walk(config)
    return layers


def _layer_name(layer: dict) -> str:
    return str((layer.get("config") or {}).get("name") or layer.get("name") or "?")


def _load_failure(path: Path, error: Exception, options: LoadOptions) -> EdgepipeError:
    """Keras' deserialization errors are paragraphs; say in one line what to do."""
    text = str(error)
    layers = _saved_layers(path)
    missing = re.search(r"Could not locate (class|function) '([^']+)'", text)
    if missing:
        kind, name = missing.groups()
        saved = [layer for layer in layers if name in (layer.get("class_name"),
                                                        layer.get("registered_name"))]
        what = "layer class" if saved else kind
        module = saved[0].get("module") if saved else None
        hint = f" (it was saved from module {module!r})" if module else ""
        given = (f"; the --custom-objects files ({', '.join(options.sources)}) define "
                 f"{', '.join(sorted(options.custom_objects)) or 'nothing usable'}"
                 if options.sources else "")
        return EdgepipeError(f"Cannot load {path}: {what} {name!r} is not known; pass "
                             f"--custom-objects path/to/module.py that defines it{hint}{given}.")
    if "safe_mode" in text:
        lambdas = [_layer_name(layer) for layer in layers if layer.get("class_name") == "Lambda"]
        what = (f"a Lambda layer ({', '.join(map(repr, lambdas))})" if lambdas
                else "a Python lambda")
        return EdgepipeError(f"Cannot load {path}: it holds {what}, whose Python code Keras will "
                             "not run in safe mode; pass --unsafe if you trust this file.")
    if "Exception encountered:" in text:
        text = text.split("Exception encountered:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()),
                 type(error).__name__)
    return EdgepipeError(f"Cannot load {path}: {first[:300]}")


def load_keras(path: Path, options: LoadOptions | None = None):
    path = Path(path)
    check_keras_file(path)
    import keras

    from . import activations  # noqa: F401  (registers the custom layers)

    options = options or _OPTIONS.get() or LoadOptions()
    try:
        model = keras.models.load_model(path, custom_objects=options.custom_objects or None,
                                        safe_mode=not options.unsafe)
    except Exception as e:  # a user's file: whatever it raises is bad input, said in one line
        raise _load_failure(path, e, options) from None
    check_weights(model, path)
    return model


def check_weights(model, path) -> None:
    """Refuse weights holding NaN or Inf, naming the layer: the converter would carry them into
    every variant, and calibration would compute NaN scales."""
    import numpy as np

    for layer in _leaf_layers(model):
        for w in layer.weights:
            value = np.asarray(w.numpy())
            if not np.issubdtype(value.dtype, np.floating) or np.isfinite(value).all():
                continue
            bad = int((~np.isfinite(value)).sum())
            raise EdgepipeError(f"{path}: the weights of layer {layer.name!r} hold NaN or Inf "
                                f"({w.path}: {bad} of {value.size} values); retrain the model or "
                                "fix those weights before converting.")


def _leaf_layers(model):
    for layer in model.layers:
        if getattr(layer, "layers", None):  # a nested model: name its own layers
            yield from _leaf_layers(layer)
        else:
            yield layer


def single_io(model, path) -> tuple[tuple, tuple]:
    """(input shape, output shape) without the batch axis; one float input and one output."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = []
    if not inputs or not outputs:
        raise EdgepipeError(f"{path}: the model has no defined inputs (a subclassed model?); "
                            "save a functional or Sequential model built on keras.Input.")
    if len(inputs) != 1 or len(outputs) != 1:
        raise EdgepipeError(f"{path}: the model has {len(inputs)} inputs and {len(outputs)} "
                            "outputs; edgepipe converts and checks models with one of each.")
    dtype = str(getattr(inputs[0], "dtype", "float32"))
    if not dtype.startswith(("float", "bfloat")):
        raise EdgepipeError(f"{path}: the model's input has dtype {dtype}; edgepipe feeds it "
                            "float32 samples (and quantizes them), so its input must be a float.")
    return tuple(inputs[0].shape[1:]), tuple(outputs[0].shape[1:])


def training_record(keras_path: Path) -> dict | None:
    """The JSON record `edgepipe train` wrote beside the model, if there is one."""
    record = Path(keras_path).with_suffix(".json")
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "dataset" in data else None
