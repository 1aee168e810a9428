"""Tolerances derived from each format's precision, applied to the model at hand.

For every mode the Keras model is run again with the format's rounding simulated on it
("fake quantization"): weights rounded to float16 or to the int8 grid (per output channel,
symmetric, as the converter does), and in the integer modes every layer call's output rounded to
the grid that calibration gives it ((max - min) / 255 over the representative samples for int8;
max |x| / 32767 for int16), or to the grid TFLite fixes for SOFTMAX, LOGISTIC and TANH; a
kernel's own activation other than ReLU/ReLU6 is not fused by the converter, so its input is
rounded too. Where the float mode quantizes activations on the fly (dynamic range), the inputs
of quantized layers are rounded per sample on the asymmetric grid (max - min) / 255, as the
hybrid kernels do.
The simulation walks the model's graph as Keras' own `Function._run_through_graph` does: nodes in
topological order, several inputs and outputs, merges (Add, Multiply, Concatenate), shared layers
(rounded weights at every call, a calibration range per call), nested models walked into.
The simulated deviation from the float32 reference, E_sim, is what the format costs this model.
The bound given to the real variant is

    max_abs = SAFETY * E_sim + FLOAT32_RTOL * R       (R: range of the reference outputs)

SAFETY = 2 covers what the simulation leaves out: the kernels' fixed-point multipliers, the
lookup tables of LOGISTIC/TANH/GELU, and tensors inside an activation (Swish's sigmoid) that
are quantized on their own. For the integer modes the bound is also given in output steps
(the output tensor's scale), the task metric may drop by at most TASK_DELTA, and a classifier's
top-1 class must agree with Keras' on at least MIN_TOP1_AGREEMENT of the samples.
A model the simulation cannot walk (a subclassed model, a layer whose weights have no known
rounding rule) gets the task bounds only, and the derivation names why.
float32 gets only the float32 term. Nothing here looks at the variant's real outputs.

The walk also gives each layer's output (keyed by its path: nested model calls joined by "/";
a layer called several times: its last call), in Keras (`keras_layer_outputs`) and simulated
(`simulation(..., layer_rows=...)`): the per-layer references and bounds of the bundle
(pipeline/layer_references.py). `simulation(..., keep=...)` simulates a variant that keeps some
layers at a higher precision (a repaired variant): "float32", their weights and outputs are not
rounded; "int16", their outputs are rounded to the int16 grid (weights stay int8, as TFLite's
16x8 kernels take them). A kept layer's output that is a model output is still rounded to the
mode's grid: the variant's output tensor has the mode's type.

`simulation(..., shift=Shift(...))` adds a given amount to chosen layers' outputs (after their
rounding) and walks the rest of the model on: how far a difference born in one layer reaches the
outputs (pipeline/kernel_bounds.py).
"""

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from ..converters.modes import QuantMode

FLOAT32_RTOL = 1e-5
SAFETY = 2.0
# Acceptance criteria rather than derivations: how much task quality a deployment may lose.
TASK_DELTA = {"accuracy": 0.01, "r2": 0.02}
MIN_TOP1_AGREEMENT = 0.97  # classifiers, integer modes: least share with Keras' top-1 class
DYNAMIC_MIN_ELEMENTS = 1024  # the converter leaves smaller weight tensors in float (FACTS.md)
# The walk in float must give the model's own outputs: a layer that reads something the walk does
# not pass (a mask, a call context) shows here instead of as a wrong bound.
WALK_RTOL = 1e-4
WALK_SAMPLES = 16
_CHUNK = 1 << 16  # elements of a tensor rounded at a time (`_grid`): its steps stay in cache


class NotSimulated(Exception):
    """The model cannot be simulated; the message says which layer and why."""


