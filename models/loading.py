"""Load a user's Keras model (a `.keras` file, a legacy `.h5` file or a SavedModel folder) with
edgepipe's layers registered and Keras' safe_mode on.

The user's own layers come from `--custom-objects` files (models/custom_objects.py) and
`--unsafe` turns safe_mode off (Lambda layers): both are `LoadOptions`, given to `load_keras`
or set for a whole command with `with load_options(...)`. Every loaded model's weights are
checked to be finite before anything converts it.

A user's file is looked at before anything opens it for real (`regular_file`, `check_model`:
no TensorFlow needed), so a wrong path is answered at once and a FIFO or a device never hangs.
Why a model did not load is said in one line by models/load_errors.py.
"""

import contextvars
import json
import os
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
    # {class: note} for tutorial-style layers loaded with help: said once per class and command
    noted: dict = field(default_factory=dict, compare=False, repr=False)

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


@contextmanager
def fresh_layer_names():
    """Keras' automatic layer names counted from zero inside: a layer saved without a name (a
    tutorial layer whose __init__ takes no name) is then called the same (`step_up`) by every
    load in every process, not `step_up_1` by a process that loaded the model once before
    (the build worker and the repair worker must agree on layer names)."""
    import collections

    from keras.src.backend.common import global_state  # Keras' own counters; not public

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


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


# The kinds of model `load_keras` loads (`model_kind`).
KERAS, H5, SAVED_MODEL = "keras", "h5", "saved_model"
H5_SUFFIXES = (".h5", ".hdf5")  # as Keras' load_model tells them apart
MODEL_SUFFIXES = (".keras", *H5_SUFFIXES)
FORMATS = "a .keras file, a legacy .h5 file or a SavedModel folder"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def model_kind(path: Path) -> str:
    """KERAS, H5 or SAVED_MODEL, from the path alone (a stat, no reading); anything else is
    refused saying which format was found and what to pass instead."""
    path = Path(path)
    if is_saved_model(path):
        return SAVED_MODEL
    if path.suffix == ".keras":
        return KERAS
    if path.suffix in H5_SUFFIXES:
        return H5
    if path.suffix == ".tflite":
        raise EdgepipeError(f"{path} is a .tflite file, which cannot be converted again; pass "
                            "the Keras model it came from with --model and the .tflite with "
                            f"--tflite (`edgepipe check {path}` audits its ops).")
    if path.suffix in (".pb", ".pbtxt"):
        if path.stem == "saved_model":
            raise EdgepipeError(f"{path} is the graph file of a SavedModel: pass the folder "
                                f"that holds it and its variables/ ({path.absolute().parent}).")
        raise EdgepipeError(f"{path} is a TensorFlow graph file ({path.suffix}) outside a "
                            "SavedModel folder (a frozen graph?), which edgepipe cannot load; "
                            f"pass the model it came from: {FORMATS}.")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir())
        if {"variables", "fingerprint.pb", "keras_metadata.pb", "assets"} & set(inside):
            raise EdgepipeError(f"{path} looks like a SavedModel folder but has no "
                                "saved_model.pb; pass the whole folder model.export() or "
                                "tf.saved_model.save() wrote.")
        models = [n for n in inside if Path(n).suffix in MODEL_SUFFIXES]
        has = (f"it holds {', '.join(models[:3])}: pass one of them" if models
               else f"it holds no .keras or .h5 file either; pass {FORMATS}")
        raise EdgepipeError(f"{path} is a folder without saved_model.pb, so not a SavedModel; "
                            f"{has}.")
    regular_file(path, "Model file", f"Pass {FORMATS}.")
    raise EdgepipeError(f"Expected a Keras model: {FORMATS}. Received: {path}")


def check_model(path: Path) -> str:
    """`model_kind`, and what can be seen of the file without TensorFlow (`check_keras_file`,
    `check_h5_file`): a wrong path or format is answered before TensorFlow's import (~15 s)."""
    kind = model_kind(path)
    if kind == KERAS:
        check_keras_file(Path(path))
    elif kind == H5:
        check_h5_file(Path(path))
    return kind


def check_h5_file(path: Path) -> None:
    """A regular HDF5 file holding a whole model (model.save('m.h5')), not weights alone."""
    hint = "Save the model with model.save('name.keras') (or model.save('name.h5'))."
    regular_file(path, "Model file", hint)
    with open(path, "rb") as f:
        heads = [(f.seek(at), f.read(8))[1] for at in (0, 512, 1024, 2048)]  # after a user block
    if HDF5_SIGNATURE not in heads:
        what = ("it is a zip archive (a .keras file? name it .keras)" if heads[0][:2] == b"PK"
                else not_an_archive(path, ValueError()))
        raise EdgepipeError(f"{path} is not a legacy .h5 model, which is an HDF5 file: {what}. "
                            f"{hint}")
    import h5py  # Keras' own dependency; no TensorFlow

    try:
        with h5py.File(path, "r") as f:
            whole = "model_config" in f.attrs
    except OSError as e:
        raise EdgepipeError(f"Cannot read model file {path} (a damaged HDF5 file?): {e}.") from None
    if not whole:
        raise EdgepipeError(f"{path} holds weights only (model.save_weights), not a model; build "
                            "the model in Python, load these weights into it and save it with "
                            "model.save('name.keras').")


