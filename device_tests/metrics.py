"""Parity metrics between a variant's outputs and the Keras reference, and the bound checks.

All errors are in the model's output units (dequantized outputs against the Keras float32
reference). NaN: the error metrics cover the positions where neither side is NaN; positions where
exactly one side is NaN are counted (`nan_mismatches`) and fail the entry. Values JSON cannot hold
(an infinite SQNR when the error is exactly zero, a ratio over a zero range) are None.
"""

from __future__ import annotations

import difflib
import math

import numpy as np

BOUNDS = ("max_abs", "max_rel", "task_delta", "min_top1_agreement")
# Tolerance keys that document a bound without being one.
NOTES = ("output_step", "steps", "derivation")
WORST = 5


class ToleranceError(Exception):
    """A tolerance the runner cannot apply as written (unknown key, not a number)."""


def finite_number(value) -> bool:
    """A JSON number a bound can be: int or float (not bool), finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def error_metrics(outputs: np.ndarray, reference: np.ndarray,
                  output_step: float | None = None) -> dict:
    """max/mean abs error, RMSE, rel_error, cosine, SQNR, steps and the worst samples."""
    out = np.asarray(outputs, dtype=np.float64).reshape(outputs.shape[0], -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(reference.shape[0], -1)
    nan_out, nan_ref = np.isnan(out), np.isnan(ref)
    valid = ~(nan_out | nan_ref)
    mismatched = nan_out != nan_ref
    with np.errstate(invalid="ignore"):
        # Equal values (infinities of the same sign included) are an error of exactly 0.
        diff = np.where(out == ref, 0.0, out - ref)
    abs_err = np.where(valid, np.abs(diff), 0.0)
    # Ranking: a sample whose NaN positions differ from the reference is the worst possible.
    per_sample = np.where(mismatched.any(axis=1), np.inf, abs_err.max(axis=1, initial=0.0))
    order = np.argsort(-per_sample, kind="stable")
    metrics = {"samples": int(out.shape[0]), "nan_mismatches": int(mismatched.sum()),
               "nan_positions": int(nan_ref.sum())}
    count = int(valid.sum())
    if count == 0:
        metrics.update(max_abs_error=None, mean_abs_error=None, rmse=None, rel_error=None,
                       cosine=None, sqnr_db=None, steps=None)
    else:
        d, r, o = diff[valid], ref[valid], out[valid]
        max_abs = float(np.max(np.abs(d)))
        span = float(np.max(r) - np.min(r))
        signal, noise = float(np.sum(r * r)), float(np.sum(d * d))
        norms = float(np.linalg.norm(o)) * float(np.linalg.norm(r))
        if norms > 0:
            cosine = float(np.dot(o, r)) / norms
        else:
            cosine = 1.0 if not np.any(o) and not np.any(r) else 0.0
        metrics.update(
            max_abs_error=_float(max_abs),
            mean_abs_error=_float(np.mean(np.abs(d))),
            rmse=_float(math.sqrt(noise / count)),
            rel_error=_float(max_abs / span) if span > 0 else (0.0 if max_abs == 0 else None),
            cosine=_float(cosine),
            sqnr_db=_float(10.0 * math.log10(signal / noise)) if noise > 0 and signal > 0 else None,
            steps=_float(max_abs / output_step) if output_step else None,
        )
    metrics["worst_sample"] = int(order[0])
    metrics["worst_samples"] = [int(i) for i in order[:WORST]]
    return metrics


def _finite_rows(*arrays: np.ndarray) -> np.ndarray:
    rows = np.ones(arrays[0].shape[0], dtype=bool)
    for array in arrays:
        rows &= np.isfinite(np.asarray(array, dtype=np.float64)
                            .reshape(array.shape[0], -1)).all(axis=1)
    return rows


def _r2(labels: np.ndarray, predictions: np.ndarray) -> float | None:
    """R^2, averaged over output columns (scikit-learn's uniform average)."""
    scores = []
    for j in range(labels.shape[1]):
        y, p = labels[:, j], predictions[:, j]
        total = float(np.sum((y - y.mean()) ** 2))
        if total == 0:
            return None
        scores.append(1.0 - float(np.sum((y - p) ** 2)) / total)
    return float(np.mean(scores))


def task_metrics(task: str, labels: np.ndarray, keras: np.ndarray, variant: np.ndarray,
                 y_std: float | None = None) -> dict:
    """The task metric for Keras and for the variant on the same labels; delta = keras - variant.

    classification: accuracy (argmax of the last axis) and top1_agreement between the two;
    regression: R^2 (standardised units, unit-free) and MAE in original units (times y_std).
    Samples where either side has a NaN or infinite output are left out (`samples` says how many
    were used).
    """
    n = labels.shape[0]
    if keras.shape[0] != n or variant.shape[0] != n:
        raise ValueError(f"labels hold {n} samples but the outputs hold {keras.shape[0]} "
                         f"(keras) and {variant.shape[0]} (variant)")
    rows = _finite_rows(keras, variant)
    used = int(rows.sum())
    if task == "classification":
        if used == 0:
            return {"metric": "accuracy", "samples": 0, "keras": None, "variant": None,
                    "delta": None, "top1_agreement": None}
        truth = np.asarray(labels)[rows]
        if truth.ndim == 2 and truth.shape[1] > 1:
            truth = truth.argmax(axis=1)
        truth = truth.reshape(-1).astype(np.int64)
        pred_k = keras[rows].reshape(used, -1).argmax(axis=1)
        pred_v = variant[rows].reshape(used, -1).argmax(axis=1)
        acc_k, acc_v = float(np.mean(pred_k == truth)), float(np.mean(pred_v == truth))
        return {"metric": "accuracy", "samples": used, "keras": acc_k, "variant": acc_v,
                "delta": acc_k - acc_v, "top1_agreement": float(np.mean(pred_k == pred_v))}
    if task == "regression":
        if used == 0:
            return {"metric": "r2", "samples": 0, "keras": None, "variant": None, "delta": None,
                    "mae_keras": None, "mae_variant": None}
        y = np.asarray(labels, dtype=np.float64)[rows].reshape(used, -1)
        k = np.asarray(keras, dtype=np.float64)[rows].reshape(used, -1)
        v = np.asarray(variant, dtype=np.float64)[rows].reshape(used, -1)
        if not (y.shape == k.shape == v.shape):
            raise ValueError(f"regression labels have shape {y.shape} per sample set but the "
                             f"outputs have {k.shape}")
        r2_k, r2_v = _r2(y, k), _r2(y, v)
        scale = float(y_std) if y_std is not None else None
        return {"metric": "r2", "samples": used, "keras": r2_k, "variant": r2_v,
                "delta": (r2_k - r2_v) if r2_k is not None and r2_v is not None else None,
                "mae_keras": float(np.mean(np.abs(y - k))) * scale if scale else None,
                "mae_variant": float(np.mean(np.abs(y - v))) * scale if scale else None}
    raise ValueError(f"Expected task 'classification' or 'regression'. Received: task={task!r}")


def read_bounds(tolerance: dict | None) -> dict:
    """The bounds present (non-null) in a manifest tolerance, checked for type and spelling."""
    if tolerance is None:
        tolerance = {}
    if not isinstance(tolerance, dict):
        raise ToleranceError(f"tolerance must be a JSON object. Received: "
                             f"{type(tolerance).__name__}")
    for key in tolerance:
        if key not in BOUNDS and key not in NOTES:
            near = difflib.get_close_matches(key, BOUNDS + NOTES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ToleranceError(f"tolerance has an unknown key {_brief(key)}{hint}; known: "
                                 f"{', '.join(BOUNDS + NOTES)}")
    bounds = {}
    for key in BOUNDS:
        value = tolerance.get(key)
        if value is None:
            continue
        if not finite_number(value):
            raise ToleranceError(f"tolerance.{key} must be a finite number. Received: "
                                 f"{_brief(value)}")
        bounds[key] = float(value)
    step, steps = tolerance.get("output_step"), tolerance.get("steps")
    if step is not None and not (finite_number(step) and step >= 0):
        raise ToleranceError(f"tolerance.output_step must be a finite number >= 0 (the output's "
                             f"quantization scale). Received: {_brief(step)}")
    if steps is not None and not finite_number(steps):
        raise ToleranceError(f"tolerance.steps must be a finite number. Received: {_brief(steps)}")
    if not isinstance(tolerance.get("derivation", ""), (str, type(None))):
        raise ToleranceError(f"tolerance.derivation must be a string. Received: "
                             f"{_brief(tolerance['derivation'])}")
    if not bounds:
        raise ToleranceError(f"tolerance sets no bound ({', '.join(BOUNDS)}); the runner never "
                             f"invents one, add a bound to the manifest entry")
    return bounds


def check_bounds(bounds: dict, metrics: dict) -> list:
    """One check per bound, and one for NaN positions when there is any NaN: name, value, bound, ok.

    max_abs, max_rel, task_delta hold when value <= bound; min_top1_agreement when value >= bound.
    A value that could not be measured (None) never holds. A model TFLite Micro's compression
    tool compressed (`compressed`) must give the uncompressed model's outputs exactly.
    """
    task = metrics.get("task") or {}
    values = {"max_abs": metrics.get("max_abs_error"), "max_rel": metrics.get("rel_error"),
              "task_delta": task.get("delta"), "min_top1_agreement": task.get("top1_agreement")}
    checks = []
    if metrics.get("nan_mismatches") or metrics.get("nan_positions"):
        value = metrics.get("nan_mismatches", 0)
        checks.append({"name": "nan_positions", "value": value, "bound": 0, "ok": value == 0})
    for name in BOUNDS:
        if name not in bounds:
            continue
        value, bound = values[name], bounds[name]
        if value is None:
            ok = False
        elif name == "min_top1_agreement":
            ok = value >= bound
        else:
            ok = value <= bound
        checks.append({"name": name, "value": value, "bound": bound, "ok": bool(ok)})
    compressed = metrics.get("compressed") or {}
    if compressed.get("applies"):  # lossless: the compressed model must give the same outputs
        value = compressed.get("max_abs_vs_uncompressed")
        checks.append({"name": "lut_compressed_max_abs", "value": value, "bound": 0.0,
                       "ok": value == 0.0})
    return checks


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def fail_reason(checks: list) -> str:
    """Every failing check, one line: `max_abs 0.05 > 0.01; min_top1_agreement 0.9 < 0.95`."""
    parts = []
    for check in checks:
        if check["ok"]:
            continue
        if check["name"] == "nan_positions":
            parts.append(f"nan_positions: {check['value']} output positions are NaN on one side "
                         f"only (bound 0)")
        elif check["value"] is None:
            parts.append(f"{check['name']} could not be measured (bound {_fmt(check['bound'])})")
        else:
            sign = "<" if check["name"] == "min_top1_agreement" else ">"
            parts.append(f"{check['name']} {_fmt(check['value'])} {sign} {_fmt(check['bound'])}")
    return "; ".join(parts)
