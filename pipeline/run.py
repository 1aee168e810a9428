"""`edgepipe run`: train -> audit and convert every mode -> bundle -> parity -> reports.

The run folder is the bundle (docs/bundle.md) plus the results of every target.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..models.errors import EdgepipeError
from ..models.files import sha256_file, write_json
from ..models.zoo import ZOO
from .bundle import dataset_block, entry, model_block, write_manifest
from .config import TARGET_KERNELS, RunConfig


def train_stage(config: RunConfig, out: Path, console) -> None:
    from ..models.datasets import load_builtin
    from ..models.training import TrainConfig
    from .training_progress import train_with_progress

    specs = [ZOO[m] for m in config.models]
    data = {s.dataset: load_builtin(s.dataset, config.seed) for s in specs}
    train_with_progress([(s, data[s.dataset]) for s in specs],
                        TrainConfig(epochs=config.epochs, seed=config.seed), out / "models",
                        console)


def convert_and_bundle(config: RunConfig, out: Path, console, debug: bool) -> dict:
    from ..converters.variants import convert_model
    from ..models.loading import load_keras
    from .conversion import model_data

    datasets, models, entries = {}, {}, []
    for name in config.models:
        keras_path = out / "models" / f"{name}.keras"
        model = load_keras(keras_path)
        md = model_data(model, keras_path, None, config.rep_samples, need_rep=True)
        data, rep = md.dataset, md.representative  # the record was written by train_stage
        console.print(f"converting {name}: {', '.join(m.value for m in config.modes)}",
                      highlight=False)
        variants = convert_model(model, name, config.modes, out / "tflite", rep,
                                 md.representative_source, md.check, md.check_source, debug)
        if data.name not in datasets:
            datasets[data.name] = dataset_block(out, data)
        models[name], reference = model_block(out, name, ZOO[name], model, data, keras_path, rep)
        for v in variants:
            entries.append(entry(out, v, model, data, reference, rep,
                                 config.tolerances.get(name, {})))
    return write_manifest(out, datasets, models, entries, config.seed)


def parity_stage(out: Path, targets, console, debug: bool = False) -> None:
    """Run the device_tests runner once per target, in a child process: the interpreter is
    native code, and a crash must not take the pipeline down."""
    (out / "results").mkdir(exist_ok=True)
    for target in targets:
        if target not in TARGET_KERNELS:
            raise EdgepipeError(f"Unknown target {target!r}. Valid targets: "
                                f"{', '.join(TARGET_KERNELS)}.")
        console.print(f"parity on {target}", highlight=False)
        cmd = [sys.executable, "-m", "edgepipe.device_tests.runner", str(out),
               "--kernels", TARGET_KERNELS[target], "--target", target,
               "--out", str(out / "results" / f"{target}.json"), "--save-outputs"]
        done = subprocess.run(cmd, capture_output=not debug, text=True)
        if done.returncode not in (0, 1):
            tail = (done.stderr or "").strip().splitlines()[-1:] or ["(no message)"]
            raise EdgepipeError(f"The parity runner failed on {target} (exit "
                                f"{done.returncode}): {tail[0]}")


def collect(out: Path) -> dict:
    """Merge per-target results, add the boundary analysis, write results.json, junit.xml and
    report.html; return the merged document."""
    from .boundary import analyse
    from .junit import write_junit
    from .report import write_report

    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    targets, results = {}, []
    order = list(TARGET_KERNELS)
    by_target = sorted((out / "results").glob("*.json"),
                       key=lambda p: (order.index(p.stem) if p.stem in order else len(order),
                                      p.stem))
    for path in by_target:
        doc = json.loads(path.read_text())
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
