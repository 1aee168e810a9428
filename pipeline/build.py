"""One model's way into the bundle: train (zoo) -> convert every mode -> its bundle blocks.

Each model is one job (`build_model`), run in a worker process under `--jobs N`: its modes share
one SavedModel export, and its stages must run in order. The stage keys (stages.py) are computed
without TensorFlow, so a run whose stages are all fresh never imports it.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..core.errors import EdgepipeError
from ..core.files import sha256_file
from ..core.versions import versions
from ..models.zoo import ZOO
from .config import RunConfig
from .stages import code_version, digest

STAGES = ("train", "convert", "bundle")


def stage_name(stage: str, model: str) -> str:
    return f"{stage}:{model}"


def keras_path(config: RunConfig, out: Path, name: str) -> Path:
    return Path(config.user_models[name]) if config.keras else out / "models" / f"{name}.keras"


def _data_key(config: RunConfig, out: Path, name: str) -> list:
    """What decides the model's data: the training record (zoo: it names the dataset and the
    seed), or the user's .npz and the seed."""
    if config.keras:
        return [sha256_file(Path(config.data)), config.seed]
    return [sha256_file(out / "models" / f"{name}.json")]


def stage_key(stage: str, config: RunConfig, out: Path, name: str) -> str:
    """The key of one of the model's stages; reads its upstream artifacts, which must exist."""
    if stage == "train":
        return digest("train", code_version("models"), name, config.epochs, config.seed,
                      versions())
    if stage == "convert":
        return digest("convert", code_version("models", "converters"),
                      sha256_file(keras_path(config, out, name)), _data_key(config, out, name),
                      [m.value for m in config.modes], config.rep_samples,
                      [sha256_file(Path(f)) for f in config.custom_objects], config.unsafe,
                      versions())
    # What each conversion made (its time aside): a byte-identical redo changes nothing.
    records = [{k: v for k, v in json.loads(
        (out / "tflite" / f"{name}.{m.value}.json").read_text()).items() if k != "seconds"}
        for m in config.modes]
    return digest("bundle", stage_key("convert", config, out, name), records,
                  code_version("models", "converters", "pipeline/bundle.py",
                               "pipeline/tolerances.py"),
                  config.tolerances.get(name, {}))


@dataclass(frozen=True)
class BuildJob:
    """Build `name` from `first` (a stage of STAGES) on; the stages after it are redone too."""

    name: str
    first: str
    config: RunConfig
    out: Path
    debug: bool = False


@dataclass(frozen=True)
class StageDone:
    name: str  # e.g. "convert:cnn_swish"
    key: str
    outputs: tuple  # paths relative to the run folder
    value: object = None


def build_model(job: BuildJob) -> tuple[list[StageDone], dict]:
    """Run the job's stages; return what each did (for the stage record) and a summary for
    the console ({"trained": training record, "converted": [...modes], "seconds": ...})."""
    from ..models.loading import load_keras

    started = time.perf_counter()
    config, out, name = job.config, job.out, job.name
    done, summary = [], {}
    todo = STAGES[STAGES.index(job.first):]
    if "train" in todo:
        summary["trained"] = _train(config, out, name)
        done.append(StageDone(stage_name("train", name), stage_key("train", config, out, name),
                              (f"models/{name}.keras", f"models/{name}.json")))
    model = load_keras(keras_path(config, out, name))
    data, rep, rep_source = _model_data(config, out, name, model)
    if "convert" in todo:
        variants = _convert(config, out, name, model, data, rep, rep_source, job.debug)
        summary["converted"] = [(v.mode.value, v.status) for v in variants]
        files = [f"tflite/{name}.{v.mode.value}.json" for v in variants] + [
            v.path.relative_to(out).as_posix() for v in variants if v.path is not None]
        done.append(StageDone(stage_name("convert", name),
                              stage_key("convert", config, out, name), tuple(files)))
    value, files = _bundle(config, out, name, model, data, rep)
    done.append(StageDone(stage_name("bundle", name), stage_key("bundle", config, out, name),
                          tuple(files), value))
    summary["seconds"] = time.perf_counter() - started
    return done, summary