@dataclass(frozen=True)
class Simulation:
    """The simulated outputs (one array per model output), or None with the reason; and the shape
    of what was walked, for the derivation."""
    outputs: list | None
    reason: str = ""
    layers: int = 0   # layer calls simulated (those inside nested models included)
    merges: int = 0   # calls that take several tensors (Add, Multiply, Concatenate, ...)
    shared: int = 0   # layers called more than once
    inputs: int = 1
    n_outputs: int = 1
    # {layer path: simulated output on the rows asked for}, in call order (`layer_rows`)
    layer_outputs: dict | None = None
    captured: dict | None = None  # {call key: outputs} of `Shift.capture`'s layers

    def describe(self) -> str:
        parts = [f"{self.merges} merge{'s' * (self.merges != 1)}"] if self.merges else []
        if self.shared:
            parts.append(f"{self.shared} shared layer{'s' * (self.shared != 1)}")
        if self.inputs > 1:
            parts.append(f"{self.inputs} inputs")
        if self.n_outputs > 1:
            parts.append(f"{self.n_outputs} outputs")
        shape = f"graph with {', '.join(parts)}" if parts else "a chain"
        return f"over {self.layers} layer{'s' * (self.layers != 1)} ({shape})"


def _int8_weights(w: np.ndarray, mode: QuantMode) -> bool:
    """Kernels go to int8 (biases stay int32/float); dynamic range skips small tensors."""
    return w.ndim >= 2 and (mode is not QuantMode.DYNAMIC or w.size >= DYNAMIC_MIN_ELEMENTS)


def _quantize_weights(weights: list[np.ndarray], mode: QuantMode, axis: int = -1
                      ) -> list[np.ndarray]:
    """`axis`: the kernels' output-channel axis (the converter's per-channel dimension)."""
    out = []
    for w in weights:
        if mode is QuantMode.FLOAT16:
            out.append(w.astype(np.float16).astype(np.float32))
        elif _int8_weights(w, mode):
            # per output channel, symmetric int8
            axes = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
            scale = np.abs(w).max(axis=axes, keepdims=True) / 127.0
            scale = np.where(scale > 0, scale, 1.0)
            out.append((np.round(w / scale) * scale).astype(np.float32))
        else:
            out.append(w)  # biases stay at (int32 or float) precision
    return out


def _kernel_axis(layer, weights: list[np.ndarray]) -> int:
    """The output-channel axis of the layer's kernels (its weights of 2 or more dimensions).
    Weights of at most one dimension (biases, normalisation statistics that the converter folds
    into the kernels per channel, scalar parameters) need no axis. Other kernels' layouts are not
    known here: the model is not simulated rather than rounded along a guessed axis."""
    import keras

    kernels = [w for w in weights if w.ndim >= 2]
    if not kernels:
        return -1
    layers = keras.layers
    # Keras keeps (..., out, in) for transposed convolutions, (..., in, out) for the others; a
    # depthwise kernel's last axis is its depth multiplier, so it is rounded per tensor with
    # multiplier 1 (coarser than the converter's per-channel grid: a larger, safe bound).
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose,
                          layers.Conv3DTranspose)):
        return -2
    if isinstance(layer, (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Conv3D,
                          layers.DepthwiseConv1D, layers.DepthwiseConv2D,
                          layers.SeparableConv1D, layers.SeparableConv2D)):
        return -1
    shapes = ", ".join(str(tuple(w.shape)) for w in kernels)
    raise NotSimulated(f"layer {layer.name!r} ({type(layer).__name__}) has weights of shape "
                       f"{shapes} with no known rounding rule (Dense and convolution kernels "
                       "are known)")


def _fused_activations() -> tuple:
    """Activations the converter fuses into the kernel before its output is quantized."""
    import keras

    return keras.activations.linear, keras.activations.relu, keras.activations.relu6


def _fixed_grid(op) -> float | None:
    """The lowest value of the output grid that TFLite fixes, whatever the calibration, for
    SOFTMAX and LOGISTIC (0) and TANH (-1); None for other layers."""
    import keras

    activation = getattr(op, "activation", None)
    if isinstance(op, keras.layers.Softmax) or activation in (keras.activations.softmax,
                                                              keras.activations.sigmoid):
        return 0.0
    return -1.0 if activation is keras.activations.tanh else None


