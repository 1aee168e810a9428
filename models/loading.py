"""Load a `.keras` file with edgepipe's layers registered and Keras' safe_mode on.

The user's own layers come from `--custom-objects` files (models/custom_objects.py) and
`--unsafe` turns safe_mode off (Lambda layers): both are `LoadOptions`, given to `load_keras`
or set for a whole command with `with load_options(...)`. Every loaded model's weights are
checked to be finite before anything converts it.
"""

import contextvars
import json
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgepipeError


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
    import keras

    from . import activations  # noqa: F401  (registers the custom layers)

    options = options or _OPTIONS.get() or LoadOptions()
    path = Path(path)
    if not path.is_file():
        raise EdgepipeError(f"Model file {path} does not exist. Train one with `edgepipe train`.")
    if not zipfile.is_zipfile(path):
        raise EdgepipeError(f"{path} is not a .keras file (a .keras file is a zip archive; "
                            "save the model with model.save('name.keras')).")
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
