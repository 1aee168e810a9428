"""`--custom-objects PATH.py`: the user's own layers, imported from a file for deserialization.

Every `keras.layers.Layer` subclass the file defines (not those it imports), and everything in an
optional `CUSTOM_OBJECTS = {"name": object}` dict, is offered to `keras.models.load_model` under
its class name (dict: its key). Plain, unregistered tf.keras-style layers then load: Keras 3
looks an unregistered class up by its class name in the custom objects it is given.

Layers written the tutorial way (`def __init__(self): super().__init__()`, no **kwargs) cannot
take back the base-Layer keys Keras saves for every layer (`name`, `trainable`, `dtype`): such a
class gets a `from_config` that builds it with the arguments its signature accepts and sets those
attributes afterwards (`tolerate_base_keys`), decided from the signature alone.

`custom_object_files` only checks paths (no TensorFlow); `import_custom_objects` runs the files.
"""

import hashlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path

from ..core.errors import EdgepipeError
from .loading import regular_file


def custom_object_files(values) -> tuple[Path, ...]:
    """`--custom-objects a.py --custom-objects b.py,c.py` -> the files, each checked to exist."""
    files: list[Path] = []
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            path = Path(part).expanduser()
            if path.suffix != ".py":
                raise EdgepipeError(f"Custom objects file {path} is not a .py file; pass the "
                                    "Python module that defines your layers "
                                    "(--custom-objects layers.py).")
            regular_file(path, "Custom objects file", "Pass the Python module that defines "
                         "your layers (--custom-objects layers.py).")
            if path not in files:
                files.append(path)
    return tuple(files)


def _module_name(path: Path) -> str:
    """One name per file path and content: an edited file is imported afresh."""
    digest = hashlib.sha256(str(path.resolve()).encode() + path.read_bytes()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"edgepipe_custom_objects_{stem}_{digest}"


def _import_failure(path: Path, error: BaseException) -> EdgepipeError:
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    if line is None:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        line = frames[-1].lineno if frames else None
    text = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
    where = f" (line {line})" if line else ""
    return EdgepipeError(f"Cannot import custom objects from {path}{where}: {detail}. Fix the "
                         f"module (`python {path}` shows the traceback).")


def _import_file(path: Path):
    name = _module_name(path)
    if name in sys.modules:  # the same file twice in one process: the same classes
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and inspect look modules up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # a helper module beside it may be imported
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        del sys.modules[name]
        raise _import_failure(path, e) from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def import_custom_objects(files) -> dict:
    """{name: class or function} from every file; the names Keras will look up."""
    import keras

    found: dict = {}
    origin: dict = {}
    for path in files:
        module = _import_file(Path(path))
        objects = {name: obj for name, obj in inspect.getmembers(module, inspect.isclass)
                   if issubclass(obj, keras.layers.Layer) and obj.__module__ == module.__name__}
        objects = {obj.__name__: obj for obj in objects.values()}
        extra = getattr(module, "CUSTOM_OBJECTS", None)
        if extra is not None:
            if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
                raise EdgepipeError(f"CUSTOM_OBJECTS in {path} must be a dict of name -> class "
                                    f"or function; got {type(extra).__name__}.")
            objects.update(extra)
        for name, obj in objects.items():
            if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer):
                tolerate_base_keys(obj)
            if name in found and found[name] is not obj:
                raise EdgepipeError(f"Custom object {name!r} is defined both in {origin[name]} "
                                    f"and in {path}; pass only one of them.")
            found[name], origin[name] = obj, path
    return found


# Keys Keras may save in a layer's config for the base Layer rather than for the class itself:
# Layer.__init__'s keyword arguments, and the input-shape keys of configs tf.keras 2 wrote (.h5).
LEGACY_BASE_KEYS = frozenset({"input_shape", "input_dim", "batch_input_shape", "batch_size"})


def base_keys() -> frozenset:
    import keras

    own = inspect.signature(keras.layers.Layer.__init__).parameters.values()
    return frozenset(p.name for p in own if p.kind is p.KEYWORD_ONLY) | LEGACY_BASE_KEYS | {"name"}


def init_keywords(cls) -> frozenset | None:
    """The keyword arguments `cls.__init__` accepts, or None when it takes **kwargs (any)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def refused_base_keys(cls) -> frozenset:
    accepted = init_keywords(cls)
    return frozenset() if accepted is None else base_keys() - accepted


def tolerate_base_keys(cls) -> None:
    """Let Keras load `cls` although its __init__ refuses base-Layer keys it saved (a tutorial
    layer: `def __init__(self): super().__init__()`). The class's own `from_config` is wrapped,
    unless the user wrote one (then it is theirs to get right). This mutates the class of a
    module imported for this process only (`_import_file`), or of a CUSTOM_OBJECTS entry."""
    if not refused_base_keys(cls) or cls.__module__.startswith("keras."):
        return
    owner = next(k for k in cls.__mro__ if "from_config" in vars(k))
    if getattr(owner.from_config, "_edgepipe_tolerant", False):
        return  # done already (the same class from a module imported earlier)
    if not owner.__module__.startswith("keras."):
        return
    inherited = cls.from_config.__func__

    def from_config(klass, config):
        refused = refused_base_keys(klass)  # a subclass may accept what its base refused
        dropped = {k: v for k, v in config.items() if k in refused}
        instance = inherited(klass, {k: v for k, v in config.items() if k not in dropped})
        if dropped:
            _set_base_attributes(instance, dropped)
            from .loading import tolerated

            tolerated(klass, sorted(dropped))
        return instance

    from_config._edgepipe_tolerant = True
    cls.from_config = classmethod(from_config)


def _set_base_attributes(layer, saved: dict) -> None:
    """What Layer.__init__ would have done with the keys the class's own __init__ refused."""
    import keras

    if saved.get("name"):
        layer.name = saved["name"]
    if "trainable" in saved:
        layer.trainable = bool(saved["trainable"])
    if saved.get("dtype") is not None:
        layer.dtype_policy = keras.dtype_policies.get(saved["dtype"])
    if saved.get("activity_regularizer") is not None:
        layer.activity_regularizer = keras.regularizers.get(saved["activity_regularizer"])
    if "autocast" in saved:
        layer.autocast = bool(saved["autocast"])
    # input_shape and kin: the model's InputLayer holds the shape in Keras 3


def source_file(obj) -> str | None:
    """The file a user's class or function came from, as the user named it."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    return getattr(module, "__file__", None)


_INTERNAL = re.compile(r"edgepipe_custom_objects_\w*?_[0-9a-f]{12}\b")


def user_names(text: str) -> str:
    """`text` with the internal module names of --custom-objects files replaced by the files:
    `<class 'edgepipe_custom_objects_layers_<hash>.Swish'>` -> `'Swish' (layers.py)`."""

    def file_of(name: str) -> str:
        return getattr(sys.modules.get(name), "__file__", None) or "a --custom-objects file"

    text = re.sub(r"<class '(" + _INTERNAL.pattern + r")\.([\w.]+)'>",
                  lambda m: f"'{m.group(2)}' ({file_of(m.group(1))})", text)
    return _INTERNAL.sub(lambda m: file_of(m.group(0)), text)