def _on_fixed_grid(h: np.ndarray, lowest: float, mode: QuantMode) -> np.ndarray:
    """int8: scale 1/256 from 0 (zero point -128) or 1/128 from -1; int16: 1/32768. The top
    of the grid is one step below 1: a saturated 1.0 comes out one step lower."""
    if not _is_float(h):
        return h
    levels = 32768 if mode is QuantMode.INT16X8 else 256 if lowest == 0.0 else 128
    low = -levels if mode is QuantMode.INT16X8 or lowest else 0
    return (np.clip(np.round(h * levels), low, levels - 1) / levels).astype(h.dtype)


def _grid(h: np.ndarray, lo: float, hi: float, mode: QuantMode, narrow: bool = False
          ) -> np.ndarray:
    """`h` on the mode's grid for the range [lo, hi]. int8: (clip(round(h / scale) + zero,
    0, 255) - zero) * scale, in float64 (`zero`, a numpy float64, makes the sum float64);
    `narrow`: that float64 product rounded to float32, for a value that is not a model output
    (every layer casts its float inputs to float32: it sees the same numbers).

    On a large model this was most of an integer mode's simulation, its time going to
    temporaries the size of `h`: each chunk of _CHUNK elements goes through the steps in the
    cache. The integer steps run in h's dtype: round(h / scale) is an integer there, exact
    plus or minus `zero` (at most 255) wherever the sum is within the grid, and rounding
    never moves a sum across 0 or 255, so the clipped integers are those float64 gives; the
    product is taken in float64 as before. The values are the same to the bit."""
    if mode is QuantMode.INT16X8:
        scale = max(abs(lo), abs(hi)) / 32767.0 or 1.0
        q = h / scale
        np.round(q, out=q)
        np.clip(q, -32767, 32767, out=q)
        q *= scale
        return q
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # the int8 range always holds zero exactly
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    flat = np.ascontiguousarray(h).reshape(-1)
    wide = np.result_type(h.dtype, zero)
    out = np.empty(flat.shape, np.float32 if narrow else wide)
    step = (flat[:0] / scale).dtype  # the dtype h / scale has
    q_buffer = np.empty(min(_CHUNK, flat.size), step)
    p_buffer = np.empty(min(_CHUNK, flat.size), wide) if narrow else None
    z = step.type(zero)
    for start in range(0, flat.size, _CHUNK):
        n = min(_CHUNK, flat.size - start)
        q = q_buffer[:n]
        np.divide(flat[start:start + n], scale, out=q)
        np.round(q, out=q)
        q += z
        np.clip(q, 0, 255, out=q)
        q -= z
        product = p_buffer[:n] if narrow else out[start:start + n]
        product[...] = q
        product *= scale
        if narrow:
            out[start:start + n] = product
    return out.reshape(h.shape)


def _dynamic_inputs(h: np.ndarray) -> np.ndarray:
    """Per sample, asymmetric, as the hybrid kernels quantize their float input (TFLite's
    BatchQuantizeFloats; the converter sets FULLY_CONNECTED's asymmetric_quantize_inputs): on
    the reference kernels this reproduces a dynamic variant's outputs to float32 rounding."""
    flat = h.reshape(len(h), -1)
    lo = np.minimum(flat.min(axis=1, keepdims=True), 0.0)
    hi = np.maximum(flat.max(axis=1, keepdims=True), 0.0)
    scale = (hi - lo) / 255.0
    scale = np.where(scale > 0, scale, 1.0)
    zero = np.clip(np.round(-128.0 - lo / scale), -128, 127)
    return ((np.clip(np.round(flat / scale) + zero, -128, 127) - zero) * scale).reshape(h.shape)


def _is_float(v) -> bool:
    return isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)


KEEP_PRECISIONS = ("float32", "int16")