UNSAFE_WARNING = ("--unsafe: Keras safe_mode is off, so Lambda layers in the models run "
                  "their Python code; load only files you trust.")


def tolerated(cls, keys: list[str]) -> None:
    """A layer of class `cls` was built without the base-Layer `keys` its __init__ refuses
    (custom_objects.tolerate_base_keys): note it once per class and command."""
    from .custom_objects import source_file

    options = _OPTIONS.get()
    if options is None or cls in options.noted:
        return
    where = source_file(cls)
    options.noted[cls] = (
        f"layer class {cls.__name__!r}{f' ({where})' if where else ''}: its __init__ does not "
        f"accept {', '.join(keys)}, which Keras saves for every layer; edgepipe built it "
        "without them and set them afterwards. To load it without help, write "
        "`def __init__(self, **kwargs): super().__init__(**kwargs)` (plus its own arguments).")
    _say_note(options.noted[cls])


def _say_note(text: str) -> None:
    """A note on stderr. Not from a `--jobs` worker: the parent loads every user's model once
    before the workers start (`run`'s check of the models), and said it there."""
    import multiprocessing
    import sys

    if multiprocessing.parent_process() is None:
        print(f"note: {text}", file=sys.stderr, flush=True)


def load_keras(path: Path, options: LoadOptions | None = None):
    """A Keras model from a .keras file, a legacy .h5 file (Keras' legacy loader, with the same
    safe_mode and custom objects) or a SavedModel folder (models/saved_model.py)."""
    path = Path(path)
    kind = check_model(path)
    import keras

    from . import activations  # noqa: F401  (registers the custom layers)
    from .load_errors import build_failure, layer_failure, load_failure

    options = options or _OPTIONS.get() or LoadOptions()
    if kind == SAVED_MODEL:
        from .saved_model import load_saved_model

        model = load_saved_model(path)
    else:
        error = None
        try:
            # `tolerated` notes go to this command's options
            with load_options(options), fresh_layer_names():
                model = keras.models.load_model(
                    path, custom_objects=options.custom_objects or None,
                    safe_mode=not options.unsafe, compile=kind == KERAS)
        except Exception as e:  # a user's file: whatever it raises is bad input, said in one line
            error = e
        if error is not None:  # explained outside the handler: a diagnosis that rebuilds the
            raise load_failure(path, error, options)  # model must not chain onto this error
        failed = build_failure(model)
        if failed:
            raise layer_failure(path, *failed, options)
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


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a Keras model: its name (an input's is the name its SavedModel
    signature and its .tflite use, `serving_default_<name>:0`), its shape without the batch axis
    (None where any size goes) and its dtype ("float32", "int32", ...)."""

    name: str
    shape: tuple
    dtype: str

    @property
    def integer(self) -> bool:
        """Token ids or indices: fed as given, never standardised or quantized."""
        return self.dtype.startswith(("int", "uint"))


@dataclass(frozen=True)
class ModelIO:
    """Every input and output of a model, in the model's order (`describe_io`)."""

    path: str
    inputs: tuple  # of TensorSpec
    outputs: tuple  # of TensorSpec

    @property
    def names(self) -> tuple:
        return tuple(t.name for t in self.inputs)

    def output(self) -> TensorSpec:
        """The one output edgepipe compares; a model with several is refused in one line."""
        if len(self.outputs) != 1:
            names = ", ".join(repr(t.name) for t in self.outputs)
            raise EdgepipeError(f"{self.path}: the model has {len(self.outputs)} outputs "
                                f"({names}); edgepipe compares models with one output: save a "
                                "model per output (keras.Model(inputs, outputs[i])) and check "
                                "each.")
        return self.outputs[0]


def describe_io(model, path) -> ModelIO:
    """The model's inputs and outputs (name, shape without the batch axis, dtype). Inputs may
    be floats or integers (token ids into an Embedding); anything else is refused, naming it."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = []
    if not inputs or not outputs:
        raise EdgepipeError(f"{path}: the model has no defined inputs (a subclassed model?); "
                            "save a functional or Sequential model built on keras.Input.")
    output_names = list(getattr(model, "output_names", None) or [])
    if len(output_names) != len(outputs):
        output_names = [t.name for t in outputs]
    specs = tuple(TensorSpec(str(t.name), tuple(t.shape[1:]), str(getattr(t, "dtype", "float32")))
                  for t in inputs)
    for spec in specs:
        if not spec.integer and not spec.dtype.startswith(("float", "bfloat")):
            raise EdgepipeError(f"{path}: the model's input {spec.name!r} has dtype "
                                f"{spec.dtype}; edgepipe feeds models numbers: float inputs "
                                "(quantized in the integer modes) or integer ones (token ids, "
                                "fed as given).")
    return ModelIO(str(path), specs, tuple(
        TensorSpec(str(name), tuple(t.shape[1:]), str(getattr(t, "dtype", "float32")))
        for name, t in zip(output_names, outputs, strict=True)))


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
