"""Real offline datasets: seeded splits, standardisation fitted on training only, user .npz."""

import io
import math
import zipfile

import numpy as np
import pytest

from edgepipe.core.errors import EdgepipeError
from edgepipe.models.datasets import Task, load_builtin, load_npz, load_npz_as_given, sha256_arrays


@pytest.mark.parametrize("name, n, shape, task", [
    pytest.param("diabetes", 442, (10,), Task.REGRESSION, id="diabetes"),
    pytest.param("digits", 1797, (8, 8, 1), Task.CLASSIFICATION, id="digits"),
])
def test_builtin_splits_partition_the_data(name, n, shape, task):
    from sklearn import datasets as sk

    d = load_builtin(name, seed=0)
    assert d.task is task and d.input_shape == shape
    assert (len(d.x_train), len(d.x_test)) == (n - round(n * 0.2) - len(d.x_val), round(n * 0.2))
    # Undo the standardisation: the three splits together are exactly the raw rows, each once.
    raw = (sk.load_diabetes(scaled=False) if name == "diabetes" else sk.load_digits()).data
    back = np.concatenate([d.x_train, d.x_val, d.x_test]).reshape(n, -1).astype(float) \
        * d.x_std.reshape(-1) \
        + d.x_mean.reshape(-1)

    def rows(a):
        a = np.round(a, 2)  # float32 round trip; the raw data has at most 2 decimals
        return a[np.lexsort(a.T[::-1])]

    np.testing.assert_allclose(rows(back), rows(raw), rtol=0, atol=1e-9)


def test_standardisation_is_fitted_on_the_training_split_only():
    d = load_builtin("diabetes", seed=0)
    np.testing.assert_allclose(d.x_train.mean(axis=0), 0.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(axis=0), 1.0, rtol=1e-5, atol=0)
    assert np.abs(d.x_test.mean(axis=0)).max() > 1e-3  # test is transformed, not refitted
    np.testing.assert_allclose(d.y_train.mean(), 0.0, rtol=0, atol=1e-5)
    assert 100 < d.y_mean < 200 and d.y_std > 10  # in the target's own units


def test_images_are_standardised_with_one_scalar():
    d = load_builtin("digits", seed=0)
    assert d.x_mean.shape == () and d.x_std.shape == ()
    np.testing.assert_allclose(d.x_train.mean(), 0.0, rtol=0, atol=1e-5)
    assert d.y_train.dtype == np.int64 and d.num_outputs == 10


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (load_builtin("diabetes", seed=s) for s in (0, 0, 1))
    assert a.hashes == b.hashes
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.hashes["source"] == c.hashes["source"]
    assert a.hashes["test"] != c.hashes["test"]


def test_unknown_dataset():
    with pytest.raises(EdgepipeError, match="Unknown dataset 'mnist'. Valid datasets: "
                                            "diabetes, digits."):
        load_builtin("mnist")


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_user_npz_regression(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 3)), rng.normal(size=100)
    d = load_npz(_save(tmp_path / "mine.npz", x_train=x[:80], y_train=y[:80],
                       x_test=x[80:], y_test=y[80:]), Task.REGRESSION, seed=0)
    assert d.name == "mine" and (len(d.x_train), len(d.x_val), len(d.x_test)) == (64, 16, 20)
    assert d.hashes["source"] == sha256_arrays(x[:80], y[:80], x[80:], y[80:])


def test_user_npz_images_get_a_channel_axis(tmp_path):
    rng = np.random.default_rng(0)
    d = load_npz(_save(tmp_path / "img.npz", x_train=rng.random((50, 6, 6)),
                       y_train=rng.integers(0, 3, 50), x_test=rng.random((10, 6, 6)),
                       y_test=rng.integers(0, 3, 10)), Task.CLASSIFICATION)
    assert d.input_shape == (6, 6, 1)


GOOD = {"x_train": np.zeros((20, 3)), "y_train": np.zeros(20), "x_test": np.zeros((5, 3)),
        "y_test": np.zeros(5)}


