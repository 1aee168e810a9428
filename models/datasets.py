"""Real, offline datasets: scikit-learn's bundled `diabetes` and `digits`, or the user's `.npz`.

Splits are seeded; standardisation is fitted on the training split only and kept with the data
so any later stage (conversion, parity) can reproduce the exact model inputs.
"""

import hashlib
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from .errors import EdgepipeError, unknown_name

TEST_FRACTION = 0.2
VAL_FRACTION = 0.2  # of what is left after the test split
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class Task(str, Enum):
    REGRESSION = "regression"
    CLASSIFICATION = "classification"


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    task: Task
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int
    # Standardisation fitted on the training split: model input = (raw - x_mean) / x_std;
    # for regression the model predicts (y - y_mean) / y_std.
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float = 0.0
    y_std: float = 1.0
    hashes: dict = field(default_factory=dict)  # sha256 of the raw data and of each split
    path: str = ""  # the user's .npz; empty for a built-in dataset

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        if self.task is Task.CLASSIFICATION:
            return int(max(y.max() for y in (self.y_train, self.y_val, self.y_test) if y.size)) + 1
        return 1

    def describe(self) -> dict:
        """What a training record needs to say about the data."""
        return {
            "name": self.name, "task": self.task.value, "seed": self.seed, "path": self.path,
            "samples": {"train": len(self.x_train), "val": len(self.x_val),
                        "test": len(self.x_test)},
            "input_shape": list(self.input_shape), "outputs": self.num_outputs,
            "standardisation": {"x_mean": self.x_mean.tolist(), "x_std": self.x_std.tolist(),
                                "y_mean": self.y_mean, "y_std": self.y_std},
            "sha256": self.hashes,
        }


def sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _split_indices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * TEST_FRACTION)
    n_val = round((n - n_test) * VAL_FRACTION)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _standardise(name, task, seed, x_train, y_train, x_val, y_val, x_test, y_test, source_hash,
                 path=""):
    """Fit on the training split, apply to all three, and freeze the result into a Dataset."""
    x_train, x_val, x_test = (a.astype(np.float64) for a in (x_train, x_val, x_test))
    # Tabular data is standardised per feature; images with one scalar (a per-pixel std is zero
    # wherever the training images are always blank).
    axis = 0 if x_train.ndim == 2 else None
    x_mean = np.asarray(x_train.mean(axis=axis))
    x_std = np.asarray(x_train.std(axis=axis))
    x_std = np.where(x_std > 1e-12, x_std, 1.0)
    y_mean, y_std = 0.0, 1.0
    if task is Task.REGRESSION:
        y_train, y_val, y_test = (np.asarray(a, np.float64).reshape(-1, 1)
                                  for a in (y_train, y_val, y_test))
        y_mean, y_std = float(y_train.mean()), float(y_train.std()) or 1.0
        y_train, y_val, y_test = ((a - y_mean) / y_std for a in (y_train, y_val, y_test))
        y_dtype = np.float32
    else:
        y_dtype = np.int64
    hashes = {"source": source_hash, "train": sha256_arrays(x_train, y_train),
              "val": sha256_arrays(x_val, y_val), "test": sha256_arrays(x_test, y_test)}
    std = lambda a: ((a - x_mean) / x_std).astype(np.float32)  # noqa: E731
    return Dataset(name, task, std(x_train), y_train.astype(y_dtype), std(x_val),
                   y_val.astype(y_dtype), std(x_test), y_test.astype(y_dtype), seed,
                   x_mean.astype(np.float32), x_std.astype(np.float32), y_mean, y_std, hashes,
                   path)


def _builtin(name: str):
    from sklearn import datasets as sk  # scikit-learn ships both inside the package: no download

    if name == "diabetes":
        x, y = sk.load_diabetes(return_X_y=True, scaled=False)
        return x, y, Task.REGRESSION
    x, y = sk.load_digits(return_X_y=True)
    return x.reshape(-1, 8, 8, 1), y, Task.CLASSIFICATION


BUILTIN = ("diabetes", "digits")


def load_builtin(name: str, seed: int = 0) -> Dataset:
    if name not in BUILTIN:
        raise unknown_name("dataset", name, BUILTIN)
    x, y, task = _builtin(name)
    train, val, test = _split_indices(len(x), seed)
    return _standardise(name, task, seed, x[train], y[train], x[val], y[val], x[test], y[test],
                        sha256_arrays(x, y))


