"""Real, offline datasets: scikit-learn's bundled `diabetes` and `digits`, or the user's `.npz`.

Splits are seeded; standardisation is fitted on the training split only and kept with the data
so any later stage (conversion, parity) can reproduce the exact model inputs.
"""

import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from ..core.errors import EdgepipeError, unknown_name
from .loading import not_an_archive, regular_file

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
    # A model with several inputs: each x_* is a list of arrays, one per input in the model's
    # order, and these are the inputs' names. Empty for one input (x_* is one array).
    input_names: tuple = ()

    @property
    def input_shape(self) -> tuple:
        """A sample's shape; with several inputs, a tuple of one shape per input."""
        shapes = tuple(tuple(x.shape[1:]) for x in input_arrays(self.x_train))
        return shapes if self.input_names else shapes[0]

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


def input_arrays(x) -> list:
    """The arrays of one split's inputs: one per model input (`x` is one array, or a list)."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


def sample_count(x) -> int:
    return len(input_arrays(x)[0])


def take(x, index):
    """The samples `index` (an index array or a slice) of every input of `x`, same structure."""
    return [a[index] for a in x] if isinstance(x, (list, tuple)) else x[index]


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


# The built-in datasets, with the numbers their samples hold in all (samples x features): a
# size to rank jobs by before any data is loaded (pipeline/run.py longest_first).
BUILTIN = {"diabetes": 442 * 10, "digits": 1797 * 8 * 8}


def load_builtin(name: str, seed: int = 0) -> Dataset:
    if name not in BUILTIN:
        raise unknown_name("dataset", name, BUILTIN)
    x, y, task = _builtin(name)
    train, val, test = _split_indices(len(x), seed)
    return _standardise(name, task, seed, x[train], y[train], x[val], y[val], x[test], y[test],
                        sha256_arrays(x, y))


def load_npz(path: Path, task: Task, seed: int = 0) -> Dataset:
    """A user's data: `x_train, y_train, x_test, y_test`; validation is carved from training."""
    path = Path(path)
    arrays, _, _ = _read_npz(path, task)
    x_train, y_train, x_test, y_test = (arrays[k] for k in NPZ_KEYS)
    if task is Task.CLASSIFICATION:
        _check_class_count(path, y_train, y_test)
    if x_train.ndim == 3:  # (samples, height, width) images get their channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, round(len(x_train) * VAL_FRACTION))
    val, train = order[:n_val], order[n_val:]
    return _standardise(path.stem, task, seed, x_train[train], y_train[train], x_train[val],
                        y_train[val], x_test, y_test,
                        sha256_arrays(*(arrays[k] for k in NPZ_KEYS)), str(path.resolve()))


def load_npz_as_given(path: Path, seed: int = 0, inputs=None) -> Dataset:
    """Data for a user's own, already trained model: the arrays exactly as the model takes them
    (no standardisation, no channel axis added, no validation split: nothing is trained).
    The task is classification when y_train and y_test hold integers, else regression.

    `inputs`: the model's inputs (models/loading.TensorSpec: name, dtype), in its order. Each
    x array is given in its input's dtype: float32 for a float input; an integer input (token
    ids) keeps integers, never standardised or made floats. With several inputs the .npz holds
    `x_train_<name>` and `x_test_<name>` per input (`x_*` is then a list, `input_names` set);
    with one, `x_train` and `x_test` (or the named keys). Without `inputs` (no model at hand):
    the inputs the keys name, floats as float32, integers as given."""
    path = Path(path)
    names = [t.name for t in inputs] if inputs else None
    arrays, task, pairs = _read_npz(path, None, names, discover=names is None)
    names = [train.removeprefix("x_train_") for train, _ in pairs]
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    if task is Task.REGRESSION:
        y_train, y_test = (np.asarray(y, np.float32).reshape(-1, 1) for y in (y_train, y_test))
    else:
        y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    dtypes = [t.dtype for t in inputs] if inputs else [None] * len(pairs)
    x_train = [_as_input(path, arrays[tr], tr, d) for (tr, _), d in zip(pairs, dtypes, strict=True)]
    x_test = [_as_input(path, arrays[te], te, d) for (_, te), d in zip(pairs, dtypes, strict=True)]
    hashes = {"source": sha256_arrays(*(arrays[k] for k in _keys(pairs))),
              "train": sha256_arrays(*x_train, y_train),
              "val": sha256_arrays(*(x[:0] for x in x_train)),
              "test": sha256_arrays(*x_test, y_test)}
    several = len(pairs) > 1
    x_train, x_test = (x if several else x[0] for x in (x_train, x_test))
    return Dataset(path.stem, task, x_train, y_train, take(x_train, slice(0)), y_train[:0],
                   x_test, y_test, seed, np.zeros((), np.float32), np.ones((), np.float32), 0.0,
                   1.0, hashes, str(path.resolve()), tuple(names) if several else ())


