"""A user's model of real size: `edgepipe run --model` on a MobileNetV3Small, stage by stage.

The model is built the way a user builds one: `keras.applications.MobileNetV3Small` at 96x96x3,
`weights=None`, 10 classes, its own preprocessing (inputs 0..255), trained for a few epochs, then
its BatchNorm statistics set from the data (one pass in training mode with momentum 0: every
moving mean and variance becomes the statistics of its input over the training split, instead
of the 0/1 of a fresh layer). The data are scikit-learn's digits (shipped with it: no download),
upscaled from 8x8 to 96x96 and given three differently weighted channels.

Each stage is timed from outside the pipeline (its `run` wrapped in the process that runs
`edgepipe run`), so the same timing works on any edgepipe version (`PYTHONPATH=/tmp/before`
for the code before a change); a run folder's `.edgepipe/stages.json` records the same seconds
since they were added there.

    python bench/mobilenet.py make DIR [--test N]         # DIR/mobilenet.keras, DIR/mobilenet.npz
    python bench/mobilenet.py time DIR OUT [--targets T] [--jobs N] [--no-repair]
                                                          # prints the stage seconds (JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL, DATA = "mobilenet.keras", "mobilenet.npz"
SIZE, CLASSES = 96, 10
TRAIN, TEST = 512, 256
EPOCHS = 4
TARGETS = "host,host-ref,tflm"
_TIMES = "EDGEPIPE_BENCH_STAGE_TIMES"  # the file each timed stage appends its seconds to


def make_data(seed: int = 0, test: int = TEST) -> dict:
    """The digits upscaled to SIZE x SIZE x 3 (values 0..255, float32): TRAIN and `test`
    samples (at most 1797 in all)."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:TRAIN + test]
    images = digits.images[order] / 16.0  # 0..1, (n, 8, 8)
    big = zoom(images, (1, SIZE / 8, SIZE / 8), order=1).clip(0.0, 1.0)
    tint = np.array([1.0, 0.8, 0.6], np.float32)  # channels that differ, as a photo's do
    x = (255.0 * big[..., None] * tint).astype(np.float32)
    y = digits.target[order].astype(np.int64)
    return {"x_train": x[:TRAIN], "y_train": y[:TRAIN], "x_test": x[TRAIN:],
            "y_test": y[TRAIN:]}


def set_batchnorm_statistics(model, x: np.ndarray, batch: int = 256) -> None:
    """Every BatchNormalization's moving mean and variance set to its input's statistics on `x`
    (the mean of per-batch statistics over `batch`-sized batches), as fine-tuning would leave
    them: one pass in training mode with momentum 0 per batch, averaged."""
    import keras

    bns = [layer for layer in model._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    sums = None
    batches = range(0, len(x), batch)
    try:
        for bn in bns:
            bn.momentum = 0.0
        for start in batches:
            model(x[start:start + batch], training=True)
            stats = [(np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)) for bn in bns]
            sums = stats if sums is None else [(m + a, v + b)
                                              for (m, v), (a, b) in zip(sums, stats, strict=True)]
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
    for bn, (m, v) in zip(bns, sums, strict=True):
        bn.moving_mean.assign(m / len(batches))
        bn.moving_variance.assign(v / len(batches))