@dataclass(frozen=True)
class Shift:
    """Amounts added to layers' outputs: {layer path: {"pre": a, "out": b}}. "pre" is the
    output of a layer's kernel before an activation the converter keeps apart (`split` in
    `_Walk._layer`); for a layer with no such split it is added to the output. `signs`: "same"
    adds +amount to every value; "random" adds +-amount, a fixed pattern per layer.
    `capture`: layer paths whose outputs the walk keeps (`Simulation.captured`, by call);
    `frozen`: such a capture, whose outputs the walk gives those calls instead of computing
    them (a threshold layer that must not flip)."""
    amounts: dict
    signs: str = "same"
    capture: frozenset = frozenset()
    frozen: dict | None = None

    def add(self, value, path: str, point: str):
        amount = self.amounts.get(path, {}).get(point)
        if not amount or not _is_float(value):
            return value
        if self.signs == "same":
            return (value + amount).astype(value.dtype)
        seed = zlib.crc32(f"{path}/{point}".encode())
        signs = np.random.default_rng(seed).choice((-1.0, 1.0), value.shape)
        return (value + amount * signs).astype(value.dtype)


class _Walk:
    """One pass over a model's graph, calling each layer on numpy values.

    `round_` False: a pass in float that records each tensor's (min, max) (calibration, or the
    check that the walk reproduces the model). True: the mode's rounding is applied, with the
    integer grids taken from `ranges`. Tensors are keyed by the path of the calls that made
    them (a nested model's inner tensors once per call of it), so each call of a shared layer has
    its own range. `keep`: {layer path: "float32" | "int16"}, layers kept at that precision.
    `rows`: record each layer's (single, float) output at these rows of the batch. `shift`:
    amounts added to layers' outputs (`Shift`).
    """

    def __init__(self, mode: QuantMode, ranges: dict | None, round_: bool,
                 keep: dict | None = None, rows=None, shift: Shift | None = None):
        self.mode, self.ranges, self.round, self.shift = mode, ranges, round_, shift
        self.record = None if round_ else {}
        self.layers = self.merges = 0
        self.calls: dict[int, int] = {}
        self.keep, self.rows = keep or {}, rows
        self.paths: dict[str, str] = {}  # every layer path called, in call order -> class name
        self.outputs: dict[str, np.ndarray] = {}  # layer path -> its output at `rows`
        self.producer: dict[int, str] = {}  # id of an output array -> the layer path it came from
        self.kept: dict[int, tuple] = {}  # id of a kept layer's output -> its range key
        self.captured: dict[tuple, list] = {}  # call key -> outputs (`Shift.capture`)

    def _activation(self, value, key, mode: QuantMode | None = None, unrounded: bool = False,
                    output: bool = True):
        """`output` False: the value is no model output (see `_grid`'s `narrow`)."""
        if not _is_float(value):
            return value  # integer tensors (token ids, indices) are never rounded
        if self.record is not None:
            self.record[key] = (float(value.min()), float(value.max()))
        elif self.round and self.mode.integer_only and not unrounded:
            value = _grid(value, *self.ranges[key], mode or self.mode, narrow=not output)
        return value

    def model(self, model, inputs: list, key: tuple, path: tuple = (),
              output: bool = True) -> list:
        """The flat outputs of a Sequential or functional `model` on its flat `inputs`.
        `output`: its outputs may be the walked model's (a nested model's may not)."""
        import keras

        if isinstance(model, keras.Sequential):
            values = inputs
            last = len(model.layers) - 1
            for i, layer in enumerate(model.layers):
                values = self.call(layer, (values[0],), {}, key + (i,), 1, path,
                                   output and i == last)
            return values
        if not isinstance(model, keras.Function):
            raise NotSimulated(f"{model.name!r} ({type(model).__name__}) is a subclassed model: "
                               "its call() is Python code, with no graph of layers to walk")
        values = {id(t): v for t, v in zip(model.inputs, inputs, strict=True)}
        nodes = [n for depth in sorted(model._nodes_by_depth, reverse=True)
                 for n in model._nodes_by_depth[depth] if n.operation and not n.is_input]
        users: dict[int, int] = {}  # consumers left per tensor: free a value after its last use
        for node in nodes:
            for t in node.input_tensors:
                users[id(t)] = users.get(id(t), 0) + 1
        keep = {id(t) for t in model.outputs}
        for node in nodes:
            if any(id(t) not in values for t in node.input_tensors):
                continue  # not computable from the inputs (Keras skips it too)
            args, kwargs = node.arguments.fill_in(values)
            outputs = self.call(node.operation, args, kwargs, key + (id(node),),
                                len(node.input_tensors), path,
                                output and any(id(t) in keep for t in node.outputs))
            for t, v in zip(node.outputs, outputs, strict=True):
                values[id(t)] = v
            for t in node.input_tensors:
                users[id(t)] -= 1
                if not users[id(t)] and id(t) not in keep:
                    values.pop(id(t), None)
        return [values[id(t)] for t in model.outputs]

    def call(self, op, args: tuple, kwargs: dict, key: tuple, n_inputs: int,
             path: tuple = (), output: bool = True) -> list:
        """The flat outputs of one call of `op` (a layer, an op or a nested model). `output`
        False: none of them is an output of the walked model."""
        import keras

        if isinstance(op, (keras.Sequential, keras.Function)):
            inner = args[0] if args else kwargs.get("inputs")
            return self.model(op, keras.tree.flatten(inner), key, path + (op.name,), output)
        name = "/".join(path + (op.name,))
        precision = self.keep.get(name)
        unrounded = precision == "float32"
        act_mode = (QuantMode.INT16X8 if precision == "int16" and self.mode.integer_only
                    else self.mode)
        frozen = self.shift.frozen if self.shift is not None else None
        if frozen and key in frozen:
            outputs = frozen[key]
        else:
            outputs = self._layer(op, args, kwargs, key, n_inputs, unrounded, act_mode, output,
                                  name)
        if self.shift is not None and name in self.shift.capture:
            self.captured[key] = outputs
        self.paths.pop(name, None)  # a layer called again: its last call counts
        self.paths[name] = type(op).__name__  # display only
        for j, v in enumerate(outputs):
            self.producer[id(v)] = name
            if precision and self.round and _is_float(v):
                self.kept[id(v)] = key + (j,)
        if self.rows is not None:
            self.outputs.pop(name, None)
            if len(outputs) == 1 and _is_float(outputs[0]):
                self.outputs[name] = np.array(outputs[0][self.rows], np.float32)
        return outputs

    def _layer(self, op, args: tuple, kwargs: dict, key: tuple, n_inputs: int,
               unrounded: bool, act_mode: QuantMode, output: bool = True, name: str = ""
               ) -> list:
        import keras

        self.layers += 1
        self.merges += n_inputs > 1
        self.calls[id(op)] = self.calls.get(id(op), 0) + 1
        weights = op.get_weights() if isinstance(op, keras.layers.Layer) else []
        axis = _kernel_axis(op, weights) if weights else -1
        cast = lambda v: v.astype(np.float32, copy=False) if _is_float(v) else v  # noqa: E731
        activation = getattr(op, "activation", None)
        split = (weights and self.mode.integer_only and callable(activation)
                 and activation not in _fused_activations())
        if weights and self.round and not unrounded:
            if self.mode is QuantMode.DYNAMIC and any(_int8_weights(w, self.mode)
                                                      for w in weights):
                args, kwargs = keras.tree.map_structure(
                    lambda v: _dynamic_inputs(v) if _is_float(v) else v, (args, kwargs))
            args, kwargs = keras.tree.map_structure(cast, (args, kwargs))
            op.set_weights(_quantize_weights(weights, self.mode, axis))
            try:
                outputs = self._run(op, args, kwargs, split)
            finally:
                op.set_weights(weights)
        else:
            outputs = self._run(op, *keras.tree.map_structure(cast, (args, kwargs)), split)
        if split:
            # The converter keeps a kernel's activation fused only for ReLU/ReLU6: any other
            # (tanh, sigmoid, softmax, swish) is an op of its own whose input is quantized too.
            pre = self._activation(outputs[0], key + ("pre",), act_mode, unrounded, False)
            if self.shift is not None:
                pre = self.shift.add(pre, name, "pre")
            outputs = [np.asarray(activation(cast(pre)))]
        fixed = (_fixed_grid(op) if self.round and self.mode.integer_only and not unrounded
                 else None)
        if fixed is not None:
            outputs = [_on_fixed_grid(v, fixed, act_mode) for v in outputs]
        else:
            outputs = [self._activation(v, key + (j,), act_mode, unrounded, output)
                       for j, v in enumerate(outputs)]
        if self.shift is not None:
            outputs = [self.shift.add(v, name, "out") for v in outputs]
            if not split:  # no kernel output apart from the layer's
                outputs = [self.shift.add(v, name, "pre") for v in outputs]
        return outputs

    @staticmethod
    def _run(op, args, kwargs, split: bool = False) -> list:
        """`split`: without the layer's own activation (applied by the caller)."""
        import keras

        activation = op.activation if split else None
        try:
            if split:
                op.activation = keras.activations.linear
            out = op(*args, **kwargs)
        except Exception as e:  # named and reported in the derivation, not hidden
            raise NotSimulated(f"layer {op.name!r} ({type(op).__name__}) cannot be called on "
                               f"numpy values: {type(e).__name__}: "
                               f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                               ) from e
        finally:
            if split:
                op.activation = activation
        return [np.asarray(v) for v in keras.tree.flatten(out)]


