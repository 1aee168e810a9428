"""The convert stage: the model audited and converted to every mode (a .tflite file and a
conversion record each), calibrated on its representative samples.

The model and its data are loaded here (`model_inputs`), once per job: the bundle stage starts
from them too, and imports them from here.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import EdgepipeError
from ..core.files import sha256_file, sha256_model
from ..core.versions import versions
from ..device_tests.schema import RunFolder
from .build import StageRun, keras_path


def key_parts(config, out, name: str) -> list:
    """The model's file, its data, the modes, the calibration size, the .tflite files the user
    gave for it, the custom objects, the safe mode, whether batch-1 variants are made for
    TFLite Micro and the installed versions."""
    return [sha256_model(keras_path(config, out, name)), _data_key(config, out, name),
            [m.value for m in config.modes], config.rep_samples,
            [sha256_file(Path(f)) for f in config.given_tflite.get(name, ())],
            [sha256_file(Path(f)) for f in config.custom_objects], config.unsafe,
            batch_one_for(config), versions()]


def batch_one_for(config) -> str | None:
    """The op set that batch-1 variants are made for: TFLite Micro's, when the `tflm` target
    (the one with that op set) runs (a microcontroller always runs batch 1; the dynamic batch
    may add shape ops it lacks). By name: importing pipeline.targets here would make every
    target's code part of this stage's key."""
    return "tflm" if "tflm" in config.targets else None


def _data_key(config, out, name: str) -> list:
    """What decides the model's data: the training record (zoo: it names the dataset and the
    seed), or the user's .npz and the seed."""
    if config.keras:
        return [sha256_file(Path(config.data)), config.seed]
    return [sha256_file(RunFolder(out).training_record(name))]


def run(job, shared: dict) -> StageRun:
    from ..converters.given import given_variant
    from ..converters.variants import convert_model
    from ..models.datasets import sample_count

    config, folder, name = job.config, RunFolder(job.out), job.name
    inputs = model_inputs(job, shared)
    data = inputs.data
    variants = convert_model(inputs.model, name, config.modes, folder.tflite_dir, inputs.rep,
                             inputs.rep_source, data.x_test,
                             f"{data.name} test split ({sample_count(data.x_test)} samples)",
                             job.debug, zoo=not config.keras, batch_one_for=batch_one_for(config))
    made = {v.tag for v in variants}
    for mode in config.modes:  # a batch-1 variant of an earlier run that this one did not make
        if mode.batch_one_tag not in made:
            for path in (folder.conversion_record(name, mode.batch_one_tag),
                         folder.variant(name, mode.batch_one_tag)):
                path.unlink(missing_ok=True)
    variants += [given_variant(name, Path(f), folder.tflite_dir)
                 for f in config.given_tflite.get(name, ())]
    files = [folder.rel(folder.conversion_record(name, v.tag)) for v in variants] + [
        folder.rel(v.path) for v in variants if v.path is not None]
    return StageRun(tuple(files),
                    summary={"converted": [(v.mode.value, v.status) for v in variants]})


@dataclass(frozen=True)
class ModelInputs:
    model: object  # the Keras model
    data: object  # its Dataset
    rep: object  # the representative samples (a list of arrays for several inputs)
    rep_source: str  # where they came from


def model_inputs(job, shared: dict) -> ModelInputs:
    """The job's model and its data, loaded on first use and kept in `shared`."""
    if "model_inputs" not in shared:
        from ..models.loading import load_keras

        model = load_keras(keras_path(job.config, job.out, job.name))
        shared["model_inputs"] = ModelInputs(model,
                                             *_model_data(job.config, job.out, job.name, model))
    return shared["model_inputs"]


def _model_data(config, out, name: str, model) -> tuple:
    """(dataset, representative samples, where they came from) for one model."""
    if not config.keras:
        from .conversion import model_data

        md = model_data(model, keras_path(config, out, name), None, config.rep_samples,
                        need_rep=True)
        return md.dataset, md.representative, md.representative_source
    from ..converters.representative import check_representative_inputs
    from ..models.datasets import load_npz_as_given, sample_count, take
    from ..models.loading import describe_io

    io = describe_io(model, config.user_models[name])
    io.output()  # one output, or a one-line refusal
    # Each input's data in that input's dtype: token ids stay integers.
    data = load_npz_as_given(Path(config.data), config.seed, io.inputs)
    check_fits(config, name, model, data)
    order = np.random.default_rng(config.seed).permutation(sample_count(data.x_train))
    rep, _ = check_representative_inputs(take(data.x_train, order[:config.rep_samples]),
                                         io.inputs, f"{config.data} x_train")
    return data, rep, f"{data.name} x_train (seed {config.seed})"


def check_user_models(config, names) -> None:
    """Refuse, before any work starts, a user's model that its data does not fit."""
    from ..models.loading import load_keras

    for name in names:
        _model_data(config, None, name, load_keras(keras_path(config, None, name)))


def check_fits(config, name: str, model, data) -> None:
    from ..models.datasets import Task, input_arrays, input_keys
    from ..models.loading import describe_io

    path = config.user_models[name]
    io = describe_io(model, path)
    out_shape = io.output().shape
    several = len(io.inputs) > 1
    keys = [k for k, _ in input_keys(io.names)] if several else ["x_train"]
    for spec, x, key in zip(io.inputs, input_arrays(data.x_train), keys, strict=True):
        given = tuple(x.shape[1:])
        if len(spec.shape) != len(given) or any(
                a is not None and a != b for a, b in zip(spec.shape, given, strict=True)):
            which = f" for its input {spec.name!r}" if several else ""
            raise EdgepipeError(f"{path} takes samples of shape {spec.shape}{which} but {key} "
                                f"in {config.data} has samples of shape {given}; give data "
                                "shaped as the model's input.")
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
