"""A run's results: each target's results file read and checked, merged into results.json with
the boundary analysis and the target-vs-target comparison, and the reports written from it.

One definition of "output steps" (`output_steps`) serves the merge and the report.
"""

import json
from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..core.errors import EdgepipeError
from ..core.files import sha256_file, write_json
from ..device_tests.bundle import BundleError, load_bundle, one_line
from ..device_tests.schema import RESULTS_SCHEMA_VERSION, ResultStatus, RunFolder, count_statuses
from .boundary import analyse, layer_kinks, thresholds_near
from .deployable import deployable
from .overlay import write_overlays
from .report.shape import RECORD, check_shape
from .stages import Stages, code_key, digest
from .targets import REGISTRY, kind_of, order_key

INTEGER_MODES = tuple(m.value for m in QuantMode if m.integer_only)
# One target's results document (runner, Vela, a board): the merge reads model and mode too.
TARGET_RESULTS = {"target": "!string",
                  "results": [{**RECORD, "model": "!string", "mode": "!string"}]}


def read_target_results(path: Path) -> dict:
    """One target's results file, checked as far as merging and the reports read it (the
    records' shape is report/shape.py's, the one results.json is checked with): a run folder
    travels, and a file edited by hand or cut short must be one line, not a crash."""
    fix = "Rerun `edgepipe parity` on the run folder."
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EdgepipeError(f"{path}: not a results file (not JSON: {one_line(e)}). {fix}"
                            ) from None
    check_shape(doc, TARGET_RESULTS, path, fix)
    if not isinstance(doc.get("results"), list):  # a list spec allows null: this one may not
        raise EdgepipeError(f"Expected results in {path} to be a list. Received: nothing "
                            f"(absent or null). {fix}")
    for i, r in enumerate(doc["results"]):
        if r["status"] not in ResultStatus.values():  # would count as neither ok nor bad
            raise EdgepipeError(f"Expected results[{i}].status in {path} to be one of "
                                f"{', '.join(ResultStatus.values())}. Received: "
                                f"{r['status']!r}. {fix}")
    return doc


def check_other_results(folder: RunFolder, targets) -> None:
    """Read the results files of the targets not about to run: they are merged as they are
    after the runs, so a broken one is said before any runner starts."""
    running = {folder.target_results(t).name for t in targets}
    for path in sorted(folder.results_dir.glob("*.json")):
        if path.name not in running:
            read_target_results(path)


def output_steps(a: np.ndarray, b: np.ndarray, step: float) -> int:
    """The largest difference in quantization levels between two dequantized outputs of the
    same integer tensor: (q - zero_point) * step is an integer multiple of the step, so
    rounding recovers the level exactly despite float32 noise."""
    return int(np.max(_levels(a, b, step)))