@pytest.mark.parametrize("change, task, message", [
    pytest.param({"y_test": None}, Task.REGRESSION,
                 "has no array 'y_test' (it has: 'x_train', 'y_train', 'x_test'). Write it with "
                 "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).",
                 id="missing-key"),
    pytest.param({"y_train": np.zeros(19)}, Task.REGRESSION,
                 "x_train has 20 samples but y_train has 19 (shapes (20, 3) and (19,))",
                 id="mismatched-samples"),
    pytest.param({"x_test": np.zeros((5, 4))}, Task.REGRESSION,
                 "x_train samples have shape (3,) but x_test samples have (4,)",
                 id="mismatched-features"),
    pytest.param({"x_train": np.where(np.arange(60).reshape(20, 3) == 31, np.nan, 0.0)},
                 Task.REGRESSION, "x_train has NaN or Inf at sample 10 (1 bad samples)",
                 id="nan"),
    pytest.param({"y_train": np.full(20, 0.5)}, Task.CLASSIFICATION,
                 "y_train must hold class indices 0, 1, 2, ...", id="float-labels"),
    pytest.param({"y_train": np.zeros((20, 2))}, Task.REGRESSION,
                 "y_train has shape (20, 2); expected one number per sample for a "
                 "regression, shape (20,).", id="2d-target"),
    pytest.param({"x_train": np.array([1.0] * 20)}, Task.REGRESSION,
                 "x_train has shape (20,); expected (samples, features...)", id="1d-x"),
    pytest.param({"x_train": np.array(["a"] * 20)}, Task.REGRESSION,
                 "x_train holds text (dtype <U1); expected real numbers (integers or floats)",
                 id="text-x"),
    pytest.param({"x_train": np.zeros((20, 0)), "x_test": np.zeros((5, 0))}, Task.REGRESSION,
                 "x_train has shape (20, 0), so each sample holds no values", id="zero-width"),
    pytest.param({"x_test": np.zeros((0, 3)), "y_test": np.zeros(0)}, Task.REGRESSION,
                 "20 training and 0 test samples; expected at least 10 and 1", id="empty-test"),
    pytest.param({"y_train": np.array(3.0)}, Task.REGRESSION,
                 "y_train has shape (); expected one target per sample, shape (20,)", id="0d-y"),
    pytest.param({"x_train": np.full((20, 3), 1e39)}, Task.REGRESSION,
                 "x_train has values beyond float32's range", id="beyond-float32"),
    pytest.param({"y_train": np.arange(20), "y_test": np.array([0, 1, 2, 3, 20])},
                 Task.CLASSIFICATION, "the labels go up to 20, so the classifier would have 21 "
                 "outputs, but there are only 20 training samples", id="labels-out-of-range"),
])
def test_bad_npz_names_the_key_and_shapes(tmp_path, change, task, message):
    arrays = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(EdgepipeError) as info:
        load_npz(path, task)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("<html>404</html>")
    with pytest.raises(EdgepipeError, match="is not a .npz \\(zip\\) file: it starts with text "
                                            "'<html>404</html>'"):
        load_npz(path, Task.REGRESSION)
    with pytest.raises(EdgepipeError, match="does not exist"):
        load_npz(tmp_path / "nope.npz", Task.REGRESSION)
    with pytest.raises(EdgepipeError, match="data.npz is a folder, not a regular file"):
        path.unlink()
        path.mkdir()
        load_npz(path, Task.REGRESSION)


def _variant(tmp_path, kind):
    """GOOD saved another way that numpy reads as the same arrays."""
    path = tmp_path / f"{kind}.npz"
    if kind == "fortran":
        _save(path, **{**GOOD, "x_train": np.asfortranarray(np.arange(60.0).reshape(20, 3))})
    elif kind == "compressed":
        np.savez_compressed(path, **GOOD)
    elif kind == "extra-arrays":
        _save(path, **GOOD, notes=np.array(["not used"]), x_val=np.zeros((2, 3)))
    return path


@pytest.mark.parametrize("kind", ["fortran", "compressed", "extra-arrays"])
def test_npz_saved_other_ways_loads_the_same_data(tmp_path, kind):
    plain = {**GOOD, "x_train": np.arange(60.0).reshape(20, 3)} if kind == "fortran" else GOOD
    expected = load_npz(_save(tmp_path / "plain.npz", **plain), Task.REGRESSION)
    got = load_npz(_variant(tmp_path, kind), Task.REGRESSION)
    assert got.hashes == expected.hashes
    np.testing.assert_array_equal(got.x_train, expected.x_train)


@pytest.mark.parametrize("column", [False, True], ids=["flat", "column"])
def test_labels_as_a_column_are_one_label_per_sample(tmp_path, column):
    y_train, y_test = np.arange(20) % 3, np.arange(5) % 3
    if column:
        y_train, y_test = y_train[:, None], y_test[:, None]
    path = _save(tmp_path / "c.npz", **{**GOOD, "y_train": y_train, "y_test": y_test})
    for data in (load_npz(path, Task.CLASSIFICATION), load_npz_as_given(path)):
        assert data.task is Task.CLASSIFICATION and data.num_outputs == 3
        assert data.y_train.ndim == 1 and data.y_test.shape == (5,)


def _declaring(path, shapes: dict, member_sizes: bool = False):
    """GOOD, but the members named in `shapes` hold only a float64 header declaring that shape
    and 48 bytes; `member_sizes`: the zip directory agrees with the header (as in a genuine
    file that large)."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in GOOD.items():
            if key not in shapes:
                buffer = io.BytesIO()
                np.save(buffer, array)
                archive.writestr(f"{key}.npy", buffer.getvalue())
                continue
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"shape": shapes[key], "fortran_order": False, "descr": "<f8"})
            archive.writestr(f"{key}.npy", header.getvalue() + bytes(48))
            if member_sizes:  # written into the zip directory on close
                archive.getinfo(f"{key}.npy").file_size = 8 * math.prod(shapes[key]) + 128
    return path


def test_declared_sizes_are_checked_before_loading(tmp_path):
    """A header that declares 10**12 samples over a few bytes, or a file that truly holds more
    than the machine's memory, is refused from the headers: loading it raised MemoryError."""
    path = _declaring(tmp_path / "short.npz", {"x_train": (10**12, 3)})
    with pytest.raises(EdgepipeError, match=r"x_train declares shape \(1000000000000, 3\) of "
                                            r"float64 \(24.0 TB\) but holds 48 bytes"):
        load_npz(path, Task.REGRESSION)
    path = _declaring(tmp_path / "huge.npz", {"x_train": (10**12, 3), "y_train": (10**12,)},
                      member_sizes=True)
    with pytest.raises(EdgepipeError, match=r"needs about 64.0 TB of memory to load \(x_train "
                                            r"\(1000000000000, 3\)\), more than the"):
        load_npz(path, Task.REGRESSION)
