"""A tiny real bundle (docs/bundle.md) for the tests of the light side: runner, targets.

Two tiny Keras 3 models (a regression MLP and a softmax classifier) are trained and converted to
float32 and full-int8 (int8 I/O) with `TFLiteConverter.from_keras_model`; a copy of the MLP with a
fixed batch of 1 forces the per-sample path; one entry is "unsupported" as the converter reports.
"""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
UNSUPPORTED_REASON = "op GREATER has no int16 kernel (TF 2.21 cannot quantize it to int16x8)"
FAILED_REASON = "ConverterError: needs TF op MatrixInverse in layer 'my_inverse'"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def put_array(root: Path, rel: str, array: np.ndarray) -> str:
    """Write `array` as `root/rel` and return its sha256."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return sha256_file(path)


def read_manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def write_manifest(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def entry_of(manifest: dict, entry_id: str) -> dict:
    return next(e for e in manifest["entries"] if e["id"] == entry_id)


def by_id(document: dict) -> dict:
    return {record["id"]: record for record in document["results"]}


def make_data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x_reg = rng.standard_normal((240, 4)).astype(np.float32)
    y_reg = x_reg @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.5 * np.sin(3 * x_reg[:, 0])
    y_reg = y_reg + 0.1 * rng.standard_normal(240)
    y_reg = ((y_reg - y_reg[:192].mean()) / y_reg[:192].std()).astype(np.float32)
    x_cls = rng.standard_normal((300, 6)).astype(np.float32)
    y_cls = (x_cls @ rng.standard_normal((6, 3))).argmax(axis=1).astype(np.int64)
    return {"reg": (x_reg[:192], y_reg[:192], x_reg[192:], y_reg[192:]),
            "cls": (x_cls[:240], y_cls[:240], x_cls[240:], y_cls[240:])}


def make_models(data: dict) -> dict:
    import keras

    keras.utils.set_random_seed(0)

    def mlp(batch_size=None):
        inputs = keras.Input((4,), batch_size=batch_size)
        hidden = keras.layers.Dense(16, activation="tanh")(inputs)
        return keras.Model(inputs, keras.layers.Dense(1)(hidden))

    reg = mlp()
    reg.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    reg.fit(data["reg"][0], data["reg"][1], epochs=40, batch_size=32, verbose=0)
    fixed = mlp(batch_size=1)
    fixed.set_weights(reg.get_weights())

    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    clf = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    clf.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    clf.fit(data["cls"][0], data["cls"][1], epochs=40, batch_size=32, verbose=0)
    return {"mlp": reg, "mlp_fixed": fixed, "clf": clf}


def convert(model, mode: str, representative: np.ndarray) -> bytes:
    """`model` as a .tflite in `mode` (float32, float16, dynamic or int8 with int8 I/O)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        converter.representative_dataset = lambda: ([representative[i:i + 1]]
                                                     for i in range(len(representative)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": int8 I/O takes its scale from the
        # representative data, which is what we want here.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def _output_step(content: bytes) -> float:
    from ai_edge_litert.interpreter import Interpreter

    return float(Interpreter(model_content=content).get_output_details()[0]["quantization"][0])


def _tolerance(task: str, mode: str, step: float | None) -> dict:
    if mode == "float32":
        return {"max_abs": 1e-4, "max_rel": 1e-4, "task_delta": 1e-3,
                "min_top1_agreement": 1.0 if task == "classification" else None,
                "derivation": "float32: rounding only"}
    if task == "classification":
        # The softmax output step is 1/256, finer than the error the int8 layers before it add.
        return {"max_abs": 0.1, "max_rel": None, "output_step": step, "steps": 0.1 / step,
                "task_delta": 0.05, "min_top1_agreement": 0.9,
                "derivation": "int8 softmax: 0.1 in probability (test bundle)"}
    return {"max_abs": 4 * step, "max_rel": None, "output_step": step, "steps": 4.0,
            "task_delta": 0.05, "min_top1_agreement": None,
            "derivation": "int8: 4 output steps (test bundle)"}


def build_bundle(root: Path, data: dict, models: dict) -> dict:
    """Write a schema-1 bundle for the three models; returns the manifest."""
    manifest = {"schema_version": 1, "created_by": "tests/test_device_runner.py",
                "versions": {}, "seed": 0, "datasets": {}, "models": {}, "entries": []}
    tasks = {"reg": "regression", "cls": "classification"}
    for name, (_, _, x_test, y_test) in data.items():
        manifest["datasets"][name] = {
            "task": tasks[name],
            "inputs": f"data/{name}.inputs.npy",
            "inputs_sha256": put_array(root, f"data/{name}.inputs.npy", x_test),
            "labels": f"data/{name}.labels.npy",
            "labels_sha256": put_array(root, f"data/{name}.labels.npy", y_test),
            "samples": int(len(x_test)),
            "y_mean": 0.0 if name == "reg" else None, "y_std": 2.5 if name == "reg" else None,
            "classes": 3 if name == "cls" else None, "sha256": {}}
    for model_name, model in models.items():
        dataset = "cls" if model_name == "clf" else "reg"
        x_train, x_test = data[dataset][0], data[dataset][2]
        rel_ref = f"reference/{model_name}.npy"
        reference = np.asarray(model.predict(x_test, batch_size=len(x_test), verbose=0),
                               dtype=np.float32)
        manifest["models"][model_name] = {
            "dataset": dataset, "activation": "tanh", "family": "mlp", "reference": rel_ref,
            "reference_sha256": put_array(root, rel_ref, reference), "keras_sha256": "0" * 64}
        for mode in ("float32", "int8"):
            content = convert(model, mode, x_train[:100])
            rel = f"tflite/{model_name}.{mode}.tflite"
            (root / "tflite").mkdir(exist_ok=True)
            (root / rel).write_bytes(content)
            step = _output_step(content) if mode == "int8" else None
            manifest["entries"].append({
                "id": f"{model_name}-{mode}", "model": model_name, "mode": mode,
                "status": "converted", "reason": "", "tflite": rel,
                "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content),
                "dataset": dataset, "reference": rel_ref, "expected_ops": [],
                "tolerance": _tolerance(manifest["datasets"][dataset]["task"], mode, step)})
    manifest["entries"].append({
        "id": "mlp-int16x8", "model": "mlp", "mode": "int16x8", "status": "unsupported",
        "reason": UNSUPPORTED_REASON, "tflite": None, "sha256": None, "dataset": "reg",
        "reference": "reference/mlp.npy", "expected_ops": [], "tolerance": None})
    write_manifest(root, manifest)
    return manifest