def _flat_inputs(model, x) -> list:
    """The model's inputs as a flat list in `model.inputs` order (an array, a list, or a dict
    keyed by input name)."""
    if isinstance(x, dict):
        names = [t._keras_history.operation.name for t in model.inputs]
        return [np.asarray(x[n]) for n in names]
    if isinstance(x, (list, tuple)):
        return [np.asarray(v) for v in x]
    return [np.asarray(x)]


def _check_walk(model, x: list) -> None:
    """The walk without rounding must give model(x): else the simulation would bound something
    other than the model."""
    part = [v[:WALK_SAMPLES] for v in x]
    _compare_walk(model, part, _Walk(QuantMode.FLOAT32, None, False).model(model, part, ()))


def _compare_walk(model, part: list, walked: list) -> None:
    """`walked`, the walk's outputs on `part`, against model(part) (see `_check_walk`)."""
    import keras

    given = [np.asarray(v, np.float64) for v in keras.tree.flatten(
        model(part if len(part) > 1 else part[0], training=False))]
    for i, (w, g) in enumerate(zip(walked, given, strict=True)):
        span = float(np.ptp(g)) or float(np.abs(g).max()) or 1.0
        diff = float(np.abs(np.asarray(w, np.float64) - g).max())
        if not diff <= WALK_RTOL * span:
            raise NotSimulated(f"walking its layers one by one gives output {i} {diff:.3g} away "
                               f"from the model's own (range {span:.3g}): a layer depends on "
                               "more than its inputs (a mask, a training flag)")


