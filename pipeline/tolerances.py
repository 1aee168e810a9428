"""Tolerances derived from each format's precision, applied to the model at hand.

For every mode the Keras model is run again with the format's rounding simulated on it
("fake quantization"): weights rounded to float16 or to the int8 grid (per output channel,
symmetric, as the converter does), and in the integer modes every layer's output rounded to the
grid that calibration gives it ((max - min) / 255 over the representative samples for int8;
max |x| / 32767 for int16). Where the float mode quantizes activations on the fly (dynamic
range), the inputs of quantized layers are rounded per sample to max |x| / 127.
The simulated deviation from the float32 reference, E_sim, is what the format costs this model.
The bound given to the real variant is

    max_abs = SAFETY * E_sim + FLOAT32_RTOL * R       (R: range of the reference outputs)

SAFETY = 2 covers what the simulation leaves out: the kernels' fixed-point multipliers, the
lookup tables of LOGISTIC/TANH/GELU, and tensors inside an activation (Swish's sigmoid) that
are quantized on their own. For the integer modes the bound is also given in output steps
(the output tensor's scale), and the task metric may drop by at most TASK_DELTA.
float32 gets only the float32 term. Nothing here looks at the variant's real outputs.
"""

import numpy as np

from ..converters.modes import QuantMode

FLOAT32_RTOL = 1e-5
SAFETY = 2.0
# Acceptance criteria rather than derivations: how much task quality a deployment may lose.
TASK_DELTA = {"accuracy": 0.01, "r2": 0.02}
DYNAMIC_MIN_ELEMENTS = 1024  # the converter leaves smaller weight tensors in float (FACTS.md)


def _layers(model) -> list:
    """The model's layers in order, without its InputLayer (a functional model lists it first;
    a Sequential model does not list it)."""
    import keras

    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _is_chain(model) -> bool:
    """Only models whose layers form one chain are simulated layer by layer."""
    import keras

    if isinstance(model, keras.Sequential):
        return True  # a chain by construction (a reloaded one lists extra nodes on layer 0)
    layers = _layers(model)
    for layer in layers:  # a subclassed model's layers have no nodes: not simulated
        inbound = getattr(layer, "_inbound_nodes", [])
        if len(inbound) != 1 or len(inbound[0].input_tensors) != 1:
            return False
    return bool(layers)


def _int8_weights(w: np.ndarray, mode: QuantMode) -> bool:
    """Kernels go to int8 (biases stay int32/float); dynamic range skips small tensors."""
    return w.ndim >= 2 and (mode is not QuantMode.DYNAMIC or w.size >= DYNAMIC_MIN_ELEMENTS)


def _quantize_weights(weights: list[np.ndarray], mode: QuantMode) -> list[np.ndarray]:
    out = []
    for w in weights:
        if mode is QuantMode.FLOAT16:
            out.append(w.astype(np.float16).astype(np.float32))
        elif _int8_weights(w, mode):
            # per output channel (the last axis of a Keras kernel), symmetric int8
            axes = tuple(range(w.ndim - 1))
            scale = np.abs(w).max(axis=axes, keepdims=True) / 127.0
            scale = np.where(scale > 0, scale, 1.0)
            out.append((np.round(w / scale) * scale).astype(np.float32))
        else:
            out.append(w)  # biases stay at (int32 or float) precision
    return out


def _grid(h: np.ndarray, lo: float, hi: float, mode: QuantMode) -> np.ndarray:
    if mode is QuantMode.INT16X8:
        scale = max(abs(lo), abs(hi)) / 32767.0 or 1.0
        return np.clip(np.round(h / scale), -32767, 32767) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # the int8 range always holds zero exactly
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(h / scale) + zero, 0, 255) - zero) * scale


def _dynamic_inputs(h: np.ndarray) -> np.ndarray:
    flat = h.reshape(len(h), -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return (np.round(flat / scale) * scale).reshape(h.shape)


def simulate(model, mode: QuantMode, x: np.ndarray, representative: np.ndarray | None):
    """The model's outputs on `x` with the mode's rounding simulated, or None if not a chain."""
    if mode is QuantMode.FLOAT32 or not _is_chain(model):
        return None
    layers = _layers(model)
    ranges = []
    if mode.integer_only:
        h = representative
        ranges.append((float(h.min()), float(h.max())))
        for layer in layers:
            h = np.asarray(layer(h))
            ranges.append((float(h.min()), float(h.max())))
    h = np.asarray(x, np.float32)
    if mode.integer_only:
        h = _grid(h, *ranges[0], mode)
    for i, layer in enumerate(layers):
        weights = layer.get_weights()
        if weights:
            if mode is QuantMode.DYNAMIC and _int8_weights(weights[0], mode):
                h = _dynamic_inputs(h)
            layer.set_weights(_quantize_weights(weights, mode))
            try:
                h = np.asarray(layer(h.astype(np.float32)))
            finally:
                layer.set_weights(weights)
        else:
            h = np.asarray(layer(h.astype(np.float32)))
        if mode.integer_only:
            h = _grid(h, *ranges[i + 1], mode)
    return h


def derive(mode: QuantMode, reference: np.ndarray, simulated: np.ndarray | None,
           output_step: float | None, task_metric: str) -> dict:
    """The bounds for one variant (see the module docstring)."""
    reference = np.asarray(reference, np.float64)
    span = float(reference.max() - reference.min()) or float(np.abs(reference).max()) or 1.0
    floor = FLOAT32_RTOL * span
    tolerance = {"max_abs": floor, "max_rel": None, "output_step": None, "steps": None,
                 "task_delta": None, "min_top1_agreement": None}
    if mode is QuantMode.FLOAT32:
        tolerance["derivation"] = f"float32: {FLOAT32_RTOL:g} x output range {span:.4g}"
        return tolerance
    if simulated is None:
        tolerance["max_abs"] = None
        tolerance["derivation"] = (f"{mode.value}: no simulation (the model is not a chain of "
                                   "layers); only the task metric is bounded")
        tolerance["task_delta"] = TASK_DELTA[task_metric]
        return tolerance
    e_sim = float(np.abs(np.asarray(simulated, np.float64) - reference).max())
    tolerance["max_abs"] = SAFETY * e_sim + floor
    tolerance["derivation"] = (f"{mode.value}: {SAFETY:g} x simulated {mode.value} error "
                               f"{e_sim:.3g} + {FLOAT32_RTOL:g} x output range {span:.4g}")
    if mode.integer_only:
        tolerance["output_step"] = output_step
        tolerance["steps"] = tolerance["max_abs"] / output_step if output_step else None
        tolerance["task_delta"] = TASK_DELTA[task_metric]
        tolerance["derivation"] += (f" = {tolerance['steps']:.1f} output steps; task "
                                    f"{task_metric} may drop by {TASK_DELTA[task_metric]:g}")
    return tolerance
