"""Per-layer error (docs/bundle.md, result field `layers`): run a variant on the bundle's fixed
subset of test samples with every intermediate tensor preserved, read each tensor the entry maps
to a Keras layer, and compare it with that layer's Keras output.

Diagnostic only: it never changes an entry's status. What cannot be measured is said in the
record (`{"unavailable": ...}` or `{"error": ...}`), and a row that cannot be compared (a tensor
whose name is not the one the bundle expects, shapes that differ) carries its own one-line
`error` while the other rows are computed.
"""

from __future__ import annotations

import math

import numpy as np

from .bundle import one_line
from .interpreters import PreserveUnavailable


def layer_record(bundle, entry: dict, block: dict, inputs, runtime, data: bytes) -> dict:
    """The record's `layers`: never raises (a failure is the record's `error`)."""
    try:
        return layer_errors(bundle, entry, block, inputs, runtime, data)
    except PreserveUnavailable as exc:
        return {"unavailable": one_line(exc)}
    except Exception as exc:  # a diagnostic must not change the entry's status
        return {"error": f"per-layer comparison failed: {one_line(exc)}"}


def _subset(inputs, samples: list):
    """The inputs of the chosen samples (one array, or {name: array})."""
    def pick(array: np.ndarray) -> np.ndarray:
        n = array.shape[0] if array.ndim else 0
        bad = [s for s in samples if not 0 <= s < n]
        if bad:
            raise ValueError(f"the model's layers.samples name sample {bad[0]} but the test "
                             f"inputs hold {n}; rebuild the bundle")
        return array[samples]

    if isinstance(inputs, dict):
        return {name: pick(array) for name, array in inputs.items()}
    return pick(inputs)


def _samples(block: dict) -> list:
    samples = block.get("samples")
    if not isinstance(samples, list) or not samples or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in samples):
        raise ValueError(f"the model's layers.samples is {samples!r}; expected a non-empty list "
                         f"of sample indices, rebuild the bundle")
    return samples


def _run(preserved, x, tensors: list) -> tuple:
    """({tensor index: [arrays, one per invoke]}, {tensor index: why it cannot be read})."""
    read, failed = {t: [] for t in tensors}, {}

    def tap(real: int) -> None:
        for t in tensors:
            if t in failed:
                continue
            try:
                value = preserved.read(t)
            except Exception as exc:  # an index this model does not have, an unfilled tensor
                failed[t] = f"tensor {t} cannot be read: {one_line(exc, 200)}"
                continue
            if value.ndim and value.shape[0] > real:  # a fixed batch's padding (batch-major)
                value = value[:real]
            read[t].append(value)

    preserved.model.run(x, tap=tap)
    return read, failed


def dequantized(value: np.ndarray, scale, zero_point) -> np.ndarray:
    """float64 values of a tensor: (q - zero_point) * scale for a quantized integer tensor,
    bool as 0/1, float16/float32 (and unquantized integers) as they are."""
    if value.dtype == np.bool_:
        return value.astype(np.float64)
    if value.dtype.kind in "iu" and scale:
        return (value.astype(np.float64) - float(zero_point or 0)) * float(scale)
    return value.astype(np.float64)


def _fmt(value) -> str:
    if value is None:
        return "?"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def _divide(a, b):
    return None if a is None or b is None or not b else a / b


def _compare(row: dict, got: np.ndarray, ref: np.ndarray, rng: float, integer: bool) -> dict:
    """One row's figures; `integer`: the tensor is a quantized integer one (errors in steps)."""
    scale = row.get("scale")
    if got.size != ref.size:
        return {"error": f"tensor {row.get('tensor')} holds {got.size} values for the samples "
                         f"but layer {row.get('layer')!r}'s Keras output has shape "
                         f"{list(ref.shape)}; the bundle's layer map does not fit this model"}
    got = got.reshape(ref.shape)
    err = got - ref
    mismatch = np.isnan(got) != np.isnan(ref)
    both = ~(np.isnan(got) | np.isnan(ref))
    if mismatch.any() or np.isinf(err[both]).any():
        max_abs = math.inf
    else:
        max_abs = float(np.abs(err[both]).max()) if both.any() else 0.0
    signal = float(np.sum(ref[both] ** 2))
    noise = float(np.sum(err[both] ** 2))
    # null: no error at all (an infinite SQNR), or no finite figure (JSON has no infinity)
    sqnr = 10.0 * math.log10(signal / noise) if noise > 0 and signal > 0 and \
        math.isfinite(max_abs) else None
    bound, simulated = row.get("bound"), row.get("simulated")
    return {"max_abs": max_abs, "range": rng, "rel": max_abs / rng, "sqnr_db": sqnr,
            "steps": max_abs / scale if integer else None, "simulated": simulated,
            "bound": bound, "bound_steps": _divide(bound, scale) if integer else None,
            "ok": None if bound is None else bool(max_abs <= bound)}


