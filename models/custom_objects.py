"""`--custom-objects PATH.py`: the user's own layers, imported from a file for deserialization.

Every `keras.layers.Layer` subclass the file defines (not those it imports), and everything in an
optional `CUSTOM_OBJECTS = {"name": object}` dict, is offered to `keras.models.load_model` under
its class name (dict: its key). Plain, unregistered tf.keras-style layers then load: Keras 3
looks an unregistered class up by its class name in the custom objects it is given.

`custom_object_files` only checks paths (no TensorFlow); `import_custom_objects` runs the files.
"""

import hashlib
import importlib.util
import inspect
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
            if name in found and found[name] is not obj:
                raise EdgepipeError(f"Custom object {name!r} is defined both in {origin[name]} "
                                    f"and in {path}; pass only one of them.")
            found[name], origin[name] = obj, path
    return found
