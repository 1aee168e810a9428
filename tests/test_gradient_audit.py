"""The gradient audit's verdicts, and that it catches a wrong custom gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from edgepipe.models.gradient_audit import GRID, KINK_MARGIN, audit_all, audit_layer
from edgepipe.models.registry import ACTIVATIONS, ActivationSpec, GradientKind


@pytest.fixture(scope="module")
def verdicts():
    return {v.activation: v for v in audit_all()}


def test_every_activation_is_audited_and_passes(verdicts):
    assert set(verdicts) == set(ACTIVATIONS)
    assert all(v.ok for v in verdicts.values()), [v.verdict for v in verdicts.values()]


@pytest.mark.parametrize("name", ["swish", "mish", "gelu_tanh"])
def test_smooth_activations_train_on_their_autodiff_gradient(verdicts, name):
    v = verdicts[name]
    assert v.verdict == "autodiff, agrees with finite differences"
    assert v.max_training_vs_autodiff == 0.0  # the same graph: identical, not merely close
    assert v.max_autodiff_vs_finite < 1e-6


def test_hard_swish_is_audited_away_from_its_kinks(verdicts):
    v = verdicts["hard_swish"]
    assert v.verdict == "autodiff, agrees with finite differences away from the kinks at -3, 3"
    assert set(v.at_kinks) == {-3.0, 3.0}


def test_piecewise_custom_gradient_agrees_with_autodiff_away_from_zero(verdicts):
    v = verdicts["piecewise"]
    assert v.gradient is GradientKind.CUSTOM
    assert v.verdict == "custom gradient agrees with autodiff away from the kink at 0"
    # At the kink the custom gradient takes the left slope, alpha.
    assert v.at_kinks[0.0]["training"] == pytest.approx(0.1, rel=1e-12, abs=0)


def test_step_has_a_dead_gradient_and_trains_through_its_surrogate(verdicts):
    v = verdicts["step"]
    assert v.verdict == "dead gradient, surrogate in use (ste)"
    assert v.max_training_vs_autodiff == 1.0  # STE passes 1 where autodiff gives 0
    assert v.at_kinks[0.0] == {"training": 1.0, "autodiff": 0.0}


def test_step_sigmoid_surrogate_and_plain_autodiff():
    step = ACTIVATIONS["step"]
    sigmoid = audit_layer(step, surrogate="sigmoid", k=4.0)
    assert sigmoid.ok and sigmoid.verdict == "dead gradient, surrogate in use (sigmoid)"
    # The surrogate k*s(kx)*(1-s(kx)) peaks next to 0, at the grid point nearest the kink.
    x = GRID[np.abs(GRID) > KINK_MARGIN]
    s = 1 / (1 + np.exp(-4.0 * x))
    expected = (4.0 * s * (1 - s)).max()
    assert sigmoid.max_training_vs_autodiff == pytest.approx(expected, rel=1e-9, abs=0)
    none = audit_layer(step, surrogate="none")
    assert not none.ok
    assert none.verdict.startswith("dead gradient and no surrogate")


class WrongGradient(keras.layers.Layer):
    """Leaky ReLU whose hand-written gradient forgets alpha: the bug the audit exists for."""

    def formula(self, x):
        return tf.nn.leaky_relu(x, alpha=0.1)

    def call(self, x):
        @tf.custom_gradient
        def f(x):
            return self.formula(x), lambda dy: dy * tf.cast(x > 0, x.dtype)

        return f(x)


def test_a_wrong_custom_gradient_is_reported_as_a_mismatch(monkeypatch):
    spec = ActivationSpec("wrong", "WrongGradient", "leaky relu", GradientKind.CUSTOM,
                          ("LEAKY_RELU",), kinks=(0.0,))
    monkeypatch.setattr(ActivationSpec, "layer", property(lambda self: WrongGradient))
    v = audit_layer(spec)
    assert not v.ok
    assert v.verdict.startswith("MISMATCH: training gradient differs from autodiff by 0.1 at x=")
