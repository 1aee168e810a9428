"""Does training use the gradient the forward formula has?

For an activation layer, three gradients are compared on a grid of points that avoids its kinks:
- `training`: what training uses, a GradientTape through the layer (custom or surrogate included);
- `autodiff`: autodiff of the plain forward formula (`layer.formula`), no custom gradient;
- `finite`: central finite differences of the forward formula, in float64.
Where they differ, the verdict says why (a surrogate on a dead gradient) or flags a mismatch.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .registry import ACTIVATIONS, ActivationSpec, GradientKind

GRID = np.linspace(-6.0, 6.0, 481)
KINK_MARGIN = 1e-2  # grid points this close to a kink are left out: no derivative there
FD_STEP = 1e-5
_LAYER_KEYS = {"name", "trainable", "dtype"}  # every Keras layer's config has these
ATOL, RTOL = 1e-6, 1e-5  # float64 gradients of smooth formulas agree far tighter than this
# Finite differences carry truncation error O(h^2 f''') and rounding O(eps/h): ~1e-10 here.
FD_ATOL, FD_RTOL = 1e-6, 1e-5


@dataclass(frozen=True)
class GradientVerdict:
    activation: str
    config: dict
    gradient: GradientKind
    ok: bool
    verdict: str
    max_training_vs_autodiff: float
    max_autodiff_vs_finite: float
    points: int
    # kink -> {"training": g, "autodiff": g}: what each gives where no derivative exists
    at_kinks: dict


def _tape_gradient(fn, x):
    x = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    g = tape.gradient(y, x)
    # Differentiating through a comparison gives no gradient at all: that is a zero gradient.
    return np.zeros(x.shape) if g is None else g.numpy()


def _grid(kinks):
    keep = np.ones(GRID.shape, bool)
    for k in kinks:
        keep &= np.abs(GRID - k) > KINK_MARGIN
    return GRID[keep]


def audit_layer(spec: ActivationSpec, **config) -> GradientVerdict:
    layer = spec.build(dtype="float64", **config)
    x = _grid(spec.kinks)
    training = _tape_gradient(layer, x)
    autodiff = _tape_gradient(layer.formula, x)
    fwd = lambda v: layer.formula(tf.constant(v, tf.float64)).numpy()  # noqa: E731
    finite = (fwd(x + FD_STEP) - fwd(x - FD_STEP)) / (2 * FD_STEP)

    d_train = np.abs(training - autodiff)
    d_fd = np.abs(autodiff - finite)
    train_agrees = bool(np.all(d_train <= ATOL + RTOL * np.abs(autodiff)))
    fd_agrees = bool(np.all(d_fd <= FD_ATOL + FD_RTOL * np.abs(finite)))
    dead = bool(np.all(autodiff == 0))
    kinks = {k: {"training": float(_tape_gradient(layer, [k])[0]),
                 "autodiff": float(_tape_gradient(layer.formula, [k])[0])} for k in spec.kinks}
    where = f" away from the kink{'s' if len(spec.kinks) > 1 else ''} at " \
            f"{', '.join(f'{k:g}' for k in spec.kinks)}" if spec.kinks else ""

    surrogate = getattr(layer, "surrogate", None)
    if not fd_agrees:
        ok, verdict = False, "MISMATCH: autodiff of the forward disagrees with finite differences"
    elif dead and surrogate == "none":
        ok, verdict = False, "dead gradient and no surrogate: layers below this one cannot learn"
    elif dead and not train_agrees:
        ok = spec.gradient is GradientKind.SURROGATE
        verdict = f"dead gradient, surrogate in use ({surrogate})" if ok else \
            "MISMATCH: autodiff is zero but training uses a non-zero gradient"
    elif train_agrees:
        ok = True
        verdict = ("custom gradient agrees with autodiff" if spec.gradient is GradientKind.CUSTOM
                   else "autodiff, agrees with finite differences") + where
    else:
        i = int(np.argmax(d_train))
        ok, verdict = False, ("MISMATCH: training gradient differs from autodiff by "
                              f"{d_train[i]:.3g} at x={x[i]:g}")
    own_config = {k: v for k, v in layer.get_config().items() if k not in _LAYER_KEYS}
    return GradientVerdict(spec.name, own_config, spec.gradient,
                           ok, verdict, float(d_train.max()), float(d_fd.max()), int(x.size), kinks)


def audit_all() -> list[GradientVerdict]:
    return [audit_layer(spec) for spec in ACTIVATIONS.values()]
