"""Tolerances derived by simulating each format on the model, and the boundary analysis."""

import keras
import numpy as np
import pytest

from edgepipe.converters.modes import QuantMode
from edgepipe.models.architectures import build_model
from edgepipe.models.zoo import ZOO
from edgepipe.pipeline.boundary import analyse
from edgepipe.pipeline.tolerances import (
    FLOAT32_RTOL,
    SAFETY,
    TASK_DELTA,
    derive,
    simulate,
    simulation,
)


@pytest.fixture(scope="module")
def mlp():
    keras.utils.set_random_seed(0)
    model = build_model(ZOO["mlp_swish"], (10,), 1)
    x = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    return model, x, np.asarray(model(x))


def test_float32_is_not_simulated_and_gets_the_float32_bound(mlp):
    model, x, ref = mlp
    assert simulate(model, QuantMode.FLOAT32, x, x) is None
    tol = derive(QuantMode.FLOAT32, ref, None, None, "r2")
    span = float(ref.astype(np.float64).max() - ref.astype(np.float64).min())
    assert tol["max_abs"] == pytest.approx(FLOAT32_RTOL * span, rel=1e-12, abs=0)
    assert tol["task_delta"] is None


def test_simulated_error_grows_as_precision_falls(mlp):
    model, x, ref = mlp
    before = [w.copy() for w in model.get_weights()]
    err = {m: float(np.abs(simulate(model, m, x, x) - ref).max())
           for m in (QuantMode.FLOAT16, QuantMode.INT16X8, QuantMode.INT8)}
    assert 0 < err[QuantMode.FLOAT16] < err[QuantMode.INT8]
    assert 0 < err[QuantMode.INT16X8] < err[QuantMode.INT8]
    for a, b in zip(model.get_weights(), before, strict=True):  # weights restored
        np.testing.assert_array_equal(a, b)
    # A 10x64 kernel has fewer than 1,024 elements: dynamic range leaves the model in float.
    np.testing.assert_allclose(simulate(model, QuantMode.DYNAMIC, x, x), ref, rtol=0, atol=1e-6)


def test_int8_bound_is_safety_times_simulation_in_output_steps(mlp):
    model, x, ref = mlp
    sim = simulate(model, QuantMode.INT8, x, x)
    tol = derive(QuantMode.INT8, ref, sim, 0.01, "r2")
    ref64 = ref.astype(np.float64)
    e_sim = float(np.abs(sim.astype(np.float64) - ref64).max())
    expected = SAFETY * e_sim + FLOAT32_RTOL * float(ref64.max() - ref64.min())
    assert tol["max_abs"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert tol["steps"] == pytest.approx(expected / 0.01, rel=1e-12, abs=0)
    assert tol["task_delta"] == TASK_DELTA["r2"]
    assert "output steps" in tol["derivation"]


def test_without_a_simulation_only_the_task_is_bounded():
    ref = np.linspace(0, 1, 20).reshape(5, 4)
    tol = derive(QuantMode.INT8, ref, None, 0.1, "accuracy")
    assert tol["max_abs"] is None and tol["task_delta"] == TASK_DELTA["accuracy"]
    assert tol["derivation"].startswith("int8: no simulation (the model was not simulated); "
                                        "only the task metric is bounded")


def test_a_chain_is_simulated_as_the_formula_says_in_sequential_and_functional_form():
    """Weights per output channel on the symmetric int8 grid; every layer's output on the
    (max - min) / 255 grid its calibration range gives; the input too."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, rep = rng.normal(size=(50, 10)), rng.normal(size=(80, 10))
    hidden, out = keras.layers.Dense(64), keras.layers.Dense(2)
    sequential = keras.Sequential([keras.Input((10,)), hidden, keras.layers.ReLU(), out])
    inputs = keras.Input((10,))
    functional = keras.Model(inputs, out(keras.layers.ReLU()(hidden(inputs))))
    (w1, b1), (w2, b2) = hidden.get_weights(), out.get_weights()

    def grid(h, calibrated):
        lo, hi = min(calibrated.min(), 0.0), max(calibrated.max(), 0.0)
        scale = (hi - lo) / 255
        zero = np.round(-lo / scale)
        return (np.clip(np.round(h / scale) + zero, 0, 255) - zero) * scale

    def per_channel(w):
        scale = np.abs(w).max(axis=0) / 127
        return np.round(w / scale) * scale

    r1 = rep @ w1 + b1
    r2 = np.maximum(r1, 0)
    r3 = r2 @ w2 + b2
    h = grid(x, rep)
    h = grid(h @ per_channel(w1) + b1, r1)
    h = grid(np.maximum(h, 0), r2)
    expected = grid(h @ per_channel(w2) + b2, r3)
    step = (max(r3.max(), 0) - min(r3.min(), 0)) / 255
    for model in (sequential, functional):
        sim = simulation(model, QuantMode.INT8, x.astype(np.float32), rep.astype(np.float32))
        # float32 against float64 arithmetic: far below one output step
        np.testing.assert_allclose(sim.outputs[0], expected, rtol=0, atol=1e-3 * step)
        assert sim.describe() == "over 3 layers (a chain)"
    np.testing.assert_array_equal(simulate(sequential, QuantMode.INT8, x, rep),
                                  simulate(functional, QuantMode.INT8, x, rep))


def test_boundary_analysis_counts_samples_near_the_kink():
    pre = np.array([[0.5, 2.0], [0.01, -3.0], [-0.02, 1.0], [4.0, -4.0]])
    reference = np.zeros((4, 1))
    variant = np.array([[0.0], [1.0], [0.5], [0.1]])
    result = analyse([pre], [0.05], 0.0, variant, reference)
    assert result["near_samples"] == 2  # samples 1 and 2 sit within one step of 0
    assert result["near_error_share"] == pytest.approx(1.25 / 1.26, rel=1e-12, abs=0)
    assert result["worst_5pct_near"] == 1.0  # the worst sample (1) is a near one
    assert result["far_max_abs_error"] == pytest.approx(0.1, rel=1e-12, abs=0)  # samples 0, 3
    expected_corr = np.corrcoef([0, 1, 1, 0], [0.0, 1.0, 0.5, 0.1])[0, 1]
    assert result["near_units_error_corr"] == pytest.approx(expected_corr, rel=1e-12, abs=0)
