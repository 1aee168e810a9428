"""Each activation against a plain NumPy formula; config and .keras round trips; bad arguments."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from keras.ops import convert_to_numpy as to_numpy

from edgepipe.core.errors import EdgepipeError
from edgepipe.models import activations as A
from edgepipe.models.registry import ACTIVATIONS, GradientKind, get_activation

X = np.concatenate([np.linspace(-8, 8, 401), [0.0, -3.0, 3.0, 1e-7, -1e-7]]).astype(np.float32)


def np_softplus(x):
    return np.logaddexp(0.0, x)


# Written independently of the layers, in float64, from each paper's formula.
NUMPY = {
    "swish": lambda x, beta=1.0: x / (1.0 + np.exp(-beta * x)),
    "piecewise": lambda x, alpha=0.1: np.where(x > 0, x, alpha * x),
    "step": lambda x, **_: (x > 0).astype(np.float64),
    "hard_swish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "mish": lambda x: x * np.tanh(np_softplus(x)),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
}

CONFIGS = [
    pytest.param("swish", {}, id="swish"),
    pytest.param("swish", {"beta": 2.5}, id="swish-beta2.5"),
    pytest.param("piecewise", {}, id="piecewise"),
    pytest.param("piecewise", {"alpha": 0.3}, id="piecewise-alpha0.3"),
    pytest.param("step", {}, id="step-ste"),
    pytest.param("step", {"surrogate": "sigmoid", "k": 8.0}, id="step-sigmoid"),
    pytest.param("step", {"surrogate": "none"}, id="step-none"),
    pytest.param("hard_swish", {}, id="hard_swish"),
    pytest.param("mish", {}, id="mish"),
    pytest.param("gelu_tanh", {}, id="gelu_tanh"),
]


def test_registry_covers_every_layer_and_numpy_reference():
    assert set(ACTIVATIONS) == set(NUMPY)
    assert {spec.class_name for spec in ACTIVATIONS.values()} == set(A.__all__)
    assert {spec.name for spec in ACTIVATIONS.values()
            if spec.gradient is GradientKind.SURROGATE} == {"step"}


@pytest.mark.parametrize("name, config", CONFIGS)
def test_forward_matches_numpy(name, config):
    layer = get_activation(name).build(**config)
    got = to_numpy(layer(X))
    numpy_args = {k: v for k, v in config.items() if k in ("alpha", "beta")}
    want = NUMPY[name](X.astype(np.float64), **numpy_args)
    # float32 evaluation of the formula vs float64 NumPy: a few ulps.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_step_is_exactly_the_step():
    got = to_numpy(A.Step()(np.array([-1e-30, 0.0, 1e-30, 5.0], np.float32)))
    np.testing.assert_array_equal(got, [0.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("name, config", CONFIGS)
def test_get_config_round_trip(name, config):
    layer = get_activation(name).build(**config)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(to_numpy(clone(X)), to_numpy(layer(X)))


def _model_with(name, config):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, kernel_initializer="glorot_uniform")(inputs)
    return keras.Model(inputs, get_activation(name).build(**config)(x))


@pytest.mark.parametrize("name, config", CONFIGS)
def test_keras_file_round_trip(tmp_path, name, config):
    keras.utils.set_random_seed(1)
    model = _model_with(name, config)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode on: registered classes only
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    assert loaded.layers[-1].get_config() == model.layers[-1].get_config()


def test_keras_file_loads_in_a_fresh_process_importing_only_the_package(tmp_path):
    keras.utils.set_random_seed(2)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    for i, param in enumerate(CONFIGS):
        name, config = param.values
        model = _model_with(name, config)
        model.save(tmp_path / f"m{i}.keras")
        np.save(tmp_path / f"y{i}.npy", to_numpy(model(x)))
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras\n"
        "from keras.ops import convert_to_numpy as to_numpy\n"
        "import edgepipe.models.activations\n"
        "d = sys.argv[1]; x = np.load(d + '/x.npy')\n"
        f"for i in range({len(CONFIGS)}):\n"
        "    m = keras.models.load_model(f'{d}/m{i}.keras')\n"
        "    np.testing.assert_array_equal(to_numpy(m(x)), np.load(f'{d}/y{i}.npy'))\n"
        "print('loaded', i + 1)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"loaded {len(CONFIGS)}"


@pytest.mark.parametrize("cls, kwargs, message", [
    pytest.param(A.Swish, {"beta": 0}, "Expected beta > 0. Received: beta=0.0", id="beta0"),
    pytest.param(A.Swish, {"beta": "1"}, "Expected a finite float. Received: beta='1'",
                 id="beta-str"),
    pytest.param(A.PiecewiseLinear, {"alpha": 1.0}, "Expected alpha in [0, 1). Received: alpha=1.0",
                 id="alpha1"),
    pytest.param(A.PiecewiseLinear, {"alpha": float("nan")}, "Received: alpha=nan",
                 id="alpha-nan"),
    pytest.param(A.Step, {"surrogate": "magic"}, "Expected surrogate to be one of 'ste', "
                 "'sigmoid', 'none'. Received: surrogate='magic'", id="surrogate"),
    pytest.param(A.Step, {"k": -1}, "Expected k > 0. Received: k=-1.0", id="k-negative"),
])
def test_bad_arguments_say_what_was_expected(cls, kwargs, message):
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert message in str(info.value)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(EdgepipeError, match="Unknown activation 'relu7'. Valid activations: "
                                            "gelu_tanh, hard_swish, mish, piecewise, step, swish"):
        get_activation("relu7")