@dataclass(frozen=True)
class LayerOutputs:
    """Each layer's Keras output, from the walk in float: `paths` every layer path in call
    order (-> its class name, for display), `outputs` {path: array} for those with one float
    output, `output_layers` the layer path of each model output."""
    paths: dict
    outputs: dict
    output_layers: list


def keras_layer_outputs(model, x) -> LayerOutputs:
    """The outputs of every layer of `model` on `x` (raises NotSimulated when the model cannot
    be walked, or the walk does not give the model's own outputs). On at most WALK_SAMPLES
    samples the walk that gives them is the one `_check_walk` would make (each layer casts its
    float inputs to float32 either way): it is checked instead of walking twice."""
    xs = _flat_inputs(model, x)
    few = all(len(v) <= WALK_SAMPLES for v in xs)
    if not few:
        _check_walk(model, xs)
    walk = _Walk(QuantMode.FLOAT32, None, False, rows=slice(None))
    outputs = walk.model(model, [v.astype(np.float32) if _is_float(v) else v for v in xs], ())
    if few:
        _compare_walk(model, xs, outputs)
    return LayerOutputs(dict(walk.paths), dict(walk.outputs),
                        [walk.producer.get(id(v)) for v in outputs])


def _check_keep(keep: dict, walked: dict) -> None:
    for path, precision in keep.items():
        if precision not in KEEP_PRECISIONS:
            raise ValueError(f"keep[{path!r}] = {precision!r}: expected one of "
                             f"{', '.join(KEEP_PRECISIONS)}")
        if path not in walked:
            raise ValueError(f"keep names layer {path!r}, which the model does not call "
                             f"(its layers: {', '.join(walked)})")


