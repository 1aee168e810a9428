"""Why a user's model did not load, in one line: the innermost cause, the user's class and file.

Keras nests its deserialization errors ("... Exception encountered: ... Exception encountered:
...") and chains them; the first line is a generic "could not be deserialized properly". The
cause a user can act on is the innermost exception, and the class it names came from a file of
theirs (never the internal module name `--custom-objects` files are imported under).

A Sequential model hides some errors altogether: `Sequential.build` returns quietly on a
NotImplementedError, and a Lambda turns any error of its function into one, so a Lambda calling
an undefined `tf` loads as a model without inputs. `build_failure` rebuilds the chain to raise it.
"""

import json
import re
import zipfile
from pathlib import Path

from ..core.errors import EdgepipeError

CAUSE_CHARS = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Where Keras' texts name the class being rebuilt or called, innermost last.
_CLASS_NAMES = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>|deserializing class '(\w+)'"
                          r"|\b(\w+)\.__init__\(\)|calling (\w+)\.call\(\)")
_IN_LAMBDA = re.compile(r"calling Lambda\.call\(\)|the Lambda's output")
LAMBDA_HINT = ("a Lambda's code runs where the model is loaded, without the imports and names "
               "of the script that saved it: move it into a named function (CUSTOM_OBJECTS = "
               "{'name': function}) or a layer class in a file passed with --custom-objects, "
               "and save the model again")


def saved_layers(path: Path) -> list[dict]:
    """Every layer config in the saved model (nested models included), best effort: a .keras
    archive's config.json, or a legacy .h5 file's model_config."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                config = json.loads(f.attrs["model_config"])
    except Exception:  # noqa: BLE001  (a description for a message: whatever it is, skip it)
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


def _inner(error: BaseException) -> BaseException | None:
    # Also a suppressed context: Keras re-raises its errors `from None` to shorten tracebacks.
    return error.__cause__ or error.__context__


def innermost(error: BaseException) -> BaseException:
    """The last exception of the chain: the one raised first."""
    seen = {id(error)}
    while True:
        inner = _inner(error)
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


def cause_line(error: BaseException) -> str:
    """`NameError: name 'tf' is not defined`: the innermost exception, its first line, without
    Keras' nesting and terminal colours, internal module names replaced by the user's files."""
    from .custom_objects import user_names

    inner = innermost(error)
    text = _ANSI.sub("", str(inner)).rsplit("Exception encountered:", 1)[-1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = user_names(first)[:CAUSE_CHARS].rstrip(".")
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


def _chain_text(error: BaseException) -> str:
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(_ANSI.sub("", str(error)))
        error = _inner(error)
    return "\n".join(parts)


def _user_class(text: str, custom_objects: dict):
    """(name, class) of the innermost user's class the texts name, or None."""
    by_name = {getattr(obj, "__name__", key): obj for key, obj in custom_objects.items()}
    by_name.update(custom_objects)
    names = [next(g for g in m.groups() if g) for m in _CLASS_NAMES.finditer(text)]
    for name in reversed(names):
        if name in by_name and isinstance(by_name[name], type):
            return name, by_name[name]
    return None


def _hint(cause: str, name: str) -> str:
    """What to change in class `name`, from the innermost cause."""
    missing = re.search(r"missing \d+ required (?:positional|keyword-only) arguments?: (.+)$",
                        cause)
    if missing:
        args = missing.group(1).replace(" and ", ", ")
        them = "them defaults" if "," in args else "it a default"
        return (f"return {args} from {name}.get_config() or give {them} in __init__, then save "
                "the model again")
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", cause)
    if unexpected:
        key = unexpected.group(1)
        return (f"let {name}.__init__ accept {key!r} (def __init__(self, ..., **kwargs): "
                f"super().__init__(**kwargs)) or stop returning it from get_config()")
    return f"fix {name} (`edgepipe --debug` shows the traceback)"


def load_failure(path: Path, error: Exception, options) -> EdgepipeError:
    """Keras' deserialization errors are paragraphs; say in one line what to do."""
    from .custom_objects import source_file, user_names

    text = _chain_text(error)
    layers = saved_layers(path)
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
    rebuilt = None if zipfile.is_zipfile(path) else _h5_architecture(path, options)
    failed = build_failure(rebuilt) if rebuilt is not None else None
    if failed:  # the legacy loader went on to the weights, and failed there instead
        return layer_failure(path, *failed, options)
    cause = cause_line(error)
    if _IN_LAMBDA.search(text):
        lambdas = [_layer_name(layer) for layer in layers if layer.get("class_name") == "Lambda"]
        which = f" ({', '.join(map(repr, lambdas))})" if lambdas else ""
        return EdgepipeError(f"Cannot load {path}: a Lambda layer{which} raised {cause} while "
                             f"the model was built; {LAMBDA_HINT}.")
    found = _user_class(text, options.custom_objects)
    if found:
        name, cls = found
        where = source_file(cls) or "your --custom-objects file"
        return EdgepipeError(f"Cannot load {path}: layer class {name!r} from {where} raised "
                             f"{cause}; {_hint(cause, name)}.")
    return EdgepipeError(user_names(f"Cannot load {path}: {cause}."))


def _h5_architecture(path: Path, options):
    """A legacy .h5 file's model without its weights, built as Keras' legacy loader builds it
    (no public API does this alone); None when that fails too."""
    try:
        import h5py
        from keras.src.legacy.saving import saving_options, saving_utils
        from keras.src.saving.serialization_lib import SafeModeScope

        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
        with saving_options.keras_option_scope(use_legacy_config=True), \
                SafeModeScope(not options.unsafe):
            return saving_utils.model_from_config(config, custom_objects=dict(
                options.custom_objects))
    except Exception:  # noqa: BLE001  (a diagnosis only: the load's own error is said instead)
        return None


def build_failure(model):
    """(layer, exception) when a loaded Sequential model has no inputs because one of its
    layers raised while Keras built it (Sequential.build swallows NotImplementedError, which a
    Lambda raises for any error of its function); None when it is not that case."""
    import keras

    if not isinstance(model, keras.Sequential):
        return None
    try:
        if model.inputs:
            return None
    except (AttributeError, ValueError):
        pass
    layers = getattr(model, "_layers", None) or []  # Keras keeps the InputLayer only there
    if not layers or not isinstance(layers[0], keras.layers.InputLayer):
        return None
    x = layers[0].output
    for layer in layers[1:]:
        try:
            x = layer(x)
        except Exception as e:  # noqa: BLE001  (reported, with its innermost cause)
            return layer, e
    return None


def layer_failure(path: Path, layer, error: Exception, options) -> EdgepipeError:
    """A layer that raised while the model was built (`build_failure`)."""
    import keras

    from .custom_objects import source_file

    cause = cause_line(error)
    if isinstance(layer, keras.layers.Lambda):
        return EdgepipeError(f"Cannot load {path}: Lambda layer {layer.name!r} raised {cause} "
                             f"while the model was built; {LAMBDA_HINT}.")
    cls = type(layer)
    where = source_file(cls) if cls in options.custom_objects.values() else None
    origin = f" (class {cls.__name__!r} from {where})" if where else ""
    return EdgepipeError(f"Cannot load {path}: layer {layer.name!r}{origin} raised {cause} "
                         f"while the model was built; {_hint(cause, cls.__name__)}.")