def _as_input(path: Path, x: np.ndarray, key: str, dtype: str | None) -> np.ndarray:
    """`x` in the dtype of the model input it feeds: float32 for a float input (what the model
    computes in); for an integer input (token ids) its integers, cast to the input's integer
    type when they fit, never turned into floats."""
    if dtype is None:  # no model to ask: floats as float32, integers as given
        return x if x.dtype.kind in "iu" else x.astype(np.float32)
    target = np.dtype(dtype)
    if target.kind not in "iu":
        return x.astype(np.float32)
    if x.dtype.kind not in "iu":
        rows = x.reshape(len(x), -1)
        bad = (rows != np.round(rows)).any(axis=1)
        if bad.any():
            raise EdgepipeError(f"Data file {path}: {key} feeds the model's integer input "
                                f"({dtype}: token ids or indices) but holds fractions (first at "
                                f"sample {int(np.argmax(bad))}); save the integers, e.g. "
                                f"{key}.astype('{dtype}').")
    info = np.iinfo(target)
    if x.size and (x.min() < info.min or x.max() > info.max):
        raise EdgepipeError(f"Data file {path}: {key} holds values from {x.min()} to {x.max()}, "
                            f"beyond the range of the model's {dtype} input; token ids must "
                            f"fit in {dtype}.")
    return x.astype(target)


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


NPZ_HINT = f"Write it with numpy.savez(path, {'=..., '.join(NPZ_KEYS)}=...)."
# What a dtype kind holds, for the kinds a model cannot take as numbers.
_NOT_NUMBERS = {"b": "booleans", "c": "complex numbers", "M": "dates", "m": "time spans",
                "U": "text", "S": "bytes", "V": "raw bytes or records", "O": "Python objects"}
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_LABEL = 2**31 - 1  # no model has more outputs; uint64 labels past 2**63 wrap in int64


def _read_npz(path: Path, task: Task | None, names=None,
              discover: bool = False) -> tuple[dict, Task, list]:
    """The arrays of a user's .npz, the task, and the (x_train key, x_test key) of each model
    input (`names`: the model's input names; None: one input). Each member's header is read and
    checked (dtype, shape, size against the zip member and the free memory) before any array is
    loaded, and the values after: numpy and TensorFlow crash, abort or exhaust the memory on
    what is refused here. `task` None: classification when both label arrays hold integers."""
    regular_file(path, "Data file", NPZ_HINT)
    try:
        with zipfile.ZipFile(path) as archive:
            members, pairs = _members(path, archive, names, discover)
            headers = {key: _header(path, archive, key, info) for key, info in members.items()}
            if task is None:
                integer = all(headers[k][1].kind in "iu" for k in ("y_train", "y_test"))
                task = Task.CLASSIFICATION if integer else Task.REGRESSION
            _check_shapes(path, {key: shape for key, (shape, _) in headers.items()}, task, pairs)
            _check_memory(path, headers)
            arrays = {key: _load(archive, info) for key, info in members.items()}
    except EdgepipeError:
        raise
    except OSError as e:
        raise EdgepipeError(f"Cannot read data file {path}: {e.strerror or e}.") from None
    except zipfile.BadZipFile as e:
        raise EdgepipeError(f"Data file {path} is not a .npz (zip) file: "
                            f"{not_an_archive(path, e)}. {NPZ_HINT}") from None
    except (ValueError, EOFError, zlib.error) as e:
        raise EdgepipeError(f"Data file {path} is damaged ({str(e).splitlines()[0][:200]}). "
                            f"{NPZ_HINT}") from None
    except (NotImplementedError, RuntimeError) as e:  # zipfile: encrypted, unknown compression
        raise EdgepipeError(f"Data file {path} cannot be read by numpy: its zip members are "
                            f"encrypted or compressed in a way numpy.savez never writes ("
                            f"{type(e).__name__}). {NPZ_HINT}") from None
    _check_values(path, arrays, task)
    if task is Task.CLASSIFICATION:  # labels of shape (samples, 1) become (samples,)
        arrays.update({k: arrays[k].reshape(len(arrays[k])) for k in ("y_train", "y_test")})
    return arrays, task, pairs


