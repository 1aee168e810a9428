"""Write the bundle (docs/bundle.md): inputs, Keras references, variants, tolerances, manifest."""

from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..core.files import atomic_path, sha256_file, write_json
from ..core.versions import versions
from ..device_tests.schema import MANIFEST_SCHEMA_VERSION, ConversionStatus, RunFolder
from ..models.datasets import Dataset, Task
from ..models.loading import training_record
from .tolerances import derive, simulate

KINKS = {"Step": 0.0, "PiecewiseLinear": 0.0}  # activations whose error concentrates at a kink


def save_npy(folder: RunFolder, path: Path, array: np.ndarray) -> dict:
    """`array` saved at `path` in the run folder; its manifest path (relative) and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, array)
    return {"path": folder.rel(path), "sha256": sha256_file(path)}


def dataset_block(root: Path, data: Dataset) -> dict:
    folder = RunFolder(root)
    inputs = save_npy(folder, folder.inputs(data.name), data.x_test.astype(np.float32))
    labels = save_npy(folder, folder.labels(data.name), data.y_test)
    classification = data.task is Task.CLASSIFICATION
    return {"task": data.task.value, "inputs": inputs["path"], "inputs_sha256": inputs["sha256"],
            "labels": labels["path"], "labels_sha256": labels["sha256"],
            "samples": int(len(data.x_test)), "y_mean": data.y_mean, "y_std": data.y_std,
            "classes": data.num_outputs if classification else None, "sha256": data.hashes}


def _input_step(values: np.ndarray, mode: QuantMode) -> float:
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if mode is QuantMode.INT16X8:
        return max(abs(lo), abs(hi)) / 32767.0
    return (hi - lo) / 255.0


def boundary_block(root: Path, name: str, model, x_test, representative) -> dict | None:
    """The Keras inputs of each kinked activation layer, and the quantization step that
    calibration gives them in each integer mode (for the boundary analysis)."""
    import keras

    layers = [layer for layer in model.layers if type(layer).__name__ in KINKS]
    if not layers:
        return None
    probe = keras.Model(model.input, [layer.input for layer in layers])
    preacts = probe(x_test)
    calib = probe(representative) if representative is not None else None
    preacts = preacts if isinstance(preacts, (list, tuple)) else [preacts]
    calib = calib if isinstance(calib, (list, tuple)) or calib is None else [calib]
    folder = RunFolder(root)
    files = [save_npy(folder, folder.reference(name, layer.name), np.asarray(p, np.float32))
             for layer, p in zip(layers, preacts, strict=True)]
    block = {"kink": KINKS[type(layers[0]).__name__], "layers": [layer.name for layer in layers],
             "preact": [f["path"] for f in files], "preact_sha256": [f["sha256"] for f in files]}
    if calib is not None:
        block["input_steps"] = {m.value: [_input_step(np.asarray(c), m) for c in calib]
                                for m in (QuantMode.INT8, QuantMode.INT16X8)}
    return block


def model_block(root: Path, name: str, activation: str, family: str, model, data: Dataset,
                keras_path: Path, representative) -> tuple[dict, np.ndarray]:
    """`activation`/`family`: the zoo's (e.g. "step", "mlp"), or "custom", "user" for a user's
    own model."""
    reference = np.asarray(model(data.x_test, training=False), np.float32)
    folder = RunFolder(root)
    ref = save_npy(folder, folder.reference(name), reference)
    block = {"dataset": data.name, "activation": activation, "family": family,
             "reference": ref["path"], "reference_sha256": ref["sha256"],
             "keras_sha256": sha256_file(keras_path)}
    record = training_record(keras_path)
    if record:  # how it was trained, to reproduce it (the .keras zip itself is not byte-stable)
        block["training"] = {"config": record.get("config"),
                             "weights_sha256": record.get("weights_sha256")}
    boundary = boundary_block(root, name, model, data.x_test, representative)
    if boundary:
        block["boundary"] = boundary
    return block, reference


def entry(root: Path, variant, model, data: Dataset, reference: np.ndarray, representative,
          overrides: dict) -> dict:
    record, mode, folder = variant.record, variant.mode, RunFolder(root)
    base = {"id": f"{variant.model}-{mode.value}", "model": variant.model, "mode": mode.value,
            "status": record["status"], "reason": record.get("reason", ""),
            "dataset": data.name, "reference": folder.rel(folder.reference(variant.model)),
            "converter": record.get("converter")}  # the options that made it, to reproduce it
    if variant.path is None or record["status"] != ConversionStatus.CONVERTED:
        return base
    out_scale = record["outputs"][0]["scale"]
    metric = "accuracy" if data.task is Task.CLASSIFICATION else "r2"
    tolerance = derive(mode, reference, simulate(model, mode, data.x_test, representative),
                       out_scale[0] if out_scale else None, metric)
    for key, value in overrides.get(mode.value, {}).items():
        tolerance[key] = value
        tolerance["derivation"] += f"; {key} set to {value} by the config"
    return {**base, "tflite": folder.rel(variant.path), "sha256": record["sha256"],
            "bytes": record["bytes"],
            "expected_ops": sorted({op["op"] for op in record["audit"]["ops"]}),
            "tolerance": tolerance}


def write_manifest(root: Path, datasets: dict, models: dict, entries: list, seed: int) -> dict:
    manifest = {"schema_version": MANIFEST_SCHEMA_VERSION,
                "created_by": f"edgepipe {versions().get('edgepipe', '?')}",
                "versions": versions(), "seed": seed,
                "datasets": datasets, "models": models, "entries": entries}
    write_json(RunFolder(root).manifest, manifest)
    return manifest
