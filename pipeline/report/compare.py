"""Numbers recomputed from the saved outputs: NaN and infinities, a variant against Keras, and
one target against another (host vs host-ref)."""

from pathlib import Path

import numpy as np

from ...device_tests.schema import RunFolder
from .read import ReportEntry, Run, build_run, load_run, read_manifest
from .shape import check_results


def as_samples(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


def not_finite(a: np.ndarray) -> dict | None:
    """How many values of `a` (samples first) are NaN, +inf and -inf, in which samples and at
    which outputs (the flat index within a sample); None when every value is finite."""
    if not np.issubdtype(a.dtype, np.floating):
        return None
    s = as_samples(a)
    bad = ~np.isfinite(s)
    if not bad.any():
        return None
    return {"NaN": int(np.isnan(s).sum()), "+inf": int(np.isposinf(s).sum()),
            "-inf": int(np.isneginf(s).sum()), "samples": np.flatnonzero(bad.any(axis=1)).tolist(),
            "outputs": np.flatnonzero(bad.any(axis=0)).tolist(), "of": len(s)}


def not_finite_text(info: dict) -> str:
    """`3 values are not finite (1 NaN, 2 +inf), in 2 of 48 samples: 3, 17; at outputs: 0`"""
    kinds = [(k, info[k]) for k in ("NaN", "+inf", "-inf") if info[k]]
    total = sum(n for _, n in kinds)
    return (f"{total} value{'s are' if total > 1 else ' is'} not finite ("
            + ", ".join(f"{n} {k}" for k, n in kinds) + f"), in {len(info['samples'])} of "
            f"{info['of']} samples: {_indices(info['samples'])}; at outputs: "
            f"{_indices(info['outputs'])}")


def _indices(indices: list[int], shown: int = 10) -> str:
    more = len(indices) - shown
    return ", ".join(map(str, indices[:shown])) + (f", … ({more} more)" if more > 0 else "")


def outputs_not_finite(run: Run, v: ReportEntry, target: str | None = None) -> dict | None:
    """Where the saved outputs on `target` (the Keras reference: None) hold NaN or
    infinities (`not_finite`); None when they do not, or are not there."""
    array = run.reference(v) if target is None else run.outputs(v, target)
    return None if array is None else not_finite(array)


def where_not_finite(run: Run, v: ReportEntry) -> list[str]:
    """["the Keras reference", "host", ...]: the outputs of `v` with NaN or infinities."""
    return [name or "the Keras reference" for name in [None, *run.targets]
            if outputs_not_finite(run, v, name)]


def errors(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|variant − keras| (samples × values) and where it is finite: the plots and numbers use
    only those positions; a NaN or an infinity on either side is counted and shown apart."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(as_samples(out) - as_samples(ref))
    return err, np.isfinite(err)


def compare_outputs(a: np.ndarray | None, b: np.ndarray | None) -> dict | None:
    """max/mean |a - b| over the elements whose difference is finite, how many elements differ,
    and how many of them by NaN or an infinity (`not_finite`: one side not finite, or opposite
    infinities; `max_abs` None when every element does); None when either is absent or shapes
    disagree (then `shape` says so)."""
    if a is None or b is None:
        return None
    if a.shape != b.shape:
        return {"shape": f"{a.shape} vs {b.shape}"}
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0  # the same infinity or NaN: no difference
    finite = diff[np.isfinite(diff)]
    return {"max_abs": float(finite.max()) if finite.size else (None if diff.size else 0.0),
            "mean_abs": float(finite.mean()) if finite.size else (None if diff.size else 0.0),
            "differing": int(np.count_nonzero(diff)), "elements": int(diff.size),
            "not_finite": int(diff.size - finite.size)}


def _steps(a: np.ndarray, b: np.ndarray, step: float) -> int | None:
    """The largest difference between `a` and `b` in output quantization levels, over the
    positions where both are finite (max_abs leaves the others out too); None when a step
    that small makes the levels overflow (a hand-edited tolerance)."""
    # Imported here: pipeline/results.py imports this package's shape specs when it loads.
    from ..results import output_steps

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return 0
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return output_steps(a[both], b[both], step)
    except (ValueError, OverflowError):  # int() of an infinite or NaN level
        return None


def target_differences(run_dir: Path, results: dict | None = None, a: str = "host",
                       b: str = "host-ref") -> dict[str, dict]:
    """For every entry with a result on both targets: each side's status and the comparison of
    their saved outputs (`max_abs`, `mean_abs`, `differing`, `elements`, `steps` = the largest
    difference in output quantization levels); `None` values and a `note` where outputs are
    absent."""
    run_dir = Path(run_dir)
    if results is None:
        return differences(load_run(run_dir), a, b)
    results = check_results(results, RunFolder(run_dir).results)
    return differences(build_run(run_dir, read_manifest(run_dir), results), a, b)


def differences(run: Run, a: str, b: str) -> dict[str, dict]:
    out = {}
    for v in run.entries:
        if a not in v.records or b not in v.records:
            continue
        mine, theirs = run.outputs(v, a), run.outputs(v, b)
        cmp = compare_outputs(mine, theirs)
        row = {"status": {a: v.records[a].get("status"), b: v.records[b].get("status")},
               "max_abs": None, "mean_abs": None, "differing": None, "elements": None,
               "steps": None, "note": ""}
        if cmp is None:
            missing = [t for t in (a, b) if run.outputs(v, t) is None]
            row["note"] = "no saved outputs on " + " and ".join(missing)
        elif "shape" in cmp:
            row["note"] = f"output shapes differ: {cmp['shape']}"
        else:
            row.update(cmp)
            step = (v.entry.get("tolerance") or {}).get("output_step")
            if step and cmp["max_abs"] is not None:
                row["steps"] = _steps(mine, theirs, step)
            if cmp["not_finite"]:
                row["note"] = (f"{cmp['not_finite']:,} elements differ by NaN or an infinity "
                               "(left out of max and mean)")
        out[v.id] = row
    return out