def _checked_npz(path: Path, arrays: dict, task: Task) -> tuple:
    """x_train, y_train, x_test, y_test of a user's .npz, each checked (one line per problem)."""
    x_train, y_train, x_test, y_test = (arrays[k] for k in NPZ_KEYS)
    where = f"Data file {path}"
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise EdgepipeError(f"{where}: x_{split} has {len(x)} samples but y_{split} has "
                                f"{len(y)} (shapes {x.shape} and {y.shape}). "
                                "Give one target per sample.")
        if x.ndim < 2:
            raise EdgepipeError(f"{where}: x_{split} has shape {x.shape}; expected (samples, "
                                "features...) with at least 2 dimensions.")
        for key, a in ((f"x_{split}", x), (f"y_{split}", y)):
            if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
                raise EdgepipeError(f"{where}: {key} has dtype {a.dtype}; expected real numbers.")
            bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
            if bad.any():
                raise EdgepipeError(f"{where}: {key} has NaN or Inf at sample {int(np.argmax(bad))}"
                                    f" ({int(bad.sum())} bad samples). Clean or drop them.")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise EdgepipeError(f"{where}: x_train samples have shape {x_train.shape[1:]} but x_test "
                            f"samples have {x_test.shape[1:]}. Both splits need the same shape.")
    if len(x_train) < 10 or len(x_test) < 1:
        raise EdgepipeError(f"{where}: {len(x_train)} training and {len(x_test)} test samples; "
                            "expected at least 10 and 1.")
    if task is Task.CLASSIFICATION:
        for key, y in (("y_train", y_train), ("y_test", y_test)):
            if y.ndim != 1 or np.any(y < 0) or np.any(y != np.round(y)):
                raise EdgepipeError(f"{where}: {key} must hold class indices 0, 1, 2, ... "
                                    f"(one integer per sample) for a classifier; got shape "
                                    f"{y.shape}, dtype {y.dtype}.")
    elif any(y.reshape(len(y), -1).shape[1] != 1 for y in (y_train, y_test)):
        raise EdgepipeError(f"{where}: a regression target must be one number per sample; got "
                            f"y_train {y_train.shape}, y_test {y_test.shape}.")
    return x_train, y_train, x_test, y_test


def load_npz(path: Path, task: Task, seed: int = 0) -> Dataset:
    """A user's data: `x_train, y_train, x_test, y_test`; validation is carved from training."""
    path = Path(path)
    arrays = _read_npz(path)
    x_train, y_train, x_test, y_test = _checked_npz(path, arrays, task)
    if x_train.ndim == 3:  # (samples, height, width) images get their channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, round(len(x_train) * VAL_FRACTION))
    val, train = order[:n_val], order[n_val:]
    return _standardise(path.stem, task, seed, x_train[train], y_train[train], x_train[val],
                        y_train[val], x_test, y_test,
                        sha256_arrays(*(arrays[k] for k in NPZ_KEYS)), str(path.resolve()))


def load_npz_as_given(path: Path, seed: int = 0) -> Dataset:
    """Data for a user's own, already trained model: the arrays exactly as the model takes them
    (no standardisation, no channel axis added, no validation split: nothing is trained).
    The task is classification when y_train and y_test hold integers, else regression."""
    path = Path(path)
    arrays = _read_npz(path)
    integer = all(np.issubdtype(arrays[k].dtype, np.integer) for k in ("y_train", "y_test"))
    task = Task.CLASSIFICATION if integer else Task.REGRESSION
    x_train, y_train, x_test, y_test = _checked_npz(path, arrays, task)
    if task is Task.REGRESSION:
        y_train, y_test = (np.asarray(y, np.float32).reshape(-1, 1) for y in (y_train, y_test))
    else:
        y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    hashes = {"source": sha256_arrays(*(arrays[k] for k in NPZ_KEYS)),
              "train": sha256_arrays(x_train, y_train), "val": sha256_arrays(x_train[:0]),
              "test": sha256_arrays(x_test, y_test)}
    return Dataset(path.stem, task, x_train, y_train, x_train[:0], y_train[:0], x_test, y_test,
                   seed, np.zeros((), np.float32), np.ones((), np.float32), 0.0, 1.0, hashes,
                   str(path.resolve()))


def load_recorded(described: dict) -> Dataset:
    """The dataset a training record describes (its `dataset` entry), checked by hash."""
    if described.get("path"):
        data = load_npz(Path(described["path"]), Task(described["task"]), described["seed"])
    else:
        data = load_builtin(described["name"], described["seed"])
    if data.hashes != described["sha256"]:
        raise EdgepipeError(f"Dataset {described['name']!r} no longer matches the training "
                            "record (sha256 differs): the data changed since training. Retrain, "
                            "or pass the data explicitly.")
    return data


def _read_npz(path: Path) -> dict:
    if not path.is_file():
        raise EdgepipeError(f"Data file {path} does not exist. Expected a .npz written by "
                            f"numpy.savez with arrays {', '.join(NPZ_KEYS)}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise EdgepipeError(f"Data file {path} has no array {missing[0]!r} (it has: "
                                    f"{', '.join(npz.files) or 'nothing'}). Expected arrays "
                                    f"{', '.join(NPZ_KEYS)}.")
            return {k: npz[k] for k in NPZ_KEYS}
    except EdgepipeError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise EdgepipeError(f"Data file {path} is not a readable .npz ({e}). Write it with "
                            f"numpy.savez(path, {'=..., '.join(NPZ_KEYS)}=...).") from None
