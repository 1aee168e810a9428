"""Train a zoo model on its dataset and save `<model>.keras` with a JSON training record.

Training sets the global seeds and TensorFlow's op determinism when it starts: the same seed
on the same machine and versions gives bit-identical weights.
"""

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..core.files import atomic_path, write_json
from ..core.versions import versions
from .architectures import build_model
from .datasets import Dataset, Task
from .train_config import TrainConfig
from .zoo import ModelSpec

RECORD_SCHEMA_VERSION = 1


def weights_sha256(model: keras.Model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def evaluate(model: keras.Model, data: Dataset, x: np.ndarray, y: np.ndarray) -> dict:
    pred = np.asarray(model(x, training=False))  # the splits are small: one batch
    if data.task is Task.CLASSIFICATION:
        p = np.clip(pred[np.arange(len(y)), y], 1e-12, 1.0)
        return {"loss": float(-np.log(p).mean()),
                "accuracy": float((pred.argmax(axis=1) == y).mean())}
    err = (pred - y).ravel()
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"loss": float((err ** 2).mean()),
            "r2": 1.0 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
            # in the target's own units, undoing the standardisation
            "mae": float(np.abs(err).mean() * data.y_std)}


class _EpochHook(keras.callbacks.Callback):
    def __init__(self, on_epoch):
        super().__init__()
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.on_epoch(epoch + 1, dict(logs or {}))


def fit(spec: ModelSpec, data: Dataset, config: TrainConfig,
        on_epoch: Callable[[int, dict], None] | None = None,
        activation_config: dict | None = None) -> tuple[keras.Model, dict]:
    """Train from a fresh seeded initialisation; return the model and what happened."""
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_model(spec, data.input_shape, data.num_outputs, activation_config)
    regression = data.task is Task.REGRESSION
    # A whole epoch per call of the compiled train (and test) function: Keras' Python loop
    # around each batch was a tenth of the zoo's training time; the weights are bit-identical.
    epoch_steps = math.ceil(len(data.x_train) / config.batch_size)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="mse" if regression else "sparse_categorical_crossentropy",
                  steps_per_execution=epoch_steps)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience,
                                         restore_best_weights=True)
    callbacks = [stop] + ([_EpochHook(on_epoch)] if on_epoch else [])
    start = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                        epochs=config.epochs, batch_size=config.batch_size, shuffle=True,
                        callbacks=callbacks, verbose=0)
    val_losses = history.history["val_loss"]
    return model, {
        "epochs_run": len(val_losses),
        "best_epoch": int(np.argmin(val_losses)) + 1,
        "early_stopped": len(val_losses) < config.epochs,
        "seconds": round(time.perf_counter() - start, 2),
    }


def train(spec: ModelSpec, data: Dataset, config: TrainConfig, out_dir: Path,
          on_epoch: Callable[[int, dict], None] | None = None,
          activation_config: dict | None = None) -> dict:
    """Train, evaluate every split, save `<model>.keras` and `<model>.json`; return the record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, run = fit(spec, data, config, on_epoch, activation_config)
    record = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": spec.name,
        "family": spec.family.name,
        "activation": spec.activation,
        "activation_config": activation_config or {},
        "keras_file": f"{spec.name}.keras",
        "weights_sha256": weights_sha256(model),
        "dataset": data.describe(),
        "config": asdict(config),
        "training": run,
        "metrics": {split: evaluate(model, data, getattr(data, f"x_{split}"),
                                    getattr(data, f"y_{split}"))
                    for split in ("train", "val", "test")},
        "versions": versions(),
    }
    with atomic_path(out_dir / f"{spec.name}.keras") as tmp:
        model.save(tmp)
    write_json(out_dir / f"{spec.name}.json", record)
    return record