def make(folder: Path, seed: int = 0, epochs: int = EPOCHS, test: int = TEST
         ) -> tuple[Path, Path]:
    """Write FOLDER/mobilenet.keras and FOLDER/mobilenet.npz (`test` test samples); return
    their paths."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = make_data(seed, test)
    np.savez(folder / DATA, **data)
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(input_shape=(SIZE, SIZE, 3), weights=None,
                                                classes=CLASSES, include_preprocessing=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=32, verbose=0)
    set_batchnorm_statistics(model, data["x_train"])
    model.save(folder / MODEL)
    return folder / MODEL, folder / DATA


def _timed(stage: str, fn):
    def run(job, shared):
        started = time.perf_counter()
        try:
            return fn(job, shared)
        finally:
            with open(os.environ[_TIMES], "a") as f:
                f.write(json.dumps({"stage": stage, "model": job.name,
                                    "seconds": time.perf_counter() - started}) + "\n")
    return run


def _run_timed(args: list[str]) -> int:
    """`edgepipe ARGS` in this process with every build stage's `run` timed (a job of one model
    runs in this process), and the parity stage too."""
    import importlib

    from edgepipe.pipeline import build, cli, run

    for stage, name in build.STAGE_MODULES.items():
        module = importlib.import_module(name)
        module.run = _timed(stage, module.run)
    parity = run.parity_stage

    def timed_parity(ctx):
        started = time.perf_counter()
        try:
            return parity(ctx)
        finally:
            with open(os.environ[_TIMES], "a") as f:
                f.write(json.dumps({"stage": "parity",
                                    "seconds": time.perf_counter() - started}) + "\n")
    run.parity_stage = timed_parity
    return cli.main(args)


def time_run(folder: Path, out: Path, targets: str = TARGETS, jobs: int = 1,
             python: str = sys.executable, env: dict | None = None, extra=()) -> dict:
    """One `edgepipe run --model --data --force` of FOLDER's model into OUT, in a child process:
    {"wall": s, "train"/"convert"/"bundle"/"parity": s, "returncode": n}. `env`: variables
    added (PYTHONPATH to time another edgepipe); `extra`: more options (e.g. --no-repair: the
    model's int8 variant fails its bounds, and the repair search after the build stages takes
    minutes)."""
    folder, out = Path(folder), Path(out)
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as times:
        cmd = [python, str(Path(__file__).resolve()), "_run", "--", "run", "--model",
               str(folder / MODEL), "--data", str(folder / DATA), "--targets", targets,
               "--out", str(out), "--jobs", str(jobs), "--force", *extra]
        started = time.perf_counter()
        done = subprocess.run(cmd, env={**os.environ, **(env or {}), _TIMES: times.name},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False)
        result = {"wall": time.perf_counter() - started, "returncode": done.returncode}
        for line in times.read().splitlines():
            record = json.loads(line)
            result[record["stage"]] = result.get(record["stage"], 0.0) + record["seconds"]
    result["log"] = done.stdout[-4000:]
    return result


def section(work: Path, repeats: int = 1, python: str = sys.executable) -> tuple[dict, list]:
    """`make bench`'s rows: the bundle stage's seconds against the convert stage's on this model
    (target: at most 1), medians over `repeats` cold runs (without the repair search, which
    is not a build stage)."""
    import statistics

    from bench.bench import figure

    made = Path(work) / "mobilenet"
    if not (made / MODEL).is_file():
        subprocess.run([python, str(Path(__file__).resolve()), "make", str(made)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = [time_run(made, Path(work) / f"mobilenet-run{i}", python=python,
                     extra=["--no-repair"]) for i in range(repeats)]
    for r in runs:
        if r["returncode"] not in (0, 1):  # 1: a variant failed its bounds, as expected here
            raise RuntimeError(f"edgepipe run on MobileNetV3Small exited {r['returncode']}:\n"
                               f"{r['log']}")
    med = {k: statistics.median(r.get(k, 0.0) for r in runs)
           for k in ("wall", "convert", "bundle", "parity")}
    rows = [figure("user model", "MobileNetV3Small 96x96: bundle stage", med["bundle"],
                   med["convert"], "convert stage", "s", at_most=1.0,
                   note=f"run {med['wall']:.0f} s on {TARGETS}")]
    return {"runs": [{k: v for k, v in r.items() if k != "log"} for r in runs]}, rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        return _run_timed(sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("make")
    made.add_argument("folder", type=Path)
    made.add_argument("--test", type=int, default=TEST, help="test samples (default %(default)s)")
    timed = sub.add_parser("time")
    timed.add_argument("folder", type=Path)
    timed.add_argument("out", type=Path)
    timed.add_argument("--targets", default=TARGETS)
    timed.add_argument("--jobs", type=int, default=1)
    timed.add_argument("--no-repair", action="store_true")
    args = parser.parse_args()
    if args.command == "make":
        print(*make(args.folder, test=args.test))
        return 0
    result = time_run(args.folder, args.out, args.targets, args.jobs,
                      extra=["--no-repair"] if args.no_repair else [])
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=1))
    if result["returncode"] not in (0, 1):
        print(result["log"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
