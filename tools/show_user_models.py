"""Users' own models, as they really come (issue 14): build one model of each kind the way a
user writes it, run the edgepipe command they would run, and print a Markdown table (the
command, its exit code, the first line it printed, the statuses) and the tolerance derivations.

    .venv/bin/python tools/show_user_models.py --out /tmp/show [--only CASE ...]

Everything is built here from data shipped with installed packages (scikit-learn's digits and
diabetes); nothing is downloaded. MobileNetV3Small is built with weights=None; its BatchNorm
statistics are made realistic by a forward pass over data, then it is trained briefly.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from edgepipe.device_tests.schema import RunFolder

EDGEPIPE = [sys.executable, "-m", "edgepipe.pipeline.cli"]

# The user's layers, written the way the TensorFlow tutorials and blogs write them.
LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    class Swish(tf.keras.layers.Layer):
        def __init__(self):
            super(Swish, self).__init__()

        def call(self, x):
            return x * tf.sigmoid(x)


    @tf.custom_gradient
    def leaky_clip(x):
        y = tf.where(x > -0.5, x, 0.1 * (x + 0.5) - 0.5)

        def grad(dy):
            return dy * tf.where(x > -0.5, 1.0, 0.1)

        return y, grad


    class LeakyClip(tf.keras.layers.Layer):
        def __init__(self):
            super(LeakyClip, self).__init__()

        def call(self, x):
            return leaky_clip(x)

        def get_config(self):
            return super().get_config()


    class CastStep(tf.keras.layers.Layer):
        def __init__(self):
            super(CastStep, self).__init__()

        def call(self, x):
            return tf.cast(tf.greater(x, 0), tf.float32)


    class WhereStep(tf.keras.layers.Layer):
        def __init__(self):
            super(WhereStep, self).__init__()

        def call(self, x):
            return tf.where(x > 0.25, 1.0, 0.0)
''')


def _import_layers(root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("show_layers", root / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits(root: Path, size: int = 8, channels: int = 1, scale: float = 1.0) -> Path:
    """sklearn's digits as a user would save them: x in [0, scale], integer labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0 * scale).astype(np.float32).reshape(-1, 8, 8, 1)
    if size != 8:
        x = np.repeat(np.repeat(x, size // 8, axis=1), size // 8, axis=2)
    x = np.repeat(x, channels, axis=3)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order].astype(np.int64)
    path = root / f"digits{size}x{channels}.npz"
    np.savez(path, x_train=x[:1500], y_train=y[:1500], x_test=x[1500:], y_test=y[1500:])
    np.save(root / f"digits{size}x{channels}.rep.npy", x[:200])
    return path


def _fit(model, npz: Path, epochs: int):
    import keras

    data = np.load(npz)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data["x_train"], data["y_train"], epochs=epochs, batch_size=64, verbose=0)
    return model


