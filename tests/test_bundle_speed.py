"""The bundle stage's faster computations give what the straightforward ones gave, to the bit:
the kink probe's local medians, the integer grid computed in chunks (and narrowed to float32
where no model output sees it), and the walks a model's modes share (one check of the walk,
one calibration, one set of layer references) against each mode walked on its own."""

import json

import keras
import numpy as np
import pytest

from edgepipe.converters.modes import QuantMode
from edgepipe.converters.variants import convert_model
from edgepipe.device_tests.schema import ConversionStatus, RunFolder
from edgepipe.models.datasets import load_npz_as_given
from edgepipe.pipeline import tolerances
from edgepipe.pipeline.bundle import entry, model_block
from edgepipe.pipeline.kinks import _local_level
from edgepipe.pipeline.layer_references import references
from edgepipe.pipeline.tolerances import (
    ModelWalks,
    NotSimulated,
    keras_layer_outputs,
    simulation,
)

L = keras.layers
SIMULATED = (QuantMode.FLOAT16, QuantMode.DYNAMIC, QuantMode.INT8, QuantMode.INT16X8)
CONVERTED = (QuantMode.FLOAT32, QuantMode.FLOAT16, QuantMode.INT8)


def same(a, b) -> bool:
    """Equal dtype, shape and bits (NaN where NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("n", [0, 1, 5, 20, 32, 33, 34, 35, 100, 4001])
def test_local_level_is_the_median_of_each_points_window(n):
    def one_by_one(values, half=16, skip=2):
        level = np.empty(len(values))
        for i in range(len(values)):
            window = np.r_[values[max(0, i - half):max(0, i - skip)],
                           values[min(n, i + skip + 1):min(n, i + half + 1)]]
            level[i] = np.median(window) if window.size else 0.0
        return level

    rng = np.random.default_rng(n)
    for values in (np.abs(rng.standard_normal(n)), np.round(rng.random(n) * 3),
                   rng.standard_normal(n) * 1e-9):
        assert same(_local_level(values), one_by_one(values))


def _int8_formula(h, lo, hi):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(h / scale) + zero, 0, 255) - zero) * scale


def _int16_formula(h, lo, hi):
    scale = max(abs(lo), abs(hi)) / 32767.0 or 1.0
    return np.clip(np.round(h / scale), -32767, 32767) * scale


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf and nan on purpose
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_the_grid_in_chunks_is_the_formula(dtype):
    rng = np.random.default_rng(0)
    chunk = tolerances._CHUNK
    for n in (0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk + 7):
        h = (rng.standard_normal(n) * 10).astype(dtype)
        if n > 10:
            h[[1, 3, 5, 7]] = [np.nan, np.inf, -np.inf, 6e4]
        for lo, hi in ((-2.0, 7.0), (0.5, 3.0), (-4.0, -1.0), (0.0, 0.0), (-1e30, 1e30)):
            wide = tolerances._grid(h, lo, hi, QuantMode.INT8)
            assert same(wide, _int8_formula(h, lo, hi)), (n, lo, hi)
            narrow = tolerances._grid(h, lo, hi, QuantMode.INT8, narrow=True)
            assert same(narrow, wide.astype(np.float32))
            assert same(tolerances._grid(h, lo, hi, QuantMode.INT16X8), _int16_formula(h, lo, hi))
    h = rng.standard_normal((30, 20, 10)).astype(dtype).transpose(2, 0, 1)  # not contiguous
    assert same(tolerances._grid(h, -1.0, 2.0, QuantMode.INT8), _int8_formula(h, -1.0, 2.0))


def _users_model():
    """Images through a conv with BatchNorm, ReLU and hard-swish, a nested block, a residual
    Add, a tanh Dense (its activation split off in the integer modes) and a linear output (on
    the int8 grid: a model output)."""
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Activation("hard_swish", name="hswish")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    block = keras.Sequential([keras.Input((8,)), L.Dense(8, name="inner"),
                              L.Activation("relu", name="inner_relu")], name="block")
    x = L.Add(name="add")([block(x), x])
    x = L.Dense(12, activation="tanh", name="hidden")(x)
    return keras.Model(inputs, L.Dense(3, name="out")(x), name="users")


@pytest.fixture(scope="module")
def trained():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:300, :, :, None] / 16.0).astype(np.float32)
    y = (digits.target[:300] % 3).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = _users_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:200], y[:200], epochs=3, batch_size=32, verbose=0)
    return model, x[:200], y[:200], x[200:], y[200:]


ROWS = [0, 17, 99]


def test_shared_walks_give_what_each_mode_walked_alone_gives(trained):
    model, x_train, _, x_test, _ = trained
    walks = ModelWalks(model, x_test, x_train)
    for mode in SIMULATED:  # one object for every mode, as the bundle stage holds it
        shared = walks.simulation(mode, layer_rows=ROWS)
        alone = simulation(model, mode, x_test, x_train, layer_rows=ROWS)
        assert shared.outputs is not None, shared.reason
        assert len(shared.outputs) == len(alone.outputs) == 1
        assert same(shared.outputs[0], alone.outputs[0]), mode
        assert shared.describe() == alone.describe()
        assert list(shared.layer_outputs) == list(alone.layer_outputs)
        assert all(same(shared.layer_outputs[k], alone.layer_outputs[k])
                   for k in alone.layer_outputs), mode
    found, walked = walks.layer_outputs(ROWS), keras_layer_outputs(model, x_test[ROWS])
    assert found.paths == walked.paths and found.output_layers == walked.output_layers
    assert all(same(found.outputs[k], walked.outputs[k]) for k in walked.outputs)
    assert list(found.paths)[-1] == "out" and "block/inner" in found.paths


def test_narrowed_grid_values_are_the_ones_every_layer_saw(trained, monkeypatch):
    """Narrowing an integer walk's values to float32 changes nothing: the layers cast them to
    float32 anyway, and the model's output stays float64 as before."""
    model, x_train, _, x_test, _ = trained
    narrowed = simulation(model, QuantMode.INT8, x_test, x_train, layer_rows=ROWS)
    grid = tolerances._grid
    monkeypatch.setattr(tolerances, "_grid", lambda h, lo, hi, mode, narrow=False:
                        grid(h, lo, hi, mode))
    wide = simulation(model, QuantMode.INT8, x_test, x_train, layer_rows=ROWS)
    assert narrowed.outputs[0].dtype == np.float64
    assert same(narrowed.outputs[0], wide.outputs[0])
    assert all(same(narrowed.layer_outputs[k], wide.layer_outputs[k])
               for k in wide.layer_outputs)


