"""Load a `.keras` file with edgepipe's layers registered and Keras' safe_mode on."""

import json
import zipfile
from pathlib import Path

from .errors import EdgepipeError


def load_keras(path: Path):
    import keras

    from . import activations  # noqa: F401  (registers the custom layers)

    path = Path(path)
    if not path.is_file():
        raise EdgepipeError(f"Model file {path} does not exist. Train one with `edgepipe train`.")
    if not zipfile.is_zipfile(path):
        raise EdgepipeError(f"{path} is not a .keras file (a .keras file is a zip archive; "
                            "save the model with model.save('name.keras')).")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except (TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgepipeError(f"Cannot load {path}: {first[:300]}") from None


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