def born_text(born: dict, rng: float) -> str:
    head = f"error is born in layer `{born['layer']}` ({born['op']}): "
    if born.get("steps") is not None:
        against = (f"a simulated {_fmt(born['simulated_steps'])}"
                   if born.get("simulated_steps") is not None
                   else f"a bound of {_fmt(born['bound_steps'])}")
        return head + f"{_fmt(born['steps'])} steps against {against}"
    simulated = born.get("simulated")
    against = (f"a simulated {_fmt(simulated / rng)}" if simulated is not None
               else f"a bound of {_fmt(born['bound'] / rng)}")
    return head + f"{_fmt(born['max_abs'] / rng)} of its range against {against}"


def layer_errors(bundle, entry: dict, block: dict, inputs, runtime, data: bytes) -> dict:
    """Compare every tensor the entry maps (`entry["layers"]`, in op order) with the Keras
    output of its layer (the model's `layers` block) on the block's samples."""
    samples = _samples(block)
    keras = {item.get("layer"): item for item in block.get("outputs") or []}
    mapped = entry.get("layers") or []
    preserved = runtime.load_preserving(data)
    tensors = list(dict.fromkeys(int(row["tensor"]) for row in mapped))
    read, failed = _run(preserved, _subset(inputs, samples), tensors)
    rows, born, text = [], None, None
    for row in mapped:
        layer, tensor = row.get("layer"), int(row["tensor"])
        out = {"layer": layer, "op": row.get("op"), "tensor": tensor}
        expected = row.get("tensor_name")
        item = keras.get(layer)
        actual = None if preserved.names is None else preserved.names.get(tensor)
        if preserved.names is not None and expected and actual != expected:
            out["error"] = (f"tensor {tensor} is named {actual!r} in this model but the bundle "
                            f"maps layer {layer!r} to {expected!r}: the layer map does not fit "
                            f"this .tflite, rebuild the bundle")
        elif item is None:
            out["error"] = (f"layer {layer!r} has no Keras output in the model's layers block; "
                            f"rebuild the bundle")
        elif tensor in failed:
            out["error"] = failed[tensor]
        else:
            ref = bundle.array(item.get("path"), item.get("sha256"),
                               f"layers output of {layer!r}").astype(np.float64)
            pieces = read[tensor]
            raw = np.stack(pieces) if pieces[0].ndim == 0 else np.concatenate(pieces)
            integer = raw.dtype.kind in "iu" and bool(row.get("scale"))
            got = dequantized(raw, row.get("scale"), row.get("zero_point"))
            rng = float(item.get("range") or 0.0)
            if rng <= 0 and ref.size:
                rng = float(np.nanmax(ref) - np.nanmin(ref))
            out.update(_compare(row, got, ref, rng if rng > 0 else 1.0, integer))
            if out.get("ok") is False and born is None:
                scale = row.get("scale") if out.get("steps") is not None else None
                born = {"layer": layer, "op": row.get("op"), "steps": out["steps"],
                        "simulated_steps": _divide(row.get("simulated"), scale),
                        "bound_steps": out["bound_steps"], "max_abs": out["max_abs"],
                        "bound": out["bound"]}
                text = born_text(dict(born, simulated=row.get("simulated")), out["range"])
        rows.append(out)
    growth = largest_growth(rows)
    if text is None:
        compared = [r for r in rows if "error" not in r]
        bounded = [r for r in compared if r.get("ok") is not None]
        text = (f"every layer stays within its bound ({len(bounded)} of {len(rows)} layers "
                f"bounded)" if bounded else f"no layer has a bound ({len(compared)} of "
                                              f"{len(rows)} layers compared)")
        if growth and bounded:  # the format itself costs this: where it costs the most
            text += (f"; the error grows most in layer `{growth['layer']}` ({growth['op']}): "
                     f"from {_fmt(growth['from'])} to {_fmt(growth['to'])} of the range")
        if len(compared) < len(rows):
            text += f"; {len(rows) - len(compared)} could not be compared"
    return {"samples": len(samples), "kernels": preserved.kernels, "rows": rows, "born": born,
            "growth": growth, "text": text}


def largest_growth(rows: list) -> dict | None:
    """The layer (in op order) whose relative error rises most above the largest before it:
    where the error grows, whether or not it leaves a bound (a threshold layer whose flips the
    simulation predicts stays within its bound and still carries the variant's error)."""
    found, before = None, 0.0
    for row in rows:
        rel = row.get("rel")
        if rel is None:
            continue
        if rel - before > 0 and (found is None or rel - before > found["to"] - found["from"]):
            found = {"layer": row.get("layer"), "op": row.get("op"), "from": before, "to": rel}
        before = max(before, rel)
    return found