class Doubled(keras.layers.Layer):
    """A user's layer that acts differently unless told it is not training."""

    def call(self, x, training=True):
        return x * 2.0 if training else x


def test_a_walk_on_few_samples_is_still_checked_against_the_model():
    """The per-layer references of a few samples check their own walk: a model with a layer
    that reads a training flag (which a walk does not pass) is refused there as it was when
    its walk was checked apart, and on more samples."""
    x = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, L.Dense(2)(Doubled(name="doubled")(L.Dense(4)(inputs))))
    for count in (3, 30):  # walked once and checked; checked on 16, then walked
        with pytest.raises(NotSimulated, match="depends on more than its inputs"):
            keras_layer_outputs(model, x[:count])
        assert references(model, x, list(range(count)), ModelWalks(model, x)) is None


@pytest.fixture(scope="module")
def converted(trained, tmp_path_factory):
    model, x_train, y_train, x_test, y_test = trained
    root = tmp_path_factory.mktemp("converted")
    np.savez(root / "users.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    model.save(root / "users.keras")
    variants = convert_model(model, "users", CONVERTED, RunFolder(root).tflite_dir, x_train)
    return root, variants, load_npz_as_given(root / "users.npz")


def _blocks(root, model, variants, data, rep, walks):
    block, reference = model_block(root, "users", "custom", "user", model, data,
                                   root / "users.keras", rep, layer_samples=4, walks=walks)
    made = [entry(root, v, model, data, reference, rep, {}, layers=block.get("layers"),
                  walks=walks) for v in variants]
    return json.loads(json.dumps({"model": block, "entries": made}))


def test_the_bundle_stage_writes_what_each_entry_walked_alone_wrote(trained, converted):
    """Tolerances, per-layer references and bounds, the boundary block: the blocks made with
    the walks shared between the model block and its entries are those made without."""
    model, x_train = trained[0], trained[1]
    root, variants, data = converted
    alone = _blocks(root, model, variants, data, x_train, None)
    shared = _blocks(root, model, variants, data, x_train, ModelWalks(model, data.x_test,
                                                                      x_train))
    assert [e["status"] for e in shared["entries"]] == [ConversionStatus.CONVERTED] * len(CONVERTED)
    assert shared == alone
    assert "relu" in shared["model"]["boundary"]["layers"]
    assert [len(e["layers"]) for e in shared["entries"]] == [len(e["layers"])
                                                             for e in alone["entries"]]
    assert all(e["tolerance"]["max_abs"] > 0 for e in shared["entries"])