def _load(archive: zipfile.ZipFile, info) -> np.ndarray:
    with archive.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def input_keys(names) -> list:
    """The .npz keys (x_train, x_test) of each model input: `x_train_<name>`, `x_test_<name>`
    for a model with several inputs (`names`, Keras' input names, in the model's order)."""
    return [(f"x_train_{n}", f"x_test_{n}") for n in names]


def _keys(pairs) -> list:
    """Every key read, in the order the source hash covers them: x_train, y_train, x_test,
    y_test with one input."""
    return [*(tr for tr, _ in pairs), "y_train", *(te for _, te in pairs), "y_test"]


def _members(path: Path, archive: zipfile.ZipFile, names=None,
             discover: bool = False) -> tuple[dict, list]:
    """{key: ZipInfo} of the arrays numpy.savez wrote as `<key>.npy` (others are ignored), and
    the (x_train, x_test) keys of each model input (`names`; None: one input, or with
    `discover` the inputs that `x_train_<name>` keys name). One input reads `x_train`/`x_test`,
    or `x_train_<name>`/`x_test_<name>`; several read the named keys."""
    stored = [info.filename for info in archive.infolist()]
    given = ", ".join(repr(n.removesuffix(".npy")) for n in stored[:8]) or "nothing"
    plain = [("x_train", "x_test")]
    if discover and "x_train.npy" not in stored:  # no model to ask: the keys name the inputs
        names = [n[len("x_train_"):-len(".npy")] for n in stored
                 if n.startswith("x_train_") and n.endswith(".npy")] or None
    if names is None or (len(names) == 1 and "x_train.npy" in stored):
        pairs = plain
    else:
        pairs = input_keys(names)
        if len(names) > 1 and "x_train.npy" in stored:
            wanted = ", ".join(f"{k}=..." for split in (0, 1) for k in (p[split] for p in pairs))
            raise EdgepipeError(f"Data file {path} has one x_train, but the model takes "
                                f"{len(names)} inputs ({', '.join(map(repr, names))}): save one "
                                f"array per input, numpy.savez(path, {wanted}, y_train=..., "
                                "y_test=...).")
    for key in _keys(pairs):
        if f"{key}.npy" not in stored and pairs == plain:
            raise EdgepipeError(f"Data file {path} has no array {key!r} (it has: {given}). "
                                f"{NPZ_HINT}")
        if f"{key}.npy" not in stored:
            owner = next((f" for the model's input {n!r}" for n, pair in
                          zip(names, pairs, strict=True) if key in pair), "")
            raise EdgepipeError(f"Data file {path} has no array {key!r}{owner} (it has: "
                                f"{given}). Save x_train_<input name> and x_test_<input name> "
                                "for each model input, with y_train and y_test.")
    return {k: archive.getinfo(f"{k}.npy") for k in _keys(pairs)}, pairs


def _header(path: Path, archive: zipfile.ZipFile, key: str, info) -> tuple[tuple, np.dtype]:
    """(shape, dtype) that a member's .npy header declares, checked without loading the array:
    numbers only, and no more bytes declared than the member holds."""
    fmt = np.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
        held = info.file_size - f.tell()
    where = f"Data file {path}: {key}"
    if dtype.fields is not None:
        raise EdgepipeError(f"{where} holds records (structured dtype {dtype}); expected one "
                            f"plain numeric array. Save each field as its own array.")
    if dtype.kind in _NOT_NUMBERS:
        what = _NOT_NUMBERS[dtype.kind]
        fix = ("edgepipe never unpickles data; a ragged list of samples must be padded or cut "
               "to one shape" if dtype.hasobject else f"convert it, e.g. {key}.astype('float32')")
        raise EdgepipeError(f"{where} holds {what} (dtype {dtype}); expected real numbers "
                            f"(integers or floats): {fix}.")
    if any(n < 0 for n in shape):
        raise EdgepipeError(f"{where} declares shape {shape}, with a negative size: the file is "
                            f"damaged. {NPZ_HINT}")
    declared = math.prod(shape) * dtype.itemsize
    if declared > held:
        raise EdgepipeError(f"{where} declares shape {shape} of {dtype} ({_size(declared)}) but "
                            f"holds {_size(held)}: the file is truncated or was not written by "
                            f"numpy. {NPZ_HINT}")
    return shape, dtype


