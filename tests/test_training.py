"""Training: every zoo model trains and saves, the quality floors, determinism, the dead step."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import edgepipe.models.activations  # noqa: F401  (registers the layers for load_model)
from edgepipe.models.architectures import build_model
from edgepipe.models.datasets import load_builtin
from edgepipe.models.training import TrainConfig, evaluate, train
from edgepipe.models.zoo import ZOO


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_trains_saves_and_reloads(quick_zoo, name):
    out, records, datasets = quick_zoo
    record, data = records[name], datasets[ZOO[name].dataset]
    assert record["model"] == name and record["training"]["epochs_run"] <= 2
    assert record["dataset"]["sha256"]["test"] == data.hashes["test"]
    assert {"tensorflow-cpu", "keras", "numpy", "python"} <= set(record["versions"])
    assert json.loads((out / f"{name}.json").read_text()) == record
    model = keras.models.load_model(out / f"{name}.keras")
    # The saved file is the model the record describes: same metrics, recomputed from the file.
    again = evaluate(model, data, data.x_test, data.y_test)
    assert again == pytest.approx(record["metrics"]["test"], rel=1e-6, abs=1e-7)
    assert not list(out.glob(".*")), "temporary files left behind"


FLOORS = [
    pytest.param("mlp_swish", "r2", 0.40, id="mlp_swish-r2"),
    pytest.param("mlp_piecewise", "r2", 0.40, id="mlp_piecewise-r2"),
    pytest.param("cnn_swish", "accuracy", 0.95, id="cnn_swish-accuracy"),
    pytest.param("cnn_piecewise", "accuracy", 0.95, id="cnn_piecewise-accuracy"),
    pytest.param("cnn_step", "accuracy", 0.90, id="cnn_step-accuracy"),
]


@pytest.mark.slow  # trains six zoo models in full (~60 s)
@pytest.mark.parametrize("name, metric, floor", FLOORS)
def test_quality_floor_with_default_settings(default_training, name, metric, floor):
    _, records = default_training
    assert records[name]["metrics"]["test"][metric] >= floor


def _initial_weights(spec, data, seed, **activation_config):
    keras.utils.set_random_seed(seed)
    return build_model(spec, data.input_shape, data.num_outputs, activation_config).get_weights()


@pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")  # the point
@pytest.mark.parametrize("name, frozen", [
    pytest.param("mlp_step", ["hidden"], id="mlp_step"),
    pytest.param("cnn_step", ["conv", "depthwise", "pointwise"], id="cnn_step"),
])
@pytest.mark.slow  # needs the full trainings above
def test_step_with_plain_autodiff_does_not_learn(default_training, tmp_path, name, frozen):
    """The contrast: without a surrogate no gradient crosses the step, so every layer below it
    keeps its random initial weights bit for bit, and the model is worse than with STE."""
    spec, (_, surrogate_records) = ZOO[name], default_training
    data = load_builtin(spec.dataset)
    record = train(spec, data, TrainConfig(), tmp_path, activation_config={"surrogate": "none"})
    model = keras.models.load_model(tmp_path / f"{name}.keras")
    init = _initial_weights(spec, data, 0, surrogate="none")
    trained = model.get_weights()
    names = [w.path.split("/")[0] for w in model.weights]
    for layer_name, before, after in zip(names, init, trained, strict=True):
        if layer_name in frozen:
            np.testing.assert_array_equal(after, before, err_msg=f"{layer_name} moved")
        elif layer_name in ("output", "logits"):
            assert not np.array_equal(after, before), "the head above the step should train"
    metric = "r2" if spec.family.name == "mlp" else "accuracy"
    assert record["metrics"]["test"][metric] < surrogate_records[name]["metrics"]["test"][metric]
    # ...while with the straight-through surrogate the same layers do move.
    ste = keras.models.load_model(default_training[0] / f"{name}.keras").get_weights()
    assert not np.array_equal(ste[0], init[0])


@pytest.mark.slow  # two trainings in fresh processes (~20 s)
def test_same_seed_same_weights_across_processes(tmp_path):
    def run(out, seed):
        done = subprocess.run(
            [sys.executable, "-m", "edgepipe.pipeline.cli", "train", "mlp_piecewise",
             "cnn_step", "--epochs", "3", "--seed", str(seed), "--out", str(out)],
            capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return {m: json.loads((out / f"{m}.json").read_text()) for m in ("mlp_piecewise",
                                                                           "cnn_step")}

    a, b, c = run(tmp_path / "a", 7), run(tmp_path / "b", 7), run(tmp_path / "c", 8)
    for m in a:
        assert a[m]["weights_sha256"] == b[m]["weights_sha256"]
        assert a[m]["metrics"] == b[m]["metrics"]
        assert a[m]["weights_sha256"] != c[m]["weights_sha256"]


def test_a_whole_epoch_per_call_trains_the_weights_batch_by_batch_would():
    """fit compiles a whole epoch into one call (steps_per_execution) for speed: the weights
    are those Keras' default loop, one call per batch, gives."""
    from edgepipe.models.training import fit, weights_sha256

    spec = ZOO["cnn_swish"]
    data = load_builtin(spec.dataset, 0)
    config = TrainConfig(epochs=3, seed=0)
    model, run = fit(spec, data, config)
    assert model.steps_per_execution > 1 and run["epochs_run"] == 3

    keras.utils.set_random_seed(config.seed)
    plain = build_model(spec, data.input_shape, data.num_outputs)
    plain.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy")
    plain.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
              epochs=3, batch_size=config.batch_size, shuffle=True, verbose=0)
    assert plain.steps_per_execution == 1
    assert weights_sha256(plain) == weights_sha256(model)
