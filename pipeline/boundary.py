"""Boundary analysis: how much of an integer variant's error sits on samples whose input to a
Step or PiecewiseLinear layer lies within one quantization step of the kink.

Near the kink, rounding can move a pre-activation across it: a Step unit flips from 0 to 1 (a
jump of the next layer's weight), a PiecewiseLinear unit changes slope. First-order error
analysis cannot see these jumps; counting them explains a Step model's int8 error instead of
only measuring it.
"""

import numpy as np


def analyse(preacts: list[np.ndarray], steps: list[float], kink: float,
            variant: np.ndarray, reference: np.ndarray) -> dict:
    n = len(reference)
    near = np.zeros(n, bool)
    near_units = np.zeros(n, int)
    for pre, step in zip(preacts, steps, strict=True):
        close = np.abs(pre.reshape(n, -1) - kink) < step
        near |= close.any(axis=1)
        near_units += close.sum(axis=1)
    err2 = ((np.asarray(variant, np.float64) - reference).reshape(n, -1) ** 2).sum(axis=1)
    total = float(err2.sum())
    worst = np.argsort(-err2)[: max(1, n // 20)]  # the 5 % of samples with the largest error
    # With many units nearly every sample has one near the kink; then what explains the error
    # is how many: the correlation of near units with the sample's error says whether it does.
    spread = near_units.std() > 0 and err2.std() > 0
    return {"kink": kink, "input_step": [float(s) for s in steps],
            "near_samples": int(near.sum()), "samples": n,
            "near_units_mean": float(near_units[near].mean()) if near.any() else 0.0,
            "near_error_share": float(err2[near].sum() / total) if total > 0 else 0.0,
            "far_max_abs_error": float(np.sqrt(err2[~near].max())) if (~near).any() else None,
            "near_units_error_corr": (float(np.corrcoef(near_units, np.sqrt(err2))[0, 1])
                                      if spread else None),
            "worst_5pct_near": float(near[worst].mean())}