def build_models(root: Path) -> None:
    import keras

    layers = _import_layers(root)
    keras.utils.set_random_seed(0)
    d8 = digits(root)

    def mlp(act, name):
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(inputs)
        h = act(keras.layers.Dense(32)(h))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        _fit(model, d8, 15).save(root / f"{name}.keras")

    mlp(layers.Swish(), "tutorial_swish")
    mlp(layers.LeakyClip(), "tutorial_leaky")
    mlp(layers.CastStep(), "tutorial_cast_step")
    mlp(layers.WhereStep(), "user_step")

    # A residual block: Dense -> act -> Dense, plus the skip Add.
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    r = keras.layers.Dense(32)(keras.layers.Activation("swish")(keras.layers.Dense(32)(h)))
    h = keras.layers.Add()([h, r])
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    _fit(model, d8, 15).save(root / "residual.keras")
    model.save(root / "residual.h5")
    model.export(str(root / "residual_savedmodel"), verbose=False)

    # MobileNetV3Small at 32x32x3 (its own rescaling: pixels 0..255), weights=None: fresh (its
    # BatchNorm statistics the initial ones: a dead reference), and with the statistics of one
    # forward pass over data (momentum 0 for it), then trained 3 epochs.
    d32 = digits(root, 32, 3, scale=255.0)
    fresh = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None,
                                                classes=10)
    fresh.save(root / "mobilenet_fresh.keras")
    norms = [layer for layer in fresh.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    fresh(np.load(d32)["x_train"][:256], training=True)
    for layer in norms:
        layer.momentum = 0.99
    _fit(fresh, d32, 3).save(root / "mobilenet.keras")

    # Token ids into an Embedding: the class is whether token 7 appears.
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(1800, 16)).astype(np.int32)
    labels = (ids == 7).any(axis=1).astype(np.int64)
    np.savez(root / "tokens.npz", x_train=ids[:1500], y_train=labels[:1500],
             x_test=ids[1500:], y_test=labels[1500:])
    np.save(root / "tokens.rep.npy", ids[:200])
    inputs = keras.Input((16,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    _fit(model, root / "tokens.npz", 20).save(root / "tokens.keras")

    # A Lambda written in a notebook where `tf` was imported, saved, then loaded elsewhere.
    import tensorflow as tf  # noqa: F401  (the Lambda's global at save time)

    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dense(16)(keras.layers.Flatten()(inputs))
    h = keras.layers.Lambda(lambda t: t * tf.sigmoid(t))(h)  # noqa: F821
    keras.Model(inputs, keras.layers.Dense(10)(h)).save(root / "lambda.keras")


def _cases(root: Path, out: Path) -> list:
    """(item, what, argv): one per case of the issue."""
    co = ["--custom-objects", str(root / "layers.py")]
    d8, d32 = str(root / "digits8x1.npz"), str(root / "digits32x3.npz")
    all_targets = "host,host-ref,tflm"

    def run(model: str, data: str, name: str, *extra) -> list:
        """`edgepipe run` of one model on the three targets, into `out/name`."""
        return ["run", "--model", str(root / model), "--data", data, *extra,
                "--targets", all_targets, "--out", str(out / name)]

    return [
        ("1", "tutorial Swish (no **kwargs, unregistered)",
         run("tutorial_swish.keras", d8, "swish", *co)),
        ("1", "tutorial custom-gradient leaky (kink at -0.5)",
         run("tutorial_leaky.keras", d8, "leaky", *co)),
        ("2,3", "tutorial step tf.cast(tf.greater(x, 0))",
         run("tutorial_cast_step.keras", d8, "cast_step", *co)),
        ("2,4", "user step tf.where(x > 0.25, 1, 0)",
         run("user_step.keras", d8, "user_step", *co)),
        ("5", "residual Dense block (Add)",
         run("residual.keras", d8, "residual")),
        ("5", "MobileNetV3Small 32x32, weights=None, trained 3 epochs",
         run("mobilenet.keras", d32, "mobilenet")),
        ("6", "MobileNetV3Small fresh (constant outputs)",
         run("mobilenet_fresh.keras", d32, "mobilenet_fresh")),
        ("7", "legacy .h5", ["convert", str(root / "residual.h5"), "--mode", "all", "--rep-data",
                             str(root / "digits8x1.rep.npy"), "-o", str(out / "h5")]),
        ("7", "SavedModel folder",
         ["convert", str(root / "residual_savedmodel"), "--mode", "all", "--rep-data",
          str(root / "digits8x1.rep.npy"), "-o", str(out / "savedmodel")]),
        ("7", "an existing .tflite against its Keras model",
         ["run", "--model", str(root / "residual.keras"), "--tflite",
          str(out / "h5" / "residual.int8.tflite"), "--data", d8,
          "--targets", "host,host-ref", "--out", str(out / "given")]),
        ("8", "Embedding over int32 token ids: check",
         ["check", str(root / "tokens.keras"), "--mode", "all", "--rep-data",
          str(root / "tokens.rep.npy")]),
        ("8", "Embedding over int32 token ids: run",
         run("tokens.keras", str(root / "tokens.npz"), "tokens")),
        ("9", "convert --mode all without --rep-data",
         ["convert", str(root / "residual.keras"), "--mode", "all", "-o", str(out / "norep")]),
        ("10", "Lambda calling tf.sigmoid, --unsafe",
         ["convert", str(root / "lambda.keras"), "--unsafe", "--mode", "float32", "-o",
          str(out / "lambda")]),
    ]


def _statuses(folder: Path) -> str:
    results = RunFolder(folder).results
    if results.is_file():
        merged = json.loads(results.read_text())
        counts: dict = {}
        for r in merged["results"]:
            counts.setdefault(r["target"], {}).setdefault(r["status"], 0)
            counts[r["target"]][r["status"]] += 1
        return "; ".join(f"{t}: " + ", ".join(f"{n} {s}" for s, n in c.items())
                         for t, c in counts.items())
    records = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return ", ".join(f"{json.loads(p.read_text())['mode']} "
                     f"{json.loads(p.read_text())['status']}" for p in records)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.startswith(("I0000", "WARNING: All log", "W0000"))]
    return lines[0][:160] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="case numbers (items) to run")
    args = parser.parse_args()
    root, out = args.out / "models", args.out / "runs"  # not a run folder
    root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (root / "layers.py").write_text(LAYERS_PY)
    if not (root / "lambda.keras").is_file():
        build_models(root)
    rows = ["| item | case | command | exit | first line | statuses | seconds |",
            "|---|---|---|---|---|---|---|"]
    env = {**os.environ, "COLUMNS": "200"}
    for item, what, argv in _cases(root, out):
        if args.only and not set(item.split(",")) & set(args.only):
            continue
        started = time.perf_counter()
        done = subprocess.run([*EDGEPIPE, *argv], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        (out / f"{what[:40].replace(' ', '_').replace('/', '_')}.log").write_text(
            done.stdout + done.stderr)
        target = Path(argv[argv.index("--out") + 1]) if "--out" in argv else (
            Path(argv[argv.index("-o") + 1]) if "-o" in argv else None)
        statuses = _statuses(target) if target else ""
        shown = " ".join(a if "/" not in a else Path(a).name for a in argv)
        first = _first_line(done.stderr) or _first_line(done.stdout)
        rows.append(f"| {item} | {what} | `edgepipe {shown}` | {done.returncode} | "
                    f"{first.replace('|', '/')} | {statuses} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    for name in ("residual", "mobilenet"):
        manifest = RunFolder(out / name).manifest
        if manifest.is_file():
            print(f"\n### {name}: derived bounds and measured error")
            merged = json.loads(RunFolder(out / name).results.read_text())
            for e in json.loads(manifest.read_text())["entries"]:
                tol = e.get("tolerance") or {}
                measured = {r["target"]: (r.get("metrics") or {}).get("max_abs_error")
                            for r in merged["results"] if r["id"] == e["id"]}
                print(f"- {e['id']}: {tol.get('derivation', e.get('reason'))}; bound max_abs "
                      f"{tol.get('max_abs')}; measured max|Δ| {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
