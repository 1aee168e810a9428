"""The bundle stage: the model's blocks of the manifest (its dataset, its Keras reference, an
entry per mode with its tolerance) and the files they name.

Its key holds the convert stage's key: whatever redoes the conversion redoes this stage too.
"""

import json
from pathlib import Path

from ..device_tests.schema import RunFolder
from .build import StageRun, keras_path, stage_key
from .stage_convert import model_inputs


def key_parts(config, out, name: str) -> list:
    """The convert stage's key, what each conversion made (its time aside: a byte-identical
    redo changes nothing), the model's tolerance overrides and the per-layer sample count."""
    records = [{k: v for k, v in json.loads(path.read_text()).items() if k != "seconds"}
               for path in _records(config, out, name)]
    return [stage_key("convert", config, out, name), records, config.tolerances.get(name, {}),
            config.layer_samples]


def run(job, shared: dict) -> StageRun:
    """The model's manifest blocks and entries (the stage's value), and the files written."""
    from ..models.zoo import ZOO
    from .bundle import dataset_block, entry, model_block
    from .tolerances import ModelWalks

    config, out, name = job.config, job.out, job.name
    inputs = model_inputs(job, shared)
    model, data, rep = inputs.model, inputs.data, inputs.rep
    family = "user" if config.keras else ZOO[name].family.name
    activation = "custom" if config.keras else ZOO[name].activation
    dataset = dataset_block(out, data)
    walks = ModelWalks(model, data.x_test, rep)  # one check, calibration, references: all modes
    block, reference = model_block(out, name, activation, family, model, data,
                                   keras_path(config, out, name), rep, config.layer_samples,
                                   walks)
    entries = [entry(out, v, model, data, reference, rep, config.tolerances.get(name, {}),
                     layers=block.get("layers"), walks=walks, boundary=block.get("boundary"))
               for v in _recorded_variants(config, out, name)]
    inputs = [f["path"] for f in dataset.get("input_files") or ()] or [dataset["inputs"]]
    files = [*inputs, dataset["labels"], block["reference"],
             *block.get("boundary", {}).get("preact", []),
             *(f["path"] for f in block.get("layers", {}).get("outputs", []))]
    return StageRun(tuple(files), {"dataset": data.name, "dataset_block": dataset,
                                   "model": block, "entries": entries})


def _recorded_variants(config, out, name: str) -> list:
    """The variants a previous convert stage wrote, from their conversion records."""
    from ..converters.modes import QuantMode
    from ..converters.variants import Variant

    folder = RunFolder(out)
    variants = []
    for record_path in _records(config, out, name):
        record = json.loads(record_path.read_text())
        path = folder.tflite_dir / record["file"] if record.get("file") else None
        variants.append(Variant(name, QuantMode(record["mode"]), record["status"],
                                record.get("reason", ""), record, path))
    return variants


def _records(config, out, name: str) -> list:
    """The conversion records the convert stage wrote: one per mode, one per batch-1 variant it
    made, then one per .tflite the user gave (named by `converters.given.label`, from the mode
    its file holds)."""
    folder = RunFolder(out)
    batch_one = [m.batch_one_tag for m in config.modes  # made only where they were needed
                 if folder.conversion_record(name, m.batch_one_tag).is_file()]
    tags = [m.value for m in config.modes] + batch_one + _given_labels(config, name)
    return [folder.conversion_record(name, tag) for tag in tags]


def _given_labels(config, name: str) -> list:
    from ..converters.given import label, mode_of
    from ..converters.tflite_file import read_tflite_file

    return [label(Path(f), mode_of(read_tflite_file(f), f))
            for f in config.given_tflite.get(name, ())]
