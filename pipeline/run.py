"""`edgepipe run`: train -> audit and convert every mode -> bundle -> parity -> reports.

The run folder is the bundle (docs/bundle.md) plus the results of every target.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.errors import EdgepipeError
from ..models.files import sha256_file, write_json
from ..models.zoo import ZOO
from .budgets import apply_budgets
from .bundle import dataset_block, entry, model_block, write_manifest
from .config import RunConfig
from .targets import TargetOptions, check_target, order_key, results_path, run_target


def train_stage(config: RunConfig, out: Path, console) -> None:
    from ..models.datasets import load_builtin
    from ..models.training import TrainConfig
    from .training_progress import train_with_progress

    specs = [ZOO[m] for m in config.models]
    data = {s.dataset: load_builtin(s.dataset, config.seed) for s in specs}
    train_with_progress([(s, data[s.dataset]) for s in specs],
                        TrainConfig(epochs=config.epochs, seed=config.seed), out / "models",
                        console)


@dataclass(frozen=True)
class BundleJob:
    """One model to convert and bundle, with its data and where its samples came from."""

    name: str
    keras_path: Path
    model: object
    data: object  # models.datasets.Dataset
    representative: np.ndarray
    representative_source: str
    activation: str  # manifest models.<name>.activation / family
    family: str


def zoo_jobs(config: RunConfig, out: Path) -> list[BundleJob]:
    """The zoo models train_stage wrote, with the data their training records name."""
    from ..models.loading import load_keras
    from .conversion import model_data

    jobs = []
    for name in config.models:
        keras_path = out / "models" / f"{name}.keras"
        model = load_keras(keras_path)
        md = model_data(model, keras_path, None, config.rep_samples, need_rep=True)
        jobs.append(BundleJob(name, keras_path, model, md.dataset, md.representative,
                              md.representative_source, ZOO[name].activation,
                              ZOO[name].family.name))
    return jobs


def user_jobs(config: RunConfig) -> list[BundleJob]:
    """The user's own trained models (`--model`, `[run] keras`) on the user's .npz, as given:
    x_train calibrates, x_test is the test split. Everything is loaded and checked first."""
    from ..converters.representative import check_representative
    from ..models.datasets import Task, load_npz_as_given
    from ..models.loading import load_keras, single_io

    data = load_npz_as_given(Path(config.data), config.seed)
    order = np.random.default_rng(config.seed).permutation(len(data.x_train))
    rep, _ = check_representative(data.x_train[order][:config.rep_samples], data.input_shape,
                                  f"{config.data} x_train")
    source = f"{data.name} x_train (seed {config.seed})"
    jobs = []
    for name, path in config.user_models.items():
        model = load_keras(Path(path))
        in_shape, out_shape = single_io(model, path)
        if len(in_shape) != len(data.input_shape) or any(
                a is not None and a != b for a, b in zip(in_shape, data.input_shape, strict=True)):
            raise EdgepipeError(f"{path} takes samples of shape {in_shape} but x_train in "
                                f"{config.data} has samples of shape {data.input_shape}; give "
                                "data shaped as the model's input.")
        width = int(np.prod([d or 1 for d in out_shape]))
        if data.task is Task.CLASSIFICATION and (len(out_shape) != 1
                                                 or width < data.num_outputs):
            raise EdgepipeError(f"{path} outputs shape {out_shape} per sample but the integer "
                                f"labels in {config.data} name {data.num_outputs} classes; a "
                                "classifier needs one output per class (float labels mean "
                                "regression).")
        if data.task is Task.REGRESSION and width != 1:
            raise EdgepipeError(f"{path} outputs shape {out_shape} per sample but the float "
                                f"targets in {config.data} are one number per sample; integer "
                                "labels would mean classification.")
        jobs.append(BundleJob(name, Path(path), model, data, rep, source, "custom", "user"))
    return jobs


def convert_and_bundle(config: RunConfig, out: Path, console, debug: bool) -> dict:
    from ..converters.variants import convert_model

    jobs = user_jobs(config) if config.keras else zoo_jobs(config, out)
    datasets, models, entries = {}, {}, []
    for job in jobs:
        data, rep = job.data, job.representative
        console.print(f"converting {job.name}: {', '.join(m.value for m in config.modes)}",
                      highlight=False)
        variants = convert_model(job.model, job.name, config.modes, out / "tflite", rep,
                                 job.representative_source, data.x_test,
                                 f"{data.name} test split ({len(data.x_test)} samples)", debug)
        if data.name not in datasets:
            datasets[data.name] = dataset_block(out, data)
        models[job.name], reference = model_block(out, job.name, job.activation, job.family,
                                                  job.model, data, job.keras_path, rep)
        for v in variants:
            entries.append(entry(out, v, job.model, data, reference, rep,
                                 config.tolerances.get(job.name, {})))
    return write_manifest(out, datasets, models, entries, config.seed)


def parity_stage(out: Path, targets, console, debug: bool = False,
                 options: TargetOptions | None = None, budgets: dict | None = None) -> None:
    """Run every target on the bundle, one after the other; each runner is a child process (or
    a board): the interpreter is native code, and a crash must not take the pipeline down.
    Budgets are applied to each target's results as they arrive."""
    manifest = json.loads((out / "manifest.json").read_text())
    for target in targets:
        check_target(target)
        console.print(f"parity on {target}", highlight=False)
        run_target(target, out, options or TargetOptions(), debug)
        budget = (budgets or {}).get(target)
        if budget:
            path = results_path(out, target)
            document = json.loads(path.read_text())
            apply_budgets(document, manifest, budget)
            write_json(path, document)


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


def collect(out: Path) -> dict:
    """Merge per-target results, add the boundary analysis, write results.json, junit.xml and
    report.html; return the merged document."""
    from .boundary import analyse
    from .junit import write_junit
    from .report import write_report

    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    targets, results = {}, []
    loaded = [(json.loads(p.read_text()), p) for p in sorted((out / "results").glob("*.json"))]
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
        if boundary and steps and r.get("outputs"):
            preacts = [np.load(out / p, allow_pickle=False) for p in boundary["preact"]]
            ref = np.load(out / manifest["models"][r["model"]]["reference"], allow_pickle=False)
            variant = np.load(out / r["outputs"], allow_pickle=False)
            r["metrics"]["boundary"] = analyse(preacts, steps, boundary["kink"], variant, ref)
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