class ModelWalks:
    """One model, its test inputs `x` and calibration data, walked for every mode of a bundle
    (`simulation`) and for the Keras side of its per-layer references (`layer_outputs`). What
    does not depend on the mode is walked once, not once per mode: the check that the walk
    gives the model's own outputs on `x`, the calibration ranges (the same for every integer
    mode) and each set of layer references. The model's weights must not change while it is
    in use (the walks set rounded weights and restore them)."""

    def __init__(self, model, x, representative=None):
        self.model, self.x, self.representative = model, x, representative
        self._checked: str | None = None  # "" once checked; else why the walk is refused
        self._ranges: dict | None = None
        self._layers: dict = {}  # rows -> LayerOutputs, or the NotSimulated message

    @functools.cached_property
    def xs(self) -> list:
        return _flat_inputs(self.model, self.x)

    def check(self) -> None:
        """`_check_walk` on `x`, once; raises NotSimulated (again) when it failed."""
        if self._checked is None:
            try:
                _check_walk(self.model, self.xs)
                self._checked = ""
            except NotSimulated as e:
                self._checked = str(e)
        if self._checked:
            raise NotSimulated(self._checked)

    def ranges(self, mode: QuantMode) -> dict:
        """Each tensor's (min, max) on the calibration data. The float walk that records them
        depends on the mode only through `integer_only` (whether a kernel's own activation is
        split off), the same for every mode that asks for ranges."""
        if self.representative is None:
            raise NotSimulated("no representative data to calibrate the integer grids with")
        if self._ranges is None:
            rep = _flat_inputs(self.model, self.representative)
            calibration = _Walk(mode, None, False)
            for i, v in enumerate(rep):
                calibration._activation(v, ("input", i))
            calibration.model(self.model, rep, ())
            self._ranges = calibration.record
        return self._ranges

    def layer_outputs(self, rows) -> LayerOutputs:
        """`keras_layer_outputs` on the samples `rows` of `x`, once per set of rows."""
        key = tuple(int(r) for r in rows)
        if key not in self._layers:
            index = np.asarray(key, np.int64)
            try:
                self._layers[key] = keras_layer_outputs(self.model,
                                                        [v[index] for v in self.xs])
            except NotSimulated as e:
                self._layers[key] = str(e)
        found = self._layers[key]
        if isinstance(found, str):
            raise NotSimulated(found)
        return found

    def simulation(self, mode: QuantMode, keep: dict | None = None,
                   layer_rows=None, shift: Shift | None = None) -> Simulation | None:
        """`simulation(model, mode, x, representative, keep, layer_rows, shift)`."""
        if mode is QuantMode.FLOAT32:
            return None
        return _simulate(self, mode, dict(keep or {}), layer_rows, shift)


def simulation(model, mode: QuantMode, x, representative, keep: dict | None = None,
               layer_rows=None, shift: Shift | None = None) -> Simulation | None:
    """The model's outputs on `x` with the mode's rounding simulated; None for float32. When the
    model cannot be walked, a Simulation without outputs that says why.

    `keep`: {layer path: "float32" | "int16"}, layers the variant keeps at that precision (see
    the module docstring). `layer_rows`: indices of samples of `x` at which each layer's
    simulated output is returned too (`Simulation.layer_outputs`). `shift`: amounts added to
    layers' outputs (`Shift`). Several modes of one model:
    `ModelWalks(model, x, representative).simulation(mode, ...)` walks less."""
    if mode is QuantMode.FLOAT32:
        return None
    return ModelWalks(model, x, representative).simulation(mode, keep, layer_rows, shift)


