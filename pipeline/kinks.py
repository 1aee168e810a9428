"""Where an activation has a threshold or a kink, found from what it computes.

A layer qualifies when it is element-wise: one input, the output of the input's shape, no
weights but scalars, and its output commutes with any permutation of its input's elements
(Softmax does not). Such a layer is probed on a fine grid over the range its inputs take on
the data (plus a margin) and every point where it is not smooth is located:

- a *jump* (a threshold: a step, a `tf.where` with constant branches), where the value changes
  by a finite height over a vanishing interval;
- a *slope* change (ReLU, leaky, piecewise-linear, hard-swish corners).

The criterion is relative to the local curvature, not a raw second difference: at a grid point
the change of slope between the intervals on either side is compared with its median over the
neighbouring points. A smooth activation (swish, gelu, tanh) changes slope by about f''·h
everywhere, so no point stands out; a kink changes it by a finite amount and a jump by
height / h, which stand out more the finer the grid. Each candidate is zoomed into until it is
located far below any quantization step; a point that looks smooth once zoomed is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boundary import JUMP, SLOPE

GRID = 4001        # points of the first, coarse probe over the input range
ZOOM = 17          # points of each zoom level around a candidate
RATIO = 16.0       # a kink's slope change stands out this many times over its neighbours'
MARGIN = 0.1       # the probe range extends the data range by this share on each side
MAX_KINKS = 64     # a staircase has a jump per stair: the first ones are enough to analyse
EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Kink:
    """One point where an activation is not smooth. `at`: the shortest decimal inside the
    interval that located it; `height`: value right of it minus value left of it (0 for a
    slope change); `slopes`: the slopes just left and right of it."""

    at: float
    kind: str  # JUMP or SLOPE
    height: float
    slopes: tuple[float, float]

    def as_dict(self) -> dict:
        return {"at": self.at, "kind": self.kind, "height": self.height,
                "slopes": list(self.slopes)}


@dataclass(frozen=True)
class KinkedLayer:
    """A layer with kinks, and its Keras inputs on the test split and the calibration data
    (None without calibration data)."""

    layer: object
    kinks: tuple[Kink, ...]
    inputs: np.ndarray
    calibration: np.ndarray | None


def _sig(value: float) -> float:
    """Six significant digits: what a jump height is worth beyond float32 noise."""
    return float(f"{float(value):.6g}")


def _shortest(lo: float, hi: float) -> float:
    """The shortest decimal in [lo, hi] (widened by two float32 spacings: the activation's own
    comparison constant is a float32), so that a threshold written 0.3 reads 0.3."""
    pad = 2 * float(np.spacing(np.float32(max(abs(lo), abs(hi)))))
    lo, hi = lo - pad, hi + pad
    if lo <= 0.0 <= hi:
        return 0.0
    mid = (lo + hi) / 2
    for digits in range(0, 17):
        value = round(mid, digits)
        if lo <= value <= hi:
            return float(value)
    return float(mid)


def _grid(lo: float, hi: float, points: int) -> np.ndarray:
    """`points` evenly spaced values as float32 (what the layer will see), distinct, in float64."""
    return np.unique(np.linspace(lo, hi, points).astype(np.float32)).astype(np.float64)


def _slope_changes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At each interior grid point: the change of slope across it, and how much of that change
    float32 rounding of the values could make."""
    slopes = np.diff(y) / np.diff(x)
    change = np.diff(slopes)
    scale = np.maximum(np.maximum(np.abs(y[:-2]), np.abs(y[1:-1])), np.abs(y[2:]))
    h = np.minimum(np.diff(x)[:-1], np.diff(x)[1:])
    noise = 8 * EPS * scale / h + 1e-30
    return change, noise


def _local_level(values: np.ndarray, half: int = 16, skip: int = 2) -> np.ndarray:
    """The median of `values` over a window of `half` points on each side, leaving out the
    `skip` nearest (a kink spreads over two points). The points whose window is whole take one
    vectorised median (a median per point was most of the bundle stage on a large model); the
    `half` points at either end, whose windows are cut short, one each."""
    n = len(values)
    level = np.empty(n)
    whole = range(half, n - half)  # values[i - half : i + half + 1] lies inside
    if len(whole):
        windows = np.lib.stride_tricks.sliding_window_view(values, 2 * half + 1)
        kept = np.r_[0:half - skip, half + skip + 1:2 * half + 1]  # offsets from i - half
        level[whole.start:whole.stop] = np.median(windows[:, kept], axis=1)
    for i in [*range(min(half, n)), *range(max(half, n - half), n)]:
        window = np.r_[values[max(0, i - half):max(0, i - skip)],
                       values[min(n, i + skip + 1):min(n, i + half + 1)]]
        level[i] = np.median(window) if window.size else 0.0
    return level


