"""`edgepipe convert` and `edgepipe check`: orchestration between the models and converters."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..converters.representative import check_representative_inputs
from ..core.errors import EdgepipeError
from ..models.datasets import Dataset

DEFAULT_REP_SAMPLES = 200
RANDOM_CHECK_SAMPLES = 256


def keras_files(paths: list[Path]) -> list[Path]:
    """The models: .keras and .h5 files, SavedModel folders (saved_model.pb inside: one model),
    and the .keras and .h5 files inside other folders; refuse anything else, saying what it is."""
    from ..models.loading import MODEL_SUFFIXES, SAVED_MODEL, is_saved_model, model_kind

    files = []
    for p in paths:
        if p.is_dir() and not is_saved_model(p):
            found = sorted(f for f in p.iterdir() if f.suffix in MODEL_SUFFIXES and f.is_file())
            if not found:
                model_kind(p)  # says what the folder is instead (a SavedModel without its .pb)
                raise EdgepipeError(f"No models (.keras or .h5 files) in folder {p}. Train "
                                    f"some with `edgepipe train --out {p}`.")
            files += found
        elif model_kind(p) != SAVED_MODEL and not p.is_file():
            raise EdgepipeError(f"Model file {p} does not exist.")
        else:
            files.append(p)
    return files


@dataclass(frozen=True)
class ModelData:
    representative: np.ndarray | None
    representative_source: str
    check: np.ndarray  # inputs on which the float32 variant must reproduce Keras
    check_source: str
    notes: list
    dataset: Dataset | None  # the one the training record names, when there is one
    no_representative: str = ""  # why the integer modes have no samples, and what to pass


def model_data(model, keras_path: Path, rep_data: Path | None, rep_samples: int,
               need_rep: bool) -> ModelData:
    """Representative samples and forward-check inputs for one model, with where they came from.

    From `--rep-data` if given; else from the training record beside the model (its training
    split calibrates, its test split checks the forward); else the forward is checked on seeded
    random inputs and the integer modes are not converted (`no_representative` says why).
    """
    from ..models.datasets import load_recorded, sample_count, take
    from ..models.loading import describe_io, training_record

    io = describe_io(model, keras_path)
    io.output()  # one output, or a one-line refusal
    several = len(io.inputs) > 1
    shape = io.inputs[0].shape
    record = training_record(keras_path)
    data = load_recorded(record["dataset"]) if record else None
    if data is not None and (several or data.input_shape != shape):
        data = None  # a record for another model: do not trust it
    rep, rep_source, notes, no_rep = None, "", [], ""
    if need_rep:
        if rep_data is not None:
            given = _load_rep(rep_data, io.inputs) if several else _load_npy(rep_data)
            rep, notes = check_representative_inputs(given, io.inputs, str(rep_data))
            rep_source = str(rep_data)
        elif data is not None:
            order = np.random.default_rng(data.seed).permutation(len(data.x_train))
            rep = data.x_train[order]
            rep_source = f"{data.name} training split (seed {data.seed})"
        else:  # the float modes still convert; the integer ones say what to pass
            dims = ", ".join(map(str, shape))
            what = (f"samples.npz (one array per input: "
                    f"{', '.join(f'{t.name}=(N, {_dims(t.shape)})' for t in io.inputs)})"
                    if several else f"samples.npy (shape (N, {dims}))")
            no_rep = (f"No training record is beside {keras_path}: pass --rep-data "
                      f"{what} to convert it")
        if rep is not None:
            rep = take(rep, slice(None, rep_samples))
    if data is not None:
        check = data.x_test
        check_source = f"{data.name} test split ({sample_count(check)} samples)"
    elif rep is not None and any(t.integer for t in io.inputs):
        # Random token ids could fall outside an Embedding's vocabulary: check on the samples
        # the user gave, which are the model's own kind of input.
        check, check_source = rep, f"the {sample_count(rep)} representative samples"
    else:
        rng = np.random.default_rng(0)
        check = [_random_inputs(rng, t) for t in io.inputs]
        check = check if several else check[0]
        check_source = f"{RANDOM_CHECK_SAMPLES} seeded N(0,1) inputs (no test set found)"
        if any(t.integer for t in io.inputs):
            check_source += "; integer inputs 0 or 1 (pass --rep-data for real ones)"
    return ModelData(rep, rep_source, check, check_source, notes, data, no_rep)


def _dims(shape) -> str:
    return ", ".join(map(str, shape))


def _random_inputs(rng, spec) -> np.ndarray:
    """Seeded inputs for the forward check: N(0,1) floats; 0 or 1 for an integer input (ids
    any Embedding holds). A free axis (None) gets size 1."""
    size = (RANDOM_CHECK_SAMPLES, *(d or 1 for d in spec.shape))
    if spec.integer:
        return rng.integers(0, 2, size=size).astype(spec.dtype)
    return rng.normal(size=size).astype(np.float32)


def _load_rep(path: Path, inputs) -> list:
    """--rep-data for a model with several inputs: a .npz holding one array per input, keyed by
    the Keras input name; the arrays in the model's input order."""
    if not path.is_file():
        raise EdgepipeError(f"Representative data file {path} does not exist.")
    names = [t.name for t in inputs]
    wanted = ", ".join(f"{n}=..." for n in names)
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = list(archive.files)
            missing = [n for n in names if n not in stored]
            if missing:
                raise EdgepipeError(f"{path} has no array {missing[0]!r} for the model's input "
                                    f"{missing[0]!r} (it has: {', '.join(map(repr, stored))}); "
                                    f"save one array per input, numpy.savez(path, {wanted}).")
            return [archive[n] for n in names]
    except (OSError, ValueError, TypeError) as e:  # a .npy is no archive
        raise EdgepipeError(f"{path} is not a readable .npz of one array per model input ({e})."
                            f" Save the samples with numpy.savez(path, {wanted}).") from None


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EdgepipeError(f"Representative data file {path} does not exist.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgepipeError(f"{path} is not a readable .npy array ({e}). Save the samples "
                            "with numpy.save(path, array).") from None


def convert_files(paths: list[Path], modes: list[QuantMode], out_dir: Path,
                  rep_data: Path | None, rep_samples: int, debug: bool, on_variant=None):
    """Convert each model; a model that cannot be converted does not stop the others."""
    from ..converters.variants import convert_model
    from ..models.loading import load_keras, training_record

    if rep_samples < 1:
        raise EdgepipeError(f"Expected --rep-samples >= 1. Received: {rep_samples}")
    need_rep = any(m.needs_representative_data for m in modes)
    files = keras_files(paths)
    # Load every model and its data first: bad input is refused before anything is written.
    prepared = [(f, (model := load_keras(f)), model_data(model, f, rep_data, rep_samples,
                                                         need_rep)) for f in files]
    for *_, data in prepared:
        if data.no_representative and all(m.needs_representative_data for m in modes):
            raise EdgepipeError(f"{data.no_representative} in {', '.join(m.value for m in modes)}.")
    results, notes = [], []
    for path, model, data in prepared:
        notes += data.notes
        for variant in convert_model(model, path.stem, modes, out_dir, data.representative,
                                     data.representative_source, data.check, data.check_source,
                                     debug, data.no_representative,
                                     # a training record: `edgepipe train` made it, from the zoo
                                     zoo=training_record(path) is not None):
            results.append(variant)
            if on_variant:
                on_variant(variant)
    return results, notes
