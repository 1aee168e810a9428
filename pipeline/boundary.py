"""Boundary analysis: how much of a variant's error sits on samples whose input to an activation
with a threshold or a kink (pipeline/kinks.py finds them) lies within one quantization step of
it; and, between two targets, which differences a threshold flip explains.

Near a kink, rounding can move a pre-activation across it: a step unit flips from 0 to 1 (a
jump of the next layer's weight), a leaky unit changes slope. First-order error analysis cannot
see these jumps; counting them explains a step model's integer error instead of only measuring
it. Two targets that round one such unit differently disagree by a whole jump on that sample
although both may be as close to Keras: a flip, not a kernel difference.
"""

import numpy as np

from ..device_tests.bundle import KINK_KINDS

JUMP, SLOPE = KINK_KINDS  # where the value jumps (a threshold); where the slope changes


def layer_kinks(boundary: dict) -> list[list[dict]]:
    """A manifest boundary block's kinks, one list per layer, each kink a dict with at least
    `at` (and `kind`). Manifests written before kinks were probed carry one `kink` for every
    layer and no kind."""
    if boundary.get("kinks") is not None:
        return boundary["kinks"]
    return [[{"at": boundary["kink"]}] for _ in boundary["preact"]]


def _positions(kinks, layers: int) -> list[list[float]]:
    if isinstance(kinks, (int, float)):  # one kink for every layer
        return [[float(kinks)] for _ in range(layers)]
    return [[float(k["at"]) if isinstance(k, dict) else float(k) for k in layer]
            for layer in kinks]


def _distance(pre: np.ndarray, positions: list[float]) -> np.ndarray:
    """Each unit's distance from the nearest of `positions` (inf with none)."""
    pre = np.asarray(pre, np.float64)
    out = np.full(pre.shape, np.inf)
    for at in positions:
        out = np.minimum(out, np.abs(pre - at))
    return out


def analyse(preacts: list[np.ndarray], steps: list[float], kinks, variant: np.ndarray,
            reference: np.ndarray) -> dict:
    """`kinks`: per layer, its kinks (positions or dicts with `at`), or one position for all."""
    n = len(reference)
    positions = _positions(kinks, len(preacts))
    near = np.zeros(n, bool)
    near_units = np.zeros(n, int)
    for pre, step, at in zip(preacts, steps, positions, strict=True):
        close = _distance(pre.reshape(n, -1), at) < step
        near |= close.any(axis=1)
        near_units += close.sum(axis=1)
    err2 = ((np.asarray(variant, np.float64) - reference).reshape(n, -1) ** 2).sum(axis=1)
    total = float(err2.sum())
    worst = np.argsort(-err2)[: max(1, n // 20)]  # the 5 % of samples with the largest error
    # With many units nearly every sample has one near the kink; then what explains the error
    # is how many: the correlation of near units with the sample's error says whether it does.
    spread = near_units.std() > 0 and err2.std() > 0
    return {"kinks": positions, "input_step": [float(s) for s in steps],
            "near_samples": int(near.sum()), "samples": n,
            "near_units_mean": float(near_units[near].mean()) if near.any() else 0.0,
            "near_error_share": float(err2[near].sum() / total) if total > 0 else 0.0,
            "far_max_abs_error": float(np.sqrt(err2[~near].max())) if (~near).any() else None,
            "near_units_error_corr": (float(np.corrcoef(near_units, np.sqrt(err2))[0, 1])
                                      if spread else None),
            "worst_5pct_near": float(near[worst].mean())}


def thresholds_near(preacts: list[np.ndarray], steps: list[float], kinks: list[list[dict]],
                    layers: list[str], sample: int) -> list[dict]:
    """The units of `sample` whose Keras input lies within one quantization step of a threshold
    (a jump), nearest first: {layer, unit (flat index in the sample), threshold,
    distance_steps}. Slope changes are left out: crossing one moves the output continuously,
    by no more than ordinary rounding does."""
    near = []
    for pre, step, layer_kinks_, layer in zip(preacts, steps, kinks, layers, strict=True):
        at = [float(k["at"]) for k in layer_kinks_ if k.get("kind") == JUMP]
        if not at or not step:
            continue
        values = np.asarray(pre[sample], np.float64).reshape(-1)
        dist = _distance(values, at)
        for unit in np.flatnonzero(dist < step):
            threshold = min(at, key=lambda a: abs(values[unit] - a))
            near.append({"layer": layer, "unit": int(unit), "threshold": threshold,
                         "distance_steps": float(dist[unit] / step)})
    return sorted(near, key=lambda u: u["distance_steps"])