def _candidates(f, lo: float, hi: float, points: int) -> list[tuple[float, float]]:
    """Brackets [a, b] around the grid points whose slope change stands out."""
    x = _grid(lo, hi, points)
    y = f(x)
    if len(x) < 5 or not np.isfinite(y).all():
        return []
    change, noise = _slope_changes(x, y)
    size = np.abs(change)
    hits = np.flatnonzero(size > RATIO * _local_level(size) + noise)
    brackets = []
    for group in np.split(hits, np.flatnonzero(np.diff(hits) > 3) + 1) if hits.size else []:
        # change[i] sits at x[i + 1]: the bracket spans the intervals on either side
        brackets.append((float(x[group[0]]), float(x[min(group[-1] + 2, len(x) - 1)])))
    return brackets


@dataclass
class _Level:
    x: np.ndarray
    y: np.ndarray
    change: np.ndarray
    peak: float
    resolved: bool  # the peak stands well above rounding noise


def _zoom(f, lo: float, hi: float, tol: float) -> list[_Level] | None:
    """Zoom into [lo, hi] around its largest slope change until it is `tol` wide or rounding
    hides it; None when the bracket is smooth at the first zoom (no kink there)."""
    levels = []
    for _ in range(40):
        x = _grid(lo, hi, ZOOM)
        if len(x) < ZOOM // 2:
            break
        y = f(x)
        if not np.isfinite(y).all():
            break
        change, noise = _slope_changes(x, y)
        size = np.abs(change)
        p = int(np.argmax(size))
        rest = np.r_[size[:max(0, p - 1)], size[p + 2:]]
        if size[p] <= 4 * noise[p]:
            break
        if size[p] <= RATIO * (np.median(rest) if rest.size else 0.0) + noise[p]:
            if not levels:
                return None
            break
        levels.append(_Level(x, y, change, float(size[p]), bool(size[p] > 16 * noise[p])))
        lo, hi = float(x[p]), float(x[min(p + 2, len(x) - 1)])  # change[p] sits at x[p + 1]
        if hi - lo <= tol:
            break
    return levels or None


def _kink_position(level: _Level) -> float:
    """A slope change's position: the lines through the points on either side of it
    intersected (exact for piecewise-linear sides)."""
    x, y, change = level.x, level.y, level.change
    pair = np.abs(change[:-1]) + np.abs(change[1:])
    j = int(np.argmax(pair)) + 1  # the kink lies in [x[j], x[j + 1]]
    left, right = slice(max(0, j - 2), j + 1), slice(j + 1, min(len(x), j + 4))
    if j + 1 - max(0, j - 2) >= 2 and min(len(x), j + 4) - (j + 1) >= 2:
        al, bl = np.polyfit(x[left], y[left], 1)
        ar, br = np.polyfit(x[right], y[right], 1)
        if al != ar:
            at = float(np.clip((br - bl) / (al - ar), x[j], x[j + 1]))
            return at
    total = change[j - 1] + change[j]  # each side's share of the change says where it is
    t = change[j] / total if total else 0.5
    return float(x[j] + t * (x[j + 1] - x[j]))


def _side_slopes(f, at: float, delta: float) -> tuple[float, float]:
    """The one-sided derivatives at `at`: secants over three intervals of `delta` on each side,
    extrapolated linearly to `at` (a curved side, hard-swish's, bends the nearest secant)."""
    steps = np.array([1.0, 2.0, 3.0, 4.0])
    y = f(_grid_exact(np.r_[at - steps[::-1] * delta, at + steps * delta]))
    slopes = []
    for values, mids in ((y[:4], -steps[:3][::-1] - 0.5), (y[4:], steps[:3] + 0.5)):
        _, at_kink = np.polyfit(mids, np.diff(values) / delta, 1)  # secant midpoints, in deltas
        slopes.append(float(f"{at_kink:.4g}"))  # four digits: beyond them is float32 noise
    return slopes[0], slopes[1]


