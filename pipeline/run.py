"""`edgepipe run`: train -> audit and convert every mode -> bundle -> parity -> reports.

The run folder is the bundle (docs/bundle.md) plus the results of every target.
"""

import json
from pathlib import Path

import numpy as np

from ..core.errors import EdgepipeError
from ..core.files import sha256_file, write_json
from ..device_tests.bundle import BundleError, load_bundle, one_line
from .boundary import analyse
from .build import STAGES, BuildJob, build_model, check_user_models, stage_key, stage_name
from .bundle import write_manifest
from .config import RunConfig
from .parity import read_results
from .stages import Stages, code_version, digest
from .targets import order_key
from .workers import in_context, prepare, run_jobs


def build_stage(config: RunConfig, out: Path, console, debug: bool, stages: Stages,
                workers: int) -> dict:
    """Train (zoo), convert and bundle every model whose stages are not fresh, `workers` models
    at a time; write the manifest from every model's blocks; return it."""
    names = list(config.user_models) if config.keras else list(config.models)
    jobs = [BuildJob(name, first, config, out, debug) for name in names
            if (first := _first_stale(config, out, name, stages))]
    if len(jobs) < len(names):
        console.print(f"reused {len(names) - len(jobs)} of {len(names)} models (trained, "
                      "converted and bundled with the same inputs before)", highlight=False)
    if jobs and config.keras:
        prepare(debug, config.custom_objects, config.unsafe)
        in_context(check_user_models, config, [job.name for job in jobs])
    if jobs:
        plural = "s" * (len(jobs) != 1)
        console.print(f"building {len(jobs)} model{plural} on {min(workers, len(jobs))} "
                      "worker(s)", highlight=False)
    for job, (done, summary) in run_jobs(build_model, jobs, workers, debug,
                                         config.custom_objects, config.unsafe):
        for stage in done:
            stages.record(stage.name, stage.key, stage.outputs, stage.value)
        stages.save()
        console.print(_built_line(job, summary), highlight=False)
    values = {name: stages.value(stage_name("bundle", name)) for name in names}
    datasets = {}
    for value in values.values():
        datasets.setdefault(value["dataset"], value["dataset_block"])
    return write_manifest(out, datasets, {n: v["model"] for n, v in values.items()},
                          [e for v in values.values() for e in v["entries"]], config.seed)


def _first_stale(config: RunConfig, out: Path, name: str, stages: Stages) -> str | None:
    """The model's first stage to redo (the later ones follow), or None: all fresh."""
    for stage in STAGES[1:] if config.keras else STAGES:
        try:
            key = stage_key(stage, config, out, name)
        except FileNotFoundError:  # an upstream artifact is missing
            return stage
        if not stages.fresh(stage_name(stage, name), key):
            return stage
    return None


def _built_line(job: BuildJob, summary: dict) -> str:
    parts = []
    if "trained" in summary:
        t = summary["trained"]["training"]
        parts.append(f"trained {t['epochs_run']} epochs (best {t['best_epoch']}"
                     f"{', early stop' if t['early_stopped'] else ''})")
    if "converted" in summary:
        bad = [f"{mode} {status}" for mode, status in summary["converted"]
               if status != "converted"]
        parts.append(f"converted {len(summary['converted'])} modes"
                     + (f" ({', '.join(bad)})" if bad else ""))
    parts.append("bundled")
    return f"{job.name}: {', '.join(parts)}, {summary['seconds']:.1f} s"


def level_difference(a: np.ndarray, b: np.ndarray, step: float) -> int:
    """The largest difference in quantization levels between two dequantized outputs of the
    same integer tensor: (q - zero_point) * step is an integer multiple of the step, so
    rounding recovers the level exactly despite float32 noise."""
    return int(np.max(np.abs(np.rint(a / step) - np.rint(b / step))))


def compare_targets(out: Path, results: list, target: str, baseline: str) -> None:
    """Add `vs_<baseline>` metrics to each of `target`'s records: the largest difference from
    the baseline's outputs, in output steps for integer variants, where both were saved. Two
    implementations of the same reference kernels may differ by one rounding: an integer
    variant more than one step apart fails."""
    saved = {(r["id"], r["target"]): r.get("outputs") for r in results}
    for r in results:
        other = saved.get((r["id"], baseline))
        if r["target"] != target or r["status"] not in ("pass", "fail") or not (
                r.get("outputs") and other):
            continue
        mine = np.load(out / r["outputs"], allow_pickle=False).astype(np.float64)
        theirs = np.load(out / other, allow_pickle=False).astype(np.float64)
        if mine.shape != theirs.shape:
            continue
        diff = float(np.max(np.abs(mine - theirs))) if mine.size else 0.0
        step = (r.get("tolerance") or {}).get("output_step")
        block = {"max_abs": diff, "steps": None}
        r["metrics"][f"vs_{baseline}"] = block
        if step and r["mode"] in ("int8", "int16x8") and mine.size:
            block["steps"] = level_difference(mine, theirs, step)
            ok = block["steps"] <= 1
            r["checks"].append({"name": f"vs {baseline} (steps)", "value": block["steps"],
                                "bound": 1.0, "ok": ok})
            if not ok:
                r["status"] = "fail"
                r["reason"] = "; ".join(filter(None, [
                    r.get("reason"), f"{block['steps']} output steps from {baseline} "
                    f"(bound 1)"]))


