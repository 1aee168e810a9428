"""The script a user who does not use edgepipe would write for the zoo: the baseline that
`make bench` times `edgepipe run --targets host` against.

For each model: train it (the same architecture, data splits, training settings and TensorFlow
thread count as edgepipe's train stage), export one SavedModel, convert it to each mode with
the TFLite converter, and run LiteRT once, batched, on the test split. No gradient or op audit,
no forward check, no format simulation, no reference outputs, no report. It borrows from
edgepipe only the model definitions and the data splits, so both sides do the same training;
everything after training is written out here the way the TensorFlow guides write it.

    python -m bench.handwritten [--models a,b] [--modes float32,int8] [--epochs N] [--seed S]

Prints one line per model and, last, a JSON summary (seconds per phase, per model).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
REP_SAMPLES = 200  # edgepipe's default calibration size


def converter_for(saved_model: str, mode: str, rep):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if mode == "float32":
        return conv
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int16x8"):
        conv.representative_dataset = lambda: ([s[None]] for s in rep)
        if mode == "int8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int8
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int16
    return conv


def run_litert(flatbuffer: bytes, x):
    """One batched invoke on all of `x`, quantizing the input and dequantizing the output."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    scale, zero = inp["quantization"]
    if scale:
        x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min,
                    np.iinfo(inp["dtype"]).max)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    y = interpreter.get_tensor(out["index"]).astype(np.float32)
    scale, zero = out["quantization"]
    return (y - zero) * scale if scale else y


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf

    # As edgepipe's model jobs run (pipeline/workers.py one_thread): the thread count decides
    # how TensorFlow splits float reductions, hence the weights and the epoch early stopping
    # ends at. With the same count both sides train the same epochs, so the comparison is of
    # everything but training.
    tf.config.threading.set_intra_op_parallelism_threads(1)

    from edgepipe.models.architectures import build_model
    from edgepipe.models.datasets import Task, load_builtin
    from edgepipe.models.train_config import TrainConfig
    from edgepipe.models.zoo import ZOO

    names = args.models.split(",") if args.models else list(ZOO)
    modes = args.modes.split(",")
    settings = TrainConfig(epochs=args.epochs, seed=args.seed)
    phases = {"import": time.perf_counter() - start, "train": 0.0, "export": 0.0,
              "convert": 0.0, "invoke": 0.0}
    models = {}
    for name in names:
        spec = ZOO[name]
        t0 = time.perf_counter()
        data = load_builtin(spec.dataset, args.seed)
        keras.utils.set_random_seed(args.seed)
        tf.config.experimental.enable_op_determinism()
        model = build_model(spec, data.input_shape, data.num_outputs)
        regression = data.task is Task.REGRESSION
        model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate),
                      loss="mse" if regression else "sparse_categorical_crossentropy")
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience,
                                             restore_best_weights=True)
        model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                  epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True,
                  callbacks=[stop], verbose=0)
        t1 = time.perf_counter()
        rep = data.x_train[np.random.default_rng(args.seed).permutation(
            len(data.x_train))][:REP_SAMPLES]
        scores = {}
        with tempfile.TemporaryDirectory() as tmp:
            saved_model = str(Path(tmp) / "saved_model")
            model.export(saved_model, verbose=False)
            t2 = time.perf_counter()
            phases["export"] += t2 - t1
            for mode in modes:
                c0 = time.perf_counter()
                try:
                    flatbuffer = converter_for(saved_model, mode, rep).convert()
                except Exception as exc:  # a mode the converter cannot do for this model
                    scores[mode] = f"not converted: {type(exc).__name__}"
                    phases["convert"] += time.perf_counter() - c0
                    continue
                c1 = time.perf_counter()
                y = run_litert(flatbuffer, data.x_test)
                phases["convert"] += c1 - c0
                phases["invoke"] += time.perf_counter() - c1
                scores[mode] = (float((y.argmax(axis=1) == data.y_test).mean()) if not regression
                                else float(np.abs(y.ravel() - data.y_test.ravel()).mean()))
        phases["train"] += t1 - t0
        models[name] = {"seconds": round(time.perf_counter() - t0, 2), "scores": scores}
        print(f"{name}: {models[name]['seconds']} s, {scores}", file=sys.stderr, flush=True)
    phases = {k: round(v, 2) for k, v in phases.items()}
    print(json.dumps({"seconds": round(time.perf_counter() - start, 2), "phases": phases,
                      "models": models}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