def _grid_exact(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(np.float64)


def find_kinks(f, lo: float, hi: float, points: int = GRID) -> list[Kink]:
    """The jumps and slope changes of the element-wise function `f` (float64 array in, same
    shape out, computed in float32) on [lo, hi], located to about 1e-7 of the range."""
    span = hi - lo
    if not (np.isfinite(span) and span > 0):
        return []
    found = []
    for a, b in _candidates(f, lo, hi, points)[:MAX_KINKS]:
        # far below any quantization step of the range, and wide enough for float32 to resolve
        tol = max(1e-7 * span, 32 * float(np.spacing(np.float32(max(abs(a), abs(b))))))
        levels = _zoom(f, a, b, tol)
        if levels is None:
            continue
        # A jump's slope change grows as the zoom narrows (height / h); a kink's does not.
        jump = len(levels) > 1 and levels[1].peak > 3 * levels[0].peak
        last = levels[-1]
        if jump:
            d = np.abs(np.diff(last.y))
            m = int(np.argmax(d))
            at = _shortest(float(last.x[m]), float(last.x[m + 1]))
            height = _sig(last.y[m + 1] - last.y[m])
        else:
            level = next((v for v in reversed(levels) if v.resolved), levels[0])
            estimate = _kink_position(level)
            at = _shortest(estimate - 1e-7 * span, estimate + 1e-7 * span)
            height = 0.0
        found.append((at, JUMP if jump else SLOPE, height))
    kinks = []
    positions = sorted(at for at, _, _ in found)
    for at, kind, height in sorted(found):
        if kinks and at - kinks[-1].at <= 1e-6 * span:
            continue  # two brackets zoomed onto the same point
        others = [abs(at - p) for p in positions if p != at]
        delta = min([1e-3 * span] + [d / 4 for d in others])
        slopes = _side_slopes(f, at, delta)
        if kind == SLOPE and abs(slopes[1] - slopes[0]) <= 1e-3 * max(1.0, *map(abs, slopes)):
            continue  # too small a change of slope to matter once zoomed out
        kinks.append(Kink(at, kind, height, slopes))
    return kinks


# ---------------------------------------------------------------------------- Keras layers

def _unit_shape(layer) -> tuple | None:
    """The shape of one sample's input when `layer` looks element-wise from its graph and
    weights (one float input, output of the same shape, no weights but scalars), else None."""
    import keras

    if isinstance(layer, keras.layers.InputLayer):
        return None
    try:
        inp, out = layer.input, layer.output
    except (AttributeError, ValueError):  # not called in the graph, or several inputs
        return None
    if not (hasattr(inp, "shape") and hasattr(out, "shape")) or isinstance(out, (list, tuple)):
        return None
    if tuple(inp.shape) != tuple(out.shape) or len(inp.shape) < 1:
        return None
    if not str(getattr(inp, "dtype", "float32")).startswith(("float", "bfloat")):
        return None
    if any(int(np.prod(w.shape)) > 1 for w in layer.weights):
        return None
    return tuple(1 if d is None else int(d) for d in inp.shape[1:])


def _probe(layer, unit: tuple):
    """`f(values)`: the layer applied to 1-D `values` laid out as whole samples (float64 out),
    or None when the layer is not element-wise: its output must follow its input's elements
    when those are rolled across positions and samples."""
    size = int(np.prod(unit)) if unit else 1
    dtype = getattr(layer, "compute_dtype", "float32") or "float32"

    def f(values: np.ndarray) -> np.ndarray:
        n = len(values)
        batch = -(-n // size)
        flat = np.zeros(batch * size)
        flat[:n] = values
        out = layer(np.asarray(flat.reshape((batch, *unit)), dtype=dtype))
        return np.asarray(out, np.float64).reshape(-1)[:n]

    values = np.linspace(-3.0, 3.0, max(64, 2 * size) + 1)
    try:
        first = f(values)
        shift = 1 + size // 2
        rolled = f(np.roll(values, shift))
    except Exception:  # noqa: BLE001 - a user's layer may refuse a probe any way it likes
        return None
    if first.shape != values.shape or not np.isfinite(first).all():
        return None
    scale = float(np.max(np.abs(first))) + 1.0
    if not np.allclose(rolled, np.roll(first, shift), rtol=1e-5, atol=1e-6 * scale):
        return None
    return f


def _call_all(model, layers: list, x) -> list[np.ndarray]:
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # as x is given
    probe = keras.Model(inputs, [layer.input for layer in layers])
    values = probe(x, training=False) if len(layers) else []
    values = values if isinstance(values, (list, tuple)) else [values]
    return [np.asarray(v, np.float32) for v in values]


def kinked_layers(model, x_test, representative=None) -> list[KinkedLayer]:
    """The model's element-wise layers with at least one jump or slope change within the range
    their inputs take on `x_test` and `representative` (plus a margin), in graph order.
    Layers nested inside a sub-model are not looked into."""
    candidates = []
    for layer in model.layers:
        unit = _unit_shape(layer)
        f = _probe(layer, unit) if unit is not None else None
        if f is not None:
            candidates.append((layer, f))
    if not candidates:
        return []
    layers = [layer for layer, _ in candidates]
    inputs = _call_all(model, layers, x_test)
    calib = _call_all(model, layers, representative) if representative is not None else None
    found = []
    for i, (layer, f) in enumerate(candidates):
        seen = [inputs[i]] + ([calib[i]] if calib is not None else [])
        lo = min(float(np.min(v)) for v in seen if v.size)
        hi = max(float(np.max(v)) for v in seen if v.size)
        margin = MARGIN * (hi - lo) if hi > lo else MARGIN * max(1.0, abs(lo))
        kinks = find_kinks(f, lo - margin, hi + margin)
        if kinks:
            found.append(KinkedLayer(layer, tuple(kinks), inputs[i],
                                     calib[i] if calib is not None else None))
    return found