def _simulate(walks: ModelWalks, mode: QuantMode, keep: dict, layer_rows,
              shift: Shift | None = None) -> Simulation:
    model, xs = walks.model, walks.xs
    try:
        walks.check()
        ranges = walks.ranges(mode) if mode.integer_only else None
        rows = None if layer_rows is None else np.asarray(layer_rows, np.int64)
        walk = _Walk(mode, ranges, True, keep, rows, shift)
        inputs = [walk._activation(v.astype(np.float32) if _is_float(v) else v, ("input", i))
                  for i, v in enumerate(xs)]
        outputs = walk.model(model, inputs, ())
        _check_keep(keep, walk.paths)
        if mode.integer_only:  # the variant's output tensors have the mode's type
            for i, v in enumerate(outputs):
                if id(v) in walk.kept:
                    key, name = walk.kept[id(v)], walk.producer[id(v)]
                    outputs[i] = _grid(v, *ranges[key], mode)
                    if rows is not None and name in walk.outputs:
                        walk.outputs[name] = np.array(outputs[i][rows], np.float32)
    except NotSimulated as e:
        return Simulation(None, reason=str(e), inputs=len(xs))
    return Simulation(outputs, layers=walk.layers, merges=walk.merges,
                      shared=sum(n > 1 for n in walk.calls.values()), inputs=len(xs),
                      n_outputs=len(outputs),
                      layer_outputs=None if rows is None else dict(walk.outputs),
                      captured=walk.captured)


def simulate(model, mode: QuantMode, x, representative):
    """The simulated outputs (an array; a list for several outputs), or None when not
    simulated (float32, or a model the simulation cannot walk: see `simulation`)."""
    sim = simulation(model, mode, x, representative)
    if sim is None or sim.outputs is None:
        return None
    return sim.outputs[0] if len(sim.outputs) == 1 else sim.outputs


def _flat(values) -> np.ndarray:
    """All outputs' values in one vector (a model with several outputs is bounded as a whole)."""
    values = values if isinstance(values, (list, tuple)) else [values]
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in values])


def derive(mode: QuantMode, reference, simulated, output_step: float | None,
           task_metric: str) -> dict:
    """The bounds for one variant (see the module docstring). `simulated`: a Simulation, the
    simulated outputs, or None."""
    reference = _flat(reference)
    span = float(reference.max() - reference.min()) or float(np.abs(reference).max()) or 1.0
    floor = FLOAT32_RTOL * span
    tolerance = {"max_abs": floor, "max_rel": None, "output_step": None, "steps": None,
                 "task_delta": None, "min_top1_agreement": None}
    if mode is QuantMode.FLOAT32:
        tolerance["derivation"] = f"float32: {FLOAT32_RTOL:g} x output range {span:.4g}"
        return tolerance
    sim = simulated if isinstance(simulated, Simulation) or simulated is None else Simulation(
        [simulated])
    top1 = mode.integer_only and task_metric == "accuracy"
    if top1:
        tolerance["min_top1_agreement"] = MIN_TOP1_AGREEMENT
    top1_text = (f"; top-1 agreement with Keras at least {MIN_TOP1_AGREEMENT:g}"
                 if top1 else "")
    if sim is None or sim.outputs is None:
        why = sim.reason if sim is not None else "the model was not simulated"
        tolerance["max_abs"] = None
        tolerance["task_delta"] = TASK_DELTA[task_metric]
        tolerance["derivation"] = (f"{mode.value}: no simulation ({why}); only the task metric "
                                   f"is bounded: {task_metric} may drop by "
                                   f"{TASK_DELTA[task_metric]:g}{top1_text}")
        return tolerance
    e_sim = float(np.abs(_flat(sim.outputs) - reference).max())
    over = f" {sim.describe()}" if sim.layers else ""
    tolerance["max_abs"] = SAFETY * e_sim + floor
    tolerance["derivation"] = (f"{mode.value}: {SAFETY:g} x simulated {mode.value} error "
                               f"{e_sim:.3g}{over} + {FLOAT32_RTOL:g} x output range {span:.4g}")
    if mode.integer_only:
        tolerance["output_step"] = output_step
        tolerance["steps"] = tolerance["max_abs"] / output_step if output_step else None
        tolerance["task_delta"] = TASK_DELTA[task_metric]
        steps = f" = {tolerance['steps']:.1f} output steps" if tolerance["steps"] else ""
        tolerance["derivation"] += (f"{steps}; task {task_metric} may drop by "
                                    f"{TASK_DELTA[task_metric]:g}{top1_text}")
    return tolerance