def _boundary(bundle, out: Path, r: dict, boundary: dict, steps: list) -> dict:
    """The boundary analysis of one result: the bundle's files verified by sha256, the
    variant's outputs of the reference's shape."""
    try:
        preacts = [bundle.array(p, sha, f"models.{r['model']}.boundary.preact")
                   for p, sha in zip(boundary["preact"], boundary["preact_sha256"], strict=True)]
        model = bundle.model(r["model"])
        ref = bundle.array(model["reference"], model["reference_sha256"],
                           f"models.{r['model']}.reference")
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    try:
        variant = np.load(out / r["outputs"], allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgepipeError(f"{out / r['outputs']}: not a readable .npy ({one_line(e)}); rerun "
                            "`edgepipe parity` on the run folder.") from None
    n = len(ref)
    if variant.shape != ref.shape or any(p.ndim == 0 or len(p) != n for p in preacts):
        raise EdgepipeError(f"{out / r['outputs']} holds shape {variant.shape} where the "
                            f"reference holds {ref.shape} (or a boundary file disagrees); it is "
                            "not this bundle's output: rerun `edgepipe parity --force`.")
    return analyse(preacts, steps, boundary["kink"], variant, ref)


def collect(out: Path, stages: Stages | None = None) -> dict:
    """Merge per-target results, add the boundary analysis, write results.json, junit.xml and
    report.html; return the merged document. With `stages`, reuse them when neither the
    manifest, the results nor the code changed."""
    manifest_path = out / "manifest.json"
    key = digest("collect", code_version("pipeline", "device_tests"), sha256_file(manifest_path),
                 {p.name: sha256_file(p) for p in sorted((out / "results").glob("*.json"))})
    if stages is not None and stages.fresh("collect", key):
        return json.loads((out / "results.json").read_text())
    merged = _merge(out, manifest_path)
    if stages is not None:
        stages.record("collect", key, ["results.json", "junit.xml", "report.html"])
        stages.save()
    return merged


def _merge(out: Path, manifest_path: Path) -> dict:
    from .junit import write_junit
    from .report import write_report

    try:
        bundle = load_bundle(out)  # every field checked, every file verified as it is read
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    manifest = bundle.manifest
    targets, results = {}, []
    loaded = [(read_results(p), p) for p in sorted((out / "results").glob("*.json"))]
    for doc, path in sorted(loaded, key=lambda pair: order_key(pair[0]["target"])):
        targets[doc["target"]] = {k: doc.get(k) for k in ("runtime", "platform", "seconds")}
        for r in doc["results"]:
            if r.get("outputs"):  # relative to the results file: make it relative to the run
                try:
                    r["outputs"] = (path.parent / r["outputs"]).resolve().relative_to(
                        out.resolve()).as_posix()
                except ValueError:  # a results file may come from a board: trust no path
                    r["outputs"] = None
        results += doc["results"]
    for r in results:
        boundary = manifest["models"].get(r["model"], {}).get("boundary")
        steps = (boundary or {}).get("input_steps", {}).get(r["mode"])
        if boundary and steps and r.get("outputs") and isinstance(r.get("metrics"), dict):
            r["metrics"]["boundary"] = _boundary(bundle, out, r, boundary, steps)
    compare_targets(out, results, "tflm", "host-ref")
    counts = {s: sum(r["status"] == s for r in results)
              for s in ("pass", "fail", "unsupported", "error")}
    # An entry with no result on a target that ran is not a pass: the run is incomplete.
    have = {(r["id"], r["target"]) for r in results}
    counts["missing"] = sum((e["id"], t) not in have for e in manifest["entries"] for t in targets)
    ok = counts["fail"] == 0 and counts["error"] == 0 and counts["missing"] == 0
    merged = {"schema_version": 1, "manifest_sha256": sha256_file(manifest_path),
              "targets": targets, "results": results, "summary": {**counts, "ok": ok}}
    write_json(out / "results.json", merged)
    write_junit(out, merged)
    write_report(out)
    return merged
