"""`edgepipe convert` and `edgepipe check`: orchestration between the models and converters."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..converters.representative import check_representative
from ..core.errors import EdgepipeError
from ..models.datasets import Dataset

DEFAULT_REP_SAMPLES = 200
RANDOM_CHECK_SAMPLES = 256


def keras_files(paths: list[Path]) -> list[Path]:
    """Expand folders to the `.keras` files inside; refuse anything else."""
    files = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.keras"))
            if not found:
                raise EdgepipeError(f"No .keras files in folder {p}. Train some with "
                                    f"`edgepipe train --out {p}`.")
            files += found
        elif p.suffix != ".keras":
            raise EdgepipeError(f"Expected a .keras model file or a folder of them. Received: {p}")
        elif not p.is_file():
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
    from ..models.datasets import load_recorded
    from ..models.loading import single_io, training_record

    shape, _ = single_io(model, keras_path)
    record = training_record(keras_path)
    data = load_recorded(record["dataset"]) if record else None
    if data is not None and data.input_shape != shape:
        data = None  # a record for another model: do not trust it
    rep, rep_source, notes, no_rep = None, "", [], ""
    if need_rep:
        if rep_data is not None:
            rep, notes = check_representative(_load_npy(rep_data), shape, str(rep_data))
            rep_source = str(rep_data)
        elif data is not None:
            order = np.random.default_rng(data.seed).permutation(len(data.x_train))
            rep = data.x_train[order]
            rep_source = f"{data.name} training split (seed {data.seed})"
        else:  # the float modes still convert; the integer ones say what to pass
            dims = ", ".join(map(str, shape))
            no_rep = (f"No training record is beside {keras_path}: pass --rep-data "
                      f"samples.npy (shape (N, {dims})) to convert it")
        if rep is not None:
            rep = rep[:rep_samples]
    if data is not None:
        check, check_source = data.x_test, f"{data.name} test split ({len(data.x_test)} samples)"
    else:
        check = np.random.default_rng(0).normal(size=(RANDOM_CHECK_SAMPLES, *shape))
        check = check.astype(np.float32)
        check_source = f"{RANDOM_CHECK_SAMPLES} seeded N(0,1) inputs (no test set found)"
    return ModelData(rep, rep_source, check, check_source, notes, data, no_rep)


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
    from ..models.loading import load_keras

    if rep_samples < 1:
        raise EdgepipeError(f"Expected --rep-samples >= 1. Received: {rep_samples}")
    need_rep = any(m.needs_representative_data for m in modes)
    files = keras_files(paths)
    # Load every model and its data first: bad input is refused before anything is written.
    prepared = [(f, (model := load_keras(f)), model_data(model, f, rep_data, rep_samples,
                                                         need_rep)) for f in files]
    for path, model, data in prepared:
        if data.no_representative and all(m.needs_representative_data for m in modes):
            raise EdgepipeError(f"{data.no_representative} in {', '.join(m.value for m in modes)}.")
    results, notes = [], []
    for path, model, data in prepared:
        notes += data.notes
        for variant in convert_model(model, path.stem, modes, out_dir, data.representative,
                                     data.representative_source, data.check, data.check_source,
                                     debug, data.no_representative):
            results.append(variant)
            if on_variant:
                on_variant(variant)
    return results, notes