def _check_shapes(path: Path, shapes: dict, task: Task,
                  pairs=(("x_train", "x_test"),)) -> None:
    """Samples along the first axis, at least one value along every other, one target each;
    `pairs`: the (x_train, x_test) keys of each model input."""
    where = f"Data file {path}"
    for split, x_key in ((s, pair[i]) for pair in pairs for i, s in enumerate(("train", "test"))):
        x, y = shapes[x_key], shapes[f"y_{split}"]
        if len(x) < 2:
            raise EdgepipeError(f"{where}: {x_key} has shape {x}; expected (samples, "
                                "features...) with at least 2 dimensions.")
        if 0 in x[1:]:
            raise EdgepipeError(f"{where}: {x_key} has shape {x}, so each sample holds no "
                                "values; expected (samples, features...) with at least 1 "
                                "feature along every axis after the first.")
        if len(y) == 0:
            raise EdgepipeError(f"{where}: y_{split} has shape (); expected one target per "
                                f"sample, shape ({x[0]},).")
        if x[0] != y[0]:
            raise EdgepipeError(f"{where}: {x_key} has {x[0]} samples but y_{split} has "
                                f"{y[0]} (shapes {x} and {y}). Give one target per sample.")
        if y[1:] not in ((), (1,)):
            expected = ("class indices 0, 1, 2, ... (one integer per sample) for a classifier"
                        if task is Task.CLASSIFICATION else "one number per sample for a "
                        "regression")
            raise EdgepipeError(f"{where}: y_{split} has shape {y}; expected {expected}, "
                                f"shape ({y[0]},).")
    for train, test in pairs:
        if shapes[train][1:] != shapes[test][1:]:
            raise EdgepipeError(f"{where}: {train} samples have shape {shapes[train][1:]} but "
                                f"{test} samples have {shapes[test][1:]}. Both splits need the "
                                "same shape.")
    n_train, n_test = shapes[pairs[0][0]][0], shapes[pairs[0][1]][0]
    if n_train < 10 or n_test < 1:
        raise EdgepipeError(f"{where}: {n_train} training and {n_test} test samples; expected "
                            "at least 10 and 1.")


def _check_memory(path: Path, headers: dict) -> None:
    """Refuse data that cannot fit in memory: numpy would raise MemoryError half-way, or the
    kernel kill the process. Loading holds the arrays as stored and a float64 copy of each."""
    free = _available_memory()
    need = sum(math.prod(shape) * (dtype.itemsize + 8) for shape, dtype in headers.values())
    if free is not None and need > free:
        x_train = next(iter(headers))  # the first input's x_train
        raise EdgepipeError(f"Data file {path} needs about {_size(need)} of memory to load "
                            f"({x_train} {headers[x_train][0]}), more than the {_size(free)} "
                            "available; use fewer samples or a machine with more memory.")


def _available_memory() -> int | None:
    """Bytes the system can still give: Linux's MemAvailable counts reclaimable page cache as
    free (sysconf's free pages do not, and would refuse data that fits), else sysconf."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_values(path: Path, arrays: dict, task: Task) -> None:
    """Finite numbers that float32 (what the model computes in) can hold; class indices."""
    where = f"Data file {path}"
    for key, a in arrays.items():
        if a.dtype.kind != "f":
            continue
        rows = a.reshape(len(a), -1)
        for bad, what, fix in ((~np.isfinite(rows), "NaN or Inf", "Clean or drop them."),
                               (np.abs(rows) > FLOAT32_MAX,
                                f"values beyond float32's range (±{FLOAT32_MAX:.3g})",
                                "The model computes in float32: rescale them.")):
            bad = bad.any(axis=1)
            if bad.any():
                raise EdgepipeError(f"{where}: {key} has {what} at sample "
                                    f"{int(np.argmax(bad))} ({int(bad.sum())} bad samples). {fix}")
    if task is Task.CLASSIFICATION:
        for key in ("y_train", "y_test"):
            y = arrays[key].reshape(-1)
            if np.any(y < 0) or np.any(y != np.round(y)) or np.any(y > MAX_LABEL):
                raise EdgepipeError(f"{where}: {key} must hold class indices 0, 1, 2, ... (one "
                                    f"integer per sample, at most {MAX_LABEL}) for a classifier; "
                                    f"got values from {y.min()} to {y.max()}, dtype {y.dtype}.")


def _check_class_count(path: Path, y_train: np.ndarray, y_test: np.ndarray) -> None:
    """A classifier to train gets one output per class: more classes than training samples
    means labels that were never numbered 0, 1, 2, ... (and an output layer that large)."""
    top = int(max(y_train.max(), y_test.max()))
    if top >= len(y_train):
        raise EdgepipeError(f"Data file {path}: the labels go up to {top}, so the classifier "
                            f"would have {top + 1} outputs, but there are only {len(y_train)} "
                            "training samples; number the classes 0, 1, 2, ... without gaps.")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