def _train(config: RunConfig, out: Path, name: str) -> dict:
    from ..models.datasets import load_builtin
    from ..models.training import TrainConfig, train

    spec = ZOO[name]
    return train(spec, load_builtin(spec.dataset, config.seed),
                 TrainConfig(epochs=config.epochs, seed=config.seed), out / "models")


def _model_data(config: RunConfig, out: Path, name: str, model) -> tuple:
    """(dataset, representative samples, where they came from) for one model."""
    if not config.keras:
        from .conversion import model_data

        md = model_data(model, keras_path(config, out, name), None, config.rep_samples,
                        need_rep=True)
        return md.dataset, md.representative, md.representative_source
    from ..converters.representative import check_representative
    from ..models.datasets import load_npz_as_given

    data = load_npz_as_given(Path(config.data), config.seed)
    order = np.random.default_rng(config.seed).permutation(len(data.x_train))
    rep, _ = check_representative(data.x_train[order][:config.rep_samples], data.input_shape,
                                  f"{config.data} x_train")
    check_fits(config, name, model, data)
    return data, rep, f"{data.name} x_train (seed {config.seed})"


def check_user_models(config: RunConfig, names) -> None:
    """Refuse, before any work starts, a user's model that its data does not fit."""
    from ..models.loading import load_keras

    for name in names:
        _model_data(config, None, name, load_keras(keras_path(config, None, name)))


def check_fits(config: RunConfig, name: str, model, data) -> None:
    from ..models.datasets import Task
    from ..models.loading import single_io

    path = config.user_models[name]
    in_shape, out_shape = single_io(model, path)
    if len(in_shape) != len(data.input_shape) or any(
            a is not None and a != b for a, b in zip(in_shape, data.input_shape, strict=True)):
        raise EdgepipeError(f"{path} takes samples of shape {in_shape} but x_train in "
                            f"{config.data} has samples of shape {data.input_shape}; give "
                            "data shaped as the model's input.")
    width = int(np.prod([d or 1 for d in out_shape]))
    if data.task is Task.CLASSIFICATION and (len(out_shape) != 1 or width < data.num_outputs):
        raise EdgepipeError(f"{path} outputs shape {out_shape} per sample but the integer "
                            f"labels in {config.data} name {data.num_outputs} classes; a "
                            "classifier needs one output per class (float labels mean "
                            "regression).")
    if data.task is Task.REGRESSION and width != 1:
        raise EdgepipeError(f"{path} outputs shape {out_shape} per sample but the float "
                            f"targets in {config.data} are one number per sample; integer "
                            "labels would mean classification.")


def _convert(config, out, name, model, data, rep, rep_source, debug) -> list:
    from ..converters.variants import convert_model

    return convert_model(model, name, config.modes, out / "tflite", rep, rep_source,
                         data.x_test, f"{data.name} test split ({len(data.x_test)} samples)",
                         debug)


def _recorded_variants(config: RunConfig, out: Path, name: str) -> list:
    """The variants a previous convert stage wrote, from their conversion records."""
    from ..converters.variants import Variant

    variants = []
    for mode in config.modes:
        record = json.loads((out / "tflite" / f"{name}.{mode.value}.json").read_text())
        path = out / "tflite" / record["file"] if record.get("file") else None
        variants.append(Variant(name, QuantMode(mode), record["status"],
                                record.get("reason", ""), record, path))
    return variants


def _bundle(config, out, name, model, data, rep) -> tuple[dict, list]:
    """The model's manifest blocks and entries (the stage's value), and the files written."""
    from .bundle import dataset_block, entry, model_block

    family = "user" if config.keras else ZOO[name].family.name
    activation = "custom" if config.keras else ZOO[name].activation
    dataset = dataset_block(out, data)
    block, reference = model_block(out, name, activation, family, model, data,
                                   keras_path(config, out, name), rep)
    entries = [entry(out, v, model, data, reference, rep, config.tolerances.get(name, {}))
               for v in _recorded_variants(config, out, name)]
    files = [dataset["inputs"], dataset["labels"], block["reference"],
             *block.get("boundary", {}).get("preact", [])]
    return {"dataset": data.name, "dataset_block": dataset, "model": block,
            "entries": entries}, files
