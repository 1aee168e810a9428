"""The versions a record must carry to be reproducible (no TensorFlow import)."""

import platform
from importlib import metadata

DISTRIBUTIONS = ("edgepipe", "tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn",
                 "ai-edge-litert", "tflite-micro")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
