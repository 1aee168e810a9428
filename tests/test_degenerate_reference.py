"""A dead Keras reference never passes: when a model's outputs are the same for every test
sample (to within a few steps of float32 at their magnitude), every variant matches it with
max|Δ| = 0 and nothing has been compared. Each of its entries is then an error saying so, on
every target (the runner decides), and `edgepipe run` says it once per model. A model that
responds to its inputs is not affected, nor is one whose outputs are equal across classes for
each sample but change from sample to sample."""

import json

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from edgepipe.device_tests.runner import constant_reference
from edgepipe.pipeline.cli import app

runner = CliRunner()
MESSAGE = "the Keras reference is constant: nothing is compared"
MODES = ("float32", "float16", "dynamic", "int8", "int16x8")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """d.npz (8 features, 3 classes, 92 test samples) and two classifiers: dead.keras, a Dense
    with a zero kernel and a zero bias before the softmax (1/3 for every class of every sample),
    and live.keras, trained for a few epochs."""
    root = tmp_path_factory.mktemp("degenerate")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)).astype(np.int64)
    np.savez(root / "d.npz", x_train=x[:208], y_train=y[:208], x_test=x[208:], y_test=y[208:])
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(3)
    dead = keras.Sequential([keras.Input((8,)), dense, keras.layers.Softmax()])
    dense.set_weights([np.zeros((8, 3), np.float32), np.zeros(3, np.float32)])
    dead.save(root / "dead.keras")
    live = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])
    live.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    live.fit(x[:208], y[:208], epochs=10, batch_size=32, verbose=0)
    live.save(root / "live.keras")
    return root


@pytest.fixture(scope="module")
def user_run(user, tmp_path_factory):
    out = tmp_path_factory.mktemp("degenerate_run")
    result = runner.invoke(app, ["run", "--model", str(user / "dead.keras"), "--model",
                                 str(user / "live.keras"), "--data", str(user / "d.npz"),
                                 "--targets", "host,host-ref", "--out", str(out)],
                           env={"COLUMNS": "200"})
    return out, result


def test_a_dead_reference_makes_every_entry_an_error_and_a_live_model_is_unaffected(user_run):
    out, result = user_run
    assert result.exit_code == 1, result.output
    records = json.loads((out / "results.json").read_text())["results"]
    dead = [r for r in records if r["model"] == "dead"]
    assert {(r["mode"], r["target"]) for r in dead} == {
        (mode, target) for mode in MODES for target in ("host", "host-ref")}
    ran = [r for r in dead if r["metrics"] is not None]
    assert {r["mode"] for r in ran} >= {"float32", "float16", "dynamic"}
    for r in dead:
        assert r["status"] == "error", r
    for r in ran:  # it ran, matched (max|Δ| tiny), and still is no pass
        assert r["reason"] == (f"{MESSAGE} (every output is 0.333333 for all 92 samples; is "
                               f"the model trained?)"), r
    live = [r for r in records if r["model"] == "live"]
    assert len(live) == 10
    assert all(MESSAGE not in r["reason"] for r in live)
    assert all(r["status"] == "pass" for r in live if r["mode"] == "float32"), live


def test_run_says_it_once_per_model(user_run):
    _, result = user_run
    lines = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert lines == [f"warning: dead: {MESSAGE} (every output is 0.333333 for all 92 samples; "
                     f"is the model trained?); its variants are errors wherever they run"]


def test_a_freshly_initialised_mobilenet_is_constant():
    """The case in the field: MobileNetV3Small(weights=None) gives 0.1 for each of 10 classes
    of every sample (up to float32 rounding)."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                classes=10, minimalistic=True)
    x = np.random.default_rng(0).uniform(0, 255, size=(24, 32, 32, 3)).astype(np.float32)
    reference = np.asarray(model(x, training=False), np.float32)
    message = constant_reference(reference)
    assert message is not None and message.startswith(f"{MESSAGE} (every output is 0.1 ")
    assert message.endswith(" for all 24 samples; is the model trained?)")


def test_equal_outputs_per_sample_that_change_across_samples_are_not_constant():
    """A softmax over equal logits within one sample is not the problem: the same 3 outputs
    for each sample, different from sample to sample, are compared."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    score = keras.layers.Dense(1)(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([score, score, score]))
    x = np.random.default_rng(1).normal(size=(92, 8)).astype(np.float32)
    reference = np.asarray(model(x), np.float32)
    assert np.all(reference[:, 0] == reference[:, 2]) and reference[:, 0].std() > 0.1
    assert constant_reference(reference) is None
    assert constant_reference(reference[:1]) is None  # one sample compares to itself only


def test_a_reference_constant_per_column_names_each_value():
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((8,)), dense, keras.layers.Softmax()])
    dense.set_weights([np.zeros((8, 3), np.float32), np.array([0.1, 0.2, 0.3], np.float32)])
    x = np.random.default_rng(2).normal(size=(50, 8)).astype(np.float32)
    assert constant_reference(np.asarray(model(x), np.float32)) == (
        f"{MESSAGE} (the outputs are (0.30061, 0.332225, 0.367165) for all 50 samples; is the "
        f"model trained?)")