def _levels(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    return np.abs(np.rint(a / step) - np.rint(b / step))


def _sample_steps(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """output_steps per sample (the first axis)."""
    levels = _levels(a, b, step)
    return levels.reshape(len(levels), -1).max(axis=1).astype(int)


MAX_LISTED = 20  # flips and unexplained samples listed in a record; the counts say the rest


def compare_targets(out: Path, results: list, target: str, baseline: str, bundle=None,
                    files: dict | None = None) -> None:
    """Add `vs_<baseline>` metrics to each of `target`'s records: the largest difference from
    the baseline's outputs, in output steps for integer variants, where both were saved. Two
    implementations of the same reference kernels may differ by one rounding; where the
    bundle's entry derives a larger bound from kernels measured to differ (`target_bounds`,
    pipeline/kernel_bounds.py), that bound. An integer variant further apart fails, unless on
    every sample that differs by more than the bound a unit sits within one input step of a
    threshold (from `bundle`'s boundary block): that is a flip, and it passes when both sides
    pass against Keras. A failure names the first layer where the two targets' per-layer
    figures part. `files`: `_model_files` by model, shared with the merge so that each model's
    files are read and verified once."""
    saved = {(r["id"], r["target"]): r for r in results}
    files = {} if files is None else files
    entries = {e["id"]: e for e in bundle.manifest["entries"]} if bundle is not None else {}
    kind = kind_of(target)
    for r in results:
        other = saved.get((r["id"], baseline))
        ran = r["status"] in (ResultStatus.PASS, ResultStatus.FAIL)
        if r["target"] != target or not ran or not (r.get("outputs") and other
                                                     and other.get("outputs")):
            continue
        mine = np.load(out / r["outputs"], allow_pickle=False).astype(np.float64)
        theirs = np.load(out / other["outputs"], allow_pickle=False).astype(np.float64)
        if mine.shape != theirs.shape:
            continue
        diff = float(np.max(np.abs(mine - theirs))) if mine.size else 0.0
        step = (r.get("tolerance") or {}).get("output_step")
        block = {"max_abs": diff, "steps": None}
        r["metrics"][f"vs_{baseline}"] = block
        if step and r["mode"] in INTEGER_MODES and mine.size:
            per_sample = _sample_steps(mine, theirs, step)
            block["steps"] = int(per_sample.max())
            derived = ((entries.get(r["id"]) or {}).get("target_bounds") or {}).get(
                kind.value if kind else "")
            bound = max(1.0, float(derived["steps"])) if derived else 1.0
            check = {"name": f"vs {baseline} (steps)", "value": block["steps"], "bound": bound,
                     "ok": block["steps"] <= bound}
            r["checks"].append(check)
            if derived:
                block["bound"] = {"steps": bound, "derivation": derived.get("derivation", "")}
            if check["ok"]:
                if block["steps"] > 1:  # reported, not failed: the kernels account for it
                    check["note"] = (f"{block['steps']} output steps from {baseline}, within "
                                     f"the bound derived from the kernels ({bound:.1f})")
                continue
            model_files = (_checked_files(bundle, out, r, mine.shape, files)
                           if bundle is not None else None)
            ok, why = _explain(block, r, other, mine, theirs, per_sample, model_files, bound,
                               (derived or {}).get("ops") or [])
            check["ok"] = ok
            if ok:
                check["note"] = why
            else:
                r["status"] = ResultStatus.FAIL
                r["reason"] = "; ".join(filter(None, [r.get("reason"), why]))


def _checked_files(bundle, out: Path, r: dict, shape: tuple, files: dict) -> dict:
    """`_model_files` of r's model (read once into `files`), with r's outputs (of `shape`)
    checked to be this bundle's."""
    if r["model"] not in files:
        files[r["model"]] = _model_files(bundle, r["model"])
    found = files[r["model"]]
    ref, preacts = found["reference"], found["preacts"]
    if tuple(shape) != ref.shape or any(p.ndim == 0 or len(p) != len(ref) for p in preacts):
        raise EdgepipeError(f"{out / r['outputs']} holds shape {tuple(shape)} where the "
                            f"reference holds {ref.shape} (or a boundary file disagrees); it is "
                            "not this bundle's output: rerun `edgepipe parity --force`.")
    return found


def _model_files(bundle, name: str) -> dict:
    """The model's Keras reference and, when it has one, its boundary block, pre-activations
    and layer kinks: every file verified by sha256."""
    boundary = bundle.manifest["models"].get(name, {}).get("boundary")
    where = f"models.{name}"
    try:
        model = bundle.model(name)
        ref = bundle.array(model["reference"], model["reference_sha256"], f"{where}.reference")
        preacts = [bundle.array(p, sha, f"{where}.boundary.preact") for p, sha in
                   zip(boundary["preact"], boundary["preact_sha256"], strict=True)
                   ] if boundary else []
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    return {"reference": ref.astype(np.float64), "boundary": boundary, "preacts": preacts,
            "kinks": layer_kinks(boundary) if boundary else []}


def _explain(block: dict, r: dict, other: dict, mine: np.ndarray, theirs: np.ndarray,
             per_sample: np.ndarray, files: dict | None, bound: float = 1.0,
             kernel_ops: list = ()) -> tuple[bool, str]:
    """Whether the samples on which two targets differ by more than `bound` output steps are
    all threshold flips that both sides survive against Keras; and what to say about it. Adds
    `flips` (sample, layer, unit, distance from the threshold in input steps, which side is
    closer to Keras), `unexplained_samples` and `parted_at` (`first_difference`) to `block`.
    `kernel_ops`: the ops the bound was derived from (the entry's `target_bounds` ops), named
    where they sit in the layer where the two part."""
    target, baseline = r["target"], other["target"]
    differing = sorted(np.flatnonzero(per_sample > bound), key=lambda s: -per_sample[s])
    boundary = (files or {}).get("boundary")
    steps = ((boundary or {}).get("input_steps") or {}).get(r["mode"])
    flips, unexplained, closer = [], [], {}
    for s in (int(s) for s in differing):
        if files is None:  # no bundle to look upstream in
            unexplained.append(s)
            continue
        errors = {target: float(np.max(np.abs(mine[s] - files["reference"][s]))),
                  baseline: float(np.max(np.abs(theirs[s] - files["reference"][s])))}
        a, b = errors[target], errors[baseline]
        nearer = None if a == b else target if a < b else baseline
        closer[s] = (f"{nearer} is closer to Keras on it (max|Δ| {min(a, b):.3g} against "
                     f"{max(a, b):.3g})" if nearer else
                     f"both are as close to Keras on it (max|Δ| {a:.3g})")
        near = thresholds_near(files["preacts"], steps, files["kinks"], boundary["layers"], s
                               ) if boundary and steps else []
        if not near:
            unexplained.append(s)
            continue
        flips.append({"sample": s, "output_steps": int(per_sample[s]), **near[0],
                      "near_units": len(near), "max_abs_error": errors, "closer": nearer})
    block["flip_samples"] = len(flips)
    block["flips"] = flips[:MAX_LISTED]
    block["unexplained_samples"] = unexplained[:MAX_LISTED]
    if unexplained:
        s = unexplained[0]
        cause = ("no unit is within one input step of a threshold upstream" if boundary else
                 "the model has no activation with a threshold")
        more = (f" ({len(unexplained)} samples differ so: {_listed(unexplained)})"
                if len(unexplained) > 1 else "")
        parted = first_difference(r, other)
        if parted:
            block["parted_at"] = parted
        there = list(dict.fromkeys(f"{o['op']} {o['type']}" for o in kernel_ops
                                   if parted and o.get("layer") == parted["layer"]))
        measured = f"; measured to differ there: {', '.join(there)}" if there else ""
        where = (f"; the two first differ at layer `{parted['layer']}` ({parted['op']}"
                 f"{measured})" if parted else "")
        return False, (f"sample {s} is {per_sample[s]} output steps from {baseline} (bound "
                       f"{bound:g}) and {cause}: a kernel difference{where}{more}"
                       + (f"; {closer[s]}" if s in closer else ""))
    flip = flips[0]
    what = (f"sample {flip['sample']} is {flip['output_steps']} output steps from {baseline}: "
            f"a threshold flip ({flip['layer']} unit {flip['unit']} is "
            f"{flip['distance_steps']:.2g} input steps from {flip['threshold']:g})"
            + (f" on {len(flips)} samples ({_listed([f['sample'] for f in flips])})"
               if len(flips) > 1 else "") + f"; {closer[flip['sample']]}")
    failing = [x["target"] for x in (r, other) if x["status"] != ResultStatus.PASS]
    if failing:
        return False, f"{what}, but {' and '.join(failing)} fails against Keras"
    return True, f"{what}; both pass against Keras"


def first_difference(r: dict, other: dict) -> dict | None:
    """The first layer (in op order) whose per-layer figures differ between two records of
    the same variant: where their outputs part. Both runtimes' tensors are compared with the
    same Keras outputs, so equal tensors give equal figures to the bit. None when either has no
    per-layer rows or no row differs."""
    rows = [((x.get("layers") or {}).get("rows") or []) for x in (r, other)]
    theirs = {row.get("tensor"): row for row in rows[1]}
    for row in rows[0]:
        match = theirs.get(row.get("tensor"))
        if match is None or "max_abs" not in row or "max_abs" not in match:
            continue
        if row["max_abs"] != match["max_abs"]:
            return {"layer": row.get("layer"), "op": row.get("op"),
                    "max_abs": {r["target"]: row["max_abs"],
                                other["target"]: match["max_abs"]}}
    return None


def _listed(samples: list) -> str:
    shown = ", ".join(str(s) for s in samples[:5])
    return shown + (", ..." if len(samples) > 5 else "")


def _boundary(bundle, out: Path, r: dict, steps: list, files: dict) -> dict:
    """The boundary analysis of one result: the bundle's files verified by sha256 (once per
    model, into `files`), the variant's outputs of the reference's shape."""
    try:
        variant = np.load(out / r["outputs"], allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgepipeError(f"{out / r['outputs']}: not a readable .npy ({one_line(e)}); rerun "
                            "`edgepipe parity` on the run folder.") from None
    found = _checked_files(bundle, out, r, variant.shape, files)
    return analyse(found["preacts"], steps, found["kinks"], variant, found["reference"])


def collect(out: Path, stages: Stages | None = None, workers: int = 1) -> dict:
    """Merge per-target results, add the boundary analysis, write results.json, junit.xml and
    report.html (its plots drawn in `workers` processes); return the merged document. With
    `stages`, reuse them when neither the manifest, the results nor the code changed."""
    folder = RunFolder(out)
    key = digest("collect", code_key(__name__), sha256_file(folder.manifest),
                 {p.name: sha256_file(p) for p in sorted(folder.results_dir.glob("*.json"))})
    if stages is not None and stages.fresh("collect", key):
        return json.loads(folder.results.read_text())
    merged = _merge(folder, workers)
    if stages is not None:
        stages.record("collect", key, [folder.rel(p) for p in
                                       (folder.results, folder.junit, folder.report)])
        stages.save()
    return merged


def _in_run(out: Path, path: Path) -> str | None:
    """`path` relative to the run folder; None outside it (a results file may come from a
    board: trust no path)."""
    try:
        return path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return None


def _merge(folder: RunFolder, workers: int) -> dict:
    from .report import write_junit, write_report

    out = folder.root
    try:
        bundle = load_bundle(out)  # every field checked, every file verified as it is read
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    manifest = bundle.manifest
    targets, results = {}, []
    loaded = [(read_target_results(p), p) for p in sorted(folder.results_dir.glob("*.json"))]
    for doc, path in sorted(loaded, key=lambda pair: order_key(pair[0]["target"])):
        targets[doc["target"]] = {k: doc.get(k) for k in ("runtime", "platform", "seconds")}
        for r in doc["results"]:
            # Files relative to the results file: made relative to the run
            if r.get("outputs"):
                r["outputs"] = _in_run(out, path.parent / r["outputs"])
            packed = (r.get("metrics") or {}).get("compressed") or {}
            if packed.get("file"):
                packed["file"] = _in_run(out, path.parent / packed["file"])
        results += doc["results"]
    files: dict = {}  # each model's reference and boundary files, read and verified once
    for r in results:
        boundary = manifest["models"].get(r["model"], {}).get("boundary")
        steps = (boundary or {}).get("input_steps", {}).get(r["mode"])
        if boundary and steps and r.get("outputs") and isinstance(r.get("metrics"), dict):
            r["metrics"]["boundary"] = _boundary(bundle, out, r, steps, files)
    for name in targets:  # e.g. tflm against host-ref: two builds of the same kernels
        kind = kind_of(name)
        if kind and REGISTRY[kind].compare_with in targets:
            compare_targets(out, results, name, REGISTRY[kind].compare_with, bundle, files)
    counts = count_statuses(results)
    # An entry with no result on a target that ran is not a pass: the run is incomplete.
    have = {(r["id"], r["target"]) for r in results}
    counts["missing"] = sum((e["id"], t) not in have for e in manifest["entries"] for t in targets)
    # A model whose job died on a cluster has no entries: it is counted on its own.
    failed_models = manifest.get("failed_models") or {}
    counts["failed_models"] = len(failed_models)
    ok = (counts[ResultStatus.FAIL] == 0 and counts[ResultStatus.ERROR] == 0
          and counts["missing"] == 0 and not failed_models)
    merged = {"schema_version": RESULTS_SCHEMA_VERSION,
              "manifest_sha256": sha256_file(folder.manifest),
              "targets": targets, "results": results, "summary": {**counts, "ok": ok},
              "deployable": deployable(manifest, results, list(targets))}
    if failed_models:
        merged["failed_models"] = failed_models
    write_json(folder.results, merged)
    write_overlays(folder, manifest, results)  # Model Explorer node data, per variant
    write_junit(out, merged)
    write_report(out, workers=workers)
    return merged
