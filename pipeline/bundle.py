"""Write the bundle (docs/bundle.md): inputs, Keras references, variants, tolerances, manifest."""

from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..converters.tflite_file import read_tflite_file
from ..core.files import atomic_path, sha256_file, sha256_model, write_json
from ..core.versions import versions
from ..device_tests.schema import MANIFEST_SCHEMA_VERSION, ConversionStatus, RunFolder
from ..models.datasets import Dataset, Task
from ..models.loading import training_record
from . import kernel_bounds
from .layer_references import entry_layers, layers_block, references_from_block
from .tolerances import ModelWalks, derive

# The variants whose error can concentrate at a kink: the integer ones (calibrated input steps)
# and float16 (its weights move a pre-activation by about float16's spacing at its magnitude).
BOUNDARY_MODES = (QuantMode.INT8, QuantMode.INT16X8, QuantMode.FLOAT16)


def save_npy(folder: RunFolder, path: Path, array: np.ndarray) -> dict:
    """`array` saved at `path` in the run folder; its manifest path (relative) and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, array)
    return {"path": folder.rel(path), "sha256": sha256_file(path)}


def _test_inputs(x: np.ndarray) -> np.ndarray:
    """Float inputs as float32; integer inputs (token ids) as they are, never made floats."""
    return x if x.dtype.kind in "iu" else x.astype(np.float32)


def dataset_block(root: Path, data: Dataset) -> dict:
    """The dataset's test inputs and labels. One input: `inputs` + `inputs_sha256`; several:
    `input_files`, one file per model input in the model's order (docs/bundle.md)."""
    folder = RunFolder(root)
    labels = save_npy(folder, folder.labels(data.name), data.y_test)
    classification = data.task is Task.CLASSIFICATION
    block = {"task": data.task.value}
    if data.input_names:
        block["input_files"] = [
            {"name": name, "dtype": x.dtype.name,
             **save_npy(folder, folder.inputs(data.name, i), _test_inputs(x))}
            for i, (name, x) in enumerate(zip(data.input_names, data.x_test, strict=True))]
    else:
        inputs = save_npy(folder, folder.inputs(data.name), _test_inputs(data.x_test))
        block.update(inputs=inputs["path"], inputs_sha256=inputs["sha256"])
    return {**block, "labels": labels["path"], "labels_sha256": labels["sha256"],
            "samples": int(len(data.y_test)), "y_mean": data.y_mean, "y_std": data.y_std,
            "classes": data.num_outputs if classification else None, "sha256": data.hashes}


def _input_step(values: np.ndarray, mode: QuantMode, kinks=()) -> float:
    if mode is QuantMode.FLOAT16:
        scale = max([float(np.max(np.abs(values)))] + [abs(k.at) for k in kinks])
        return float(np.spacing(np.float16(min(scale, float(np.finfo(np.float16).max)))))
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if mode is QuantMode.INT16X8:
        return max(abs(lo), abs(hi)) / 32767.0
    return (hi - lo) / 255.0


def boundary_block(root: Path, name: str, model, x_test, representative) -> dict | None:
    """The activation layers with a threshold or a kink (found from what they compute:
    pipeline/kinks.py), their kinks, their Keras inputs on the test split, and the quantization
    step of those inputs in each mode of BOUNDARY_MODES (integer modes: from calibration, so
    only with representative data)."""
    from .kinks import kinked_layers

    found = kinked_layers(model, x_test, representative)
    if not found:
        return None
    folder = RunFolder(root)
    files = [save_npy(folder, folder.reference(name, k.layer.name), k.inputs) for k in found]
    block = {"layers": [k.layer.name for k in found],
             "kinks": [[kink.as_dict() for kink in k.kinks] for k in found],
             "preact": [f["path"] for f in files], "preact_sha256": [f["sha256"] for f in files],
             "input_steps": {}}
    calibrated = representative is not None
    for mode in BOUNDARY_MODES:
        if mode.integer_only and not calibrated:
            continue
        block["input_steps"][mode.value] = [
            _input_step(k.calibration if calibrated else k.inputs, mode, k.kinks)
            for k in found]
    return block


def model_block(root: Path, name: str, activation: str, family: str, model, data: Dataset,
                keras_path: Path, representative, layer_samples: int = 0,
                walks: ModelWalks | None = None) -> tuple[dict, np.ndarray]:
    """`activation`/`family`: the zoo's (e.g. "step", "mlp"), or "custom", "user" for a user's
    own model. `layer_samples`: at most that many test samples of every layer's Keras output
    (`layers`; 0: none). `walks`: the model's walks on the test split, shared with its entries
    (`entry`), which then reuse the layer references walked here."""
    reference = np.asarray(model(data.x_test, training=False), np.float32)
    folder = RunFolder(root)
    ref = save_npy(folder, folder.reference(name), reference)
    block = {"dataset": data.name, "activation": activation, "family": family,
             "reference": ref["path"], "reference_sha256": ref["sha256"],
             "keras_sha256": sha256_model(keras_path)}
    record = training_record(keras_path)
    if record:  # how it was trained, to reproduce it (the .keras zip itself is not byte-stable)
        block["training"] = {"config": record.get("config"),
                             "weights_sha256": record.get("weights_sha256")}
    boundary = boundary_block(root, name, model, data.x_test, representative)
    if boundary:
        block["boundary"] = boundary
    layers = layers_block(root, name, model, data.x_test, layer_samples, walks)
    if layers is not None:
        block["layers"] = layers.block
    return block, reference


def entry(root: Path, variant, model, data: Dataset, reference: np.ndarray, representative,
          overrides: dict, keep: dict | None = None, layers: dict | None = None,
          walks: ModelWalks | None = None, boundary: dict | None = None) -> dict:
    """`keep`: a repaired variant's layers kept in higher precision ({layer: precision}), which
    its tolerance derivation leaves unrounded (tolerances.simulation). `layers`: the model
    block's `layers` (its per-layer references), to map and bound the variant's layers;
    `boundary`: its boundary block (the threshold layers pipeline/kernel_bounds.py holds).
    `walks`: the model's walks on `data.x_test` and `representative`, shared by the model's
    entries and its model block (tolerances.ModelWalks); None: walked for this entry alone."""
    record, mode, folder = variant.record, variant.mode, RunFolder(root)
    given = record.get("given")  # a .tflite the user gave: its own entry beside the mode's
    repair = record.get("repair")  # a repaired variant: its own entry, never the plain one's
    fixed = record.get("fixed_batch")  # a batch-1 export for TFLite Micro: its own entry too
    tag = variant.tag
    base = {"id": f"{variant.model}-{tag}", "model": variant.model, "mode": mode.value,
            "status": record["status"], "reason": record.get("reason", ""),
            "dataset": data.name, "reference": folder.rel(folder.reference(variant.model)),
            "converter": record.get("converter")}  # the options that made it, to reproduce it
    if given:
        base["given"] = given["file"]
    if repair:
        base["repair"] = repair
    if fixed:
        base["fixed_batch"] = fixed["batch"]
    # Float ops inside an integer variant: it runs where float kernels exist; a runtime that
    # runs integer models integer-only reports it unsupported from these. A repair's float
    # islands are its point, declared in `repair`: the runtime decides whether it has them.
    findings = None if repair else (record.get("findings")
                                    or (record.get("audit") or {}).get("findings"))
    if findings:
        base["findings"] = findings
    if variant.path is None or record["status"] != ConversionStatus.CONVERTED:
        return base
    out_scale = record["outputs"][0]["scale"]
    metric = "accuracy" if data.task is Task.CLASSIFICATION else "r2"
    walks = walks if walks is not None else ModelWalks(model, data.x_test, representative)
    refs = references_from_block(model, data.x_test, layers, walks)
    simulated = walks.simulation(mode, keep=keep, layer_rows=refs.samples if refs else None)
    tolerance = derive(mode, reference, simulated, out_scale[0] if out_scale else None, metric)
    if keep:
        tolerance["derivation"] += "; simulated with " + ", ".join(
            f"{layer} in {precision}" for layer, precision in keep.items())
    for key, value in overrides.get(mode.value, {}).items():
        tolerance[key] = value
        tolerance["derivation"] += f"; {key} set to {value} by the config"
    made = {**base, "tflite": folder.rel(variant.path), "sha256": record["sha256"],
            "bytes": record["bytes"],
            "expected_ops": sorted({op["op"] for op in record["audit"]["ops"]}),
            "tolerance": tolerance}
    if refs is not None:  # the file parsed once for the layer map and the kernel bounds
        parsed = read_tflite_file(variant.path)
        made.update(entry_layers(refs, parsed, mode, simulated))
        bounds = kernel_bounds.derive(walks, mode, parsed, refs, simulated,
                                      tolerance.get("output_step"), keep, boundary)
        if bounds:
            made["target_bounds"] = bounds
    return made


def write_manifest(root: Path, datasets: dict, models: dict, entries: list, seed: int,
                   repairs=(), failed_models=None) -> dict:
    """`repairs`: the record of every repair search (pipeline/repair.py), when any ran.
    `failed_models`: {model: why} of the models whose build job died (a cluster worker killed
    by a signal): they have no blocks and no entries, and the run is not ok."""
    manifest = {"schema_version": MANIFEST_SCHEMA_VERSION,
                "created_by": f"edgepipe {versions().get('edgepipe', '?')}",
                "versions": versions(), "seed": seed,
                "datasets": datasets, "models": models, "entries": entries}
    if repairs:
        manifest["repairs"] = list(repairs)
    if failed_models:
        manifest["failed_models"] = dict(failed_models)
    write_json(RunFolder(root).manifest, manifest)
    return manifest
