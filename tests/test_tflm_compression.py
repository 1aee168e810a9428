"""The flash size after TFLite Micro's own compression tool (issue 18, item 4): on tflm, each
variant is LUT-compressed where that makes it smaller, the compressed model runs on TFLite Micro
on the same inputs and must give the same outputs, and the deployable table shows its size."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import needs, run_user_model

from edgepipe.converters.modes import QuantMode

HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
CLUSTERS = 16


def _mlp():
    import keras

    inp = keras.Input((64,))
    x = keras.layers.Dense(128, activation="relu", name="hidden")(inp)
    x = keras.layers.Dense(64, activation="relu", name="hidden2")(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="logits")(x))


def _cluster(model, clusters: int = CLUSTERS) -> None:
    """Every kernel snapped to `clusters` shared values, as weight clustering (tfmot's
    cluster_weights, then strip_clustering) leaves a model: centroids at the kernel's
    quantiles."""
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel = weights[0]
        centroids = np.quantile(kernel, (np.arange(clusters) + 0.5) / clusters)
        nearest = np.abs(kernel[..., None] - centroids).argmin(axis=-1)
        layer.set_weights([centroids[nearest].astype(np.float32), *weights[1:]])


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


@pytest.fixture(scope="module")
def clustered_run(tmp_path_factory, digits):
    """An MLP trained on digits, its weights clustered and fine-tuned briefly (the bias only,
    as clustering keeps the kernels shared), run in float32 and int8 on tflm."""
    needs(HAVE_TFLM, "tflite-micro is not installed: pip install 'edgepipe[micro]'")
    import keras

    x, y = digits
    root = tmp_path_factory.mktemp("clustered")
    keras.utils.set_random_seed(0)
    model = _mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=10, batch_size=32, verbose=0)
    _cluster(model)
    model.save(root / "clustered.keras")
    np.savez(root / "data.npz", x_train=x[:1400], y_train=y[:1400], x_test=x[1400:],
             y_test=y[1400:])
    out = root / "run"
    run_user_model(root / "clustered.keras", root / "data.npz", out, ["float32", "int8"],
                   ["tflm"])
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_a_clustered_model_is_smaller_after_compression_and_computes_the_same(clustered_run,
                                                                               mode):
    out, merged = clustered_run
    (record,) = [r for r in merged["results"] if r["id"] == f"clustered-{mode}"]
    block = record["metrics"]["compressed"]
    assert block["applies"], block
    print(f"\nclustered MLP {mode} on tflm: {block['original_bytes']:,} bytes, "
          f"{block['bytes']:,} LUT-compressed; arena {record['metrics']['arena_bytes']:,} -> "
          f"{block['arena_bytes']:,}; max_abs vs uncompressed "
          f"{block['max_abs_vs_uncompressed']}")
    assert block["bytes"] < block["original_bytes"]
    # Every Dense kernel holds CLUSTERS values: 4-bit indices.
    assert {row["bits"] for row in block["tensors"]} == {4}, block["tensors"]
    assert block["max_abs_vs_uncompressed"] == 0.0
    (check,) = [c for c in record["checks"] if c["name"] == "lut_compressed_max_abs"]
    assert check["ok"] and record["status"] == "pass", record["reason"]
    assert (out / block["file"]).stat().st_size == block["bytes"]
    if mode == "float32":  # 32-bit values to 4-bit indices
        assert block["bytes"] < block["original_bytes"] / 3
    else:  # kernels quantized per channel get their tables per channel (one table broke them)
        assert {row["per"] for row in block["tensors"]} == {"channel (axis 0)"}
    row = next(r for r in merged["deployable"]["rows"] if r["target"] == "tflm")
    assert row["compressed_bytes"] is not None and row["compressed_bytes"] < row["bytes"]


def test_ordinary_weights_are_not_compressed_and_say_why(digits, tmp_path):
    """Trained int8 weights hold far more than 2**7 values: the tables would cost more."""
    needs(HAVE_TFLM, "tflite-micro is not installed: pip install 'edgepipe[micro]'")
    import keras

    from edgepipe.converters.variants import convert_model
    from edgepipe.device_tests.tflm_compression import compress

    x, y = digits
    keras.utils.set_random_seed(0)
    model = _mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=3, batch_size=32, verbose=0)
    (variant,) = convert_model(model, "mlp", [QuantMode.INT8], tmp_path, x[:200])
    packed, block = compress(variant.path.read_bytes())
    assert packed is None and not block["applies"]
    assert "distinct values" in block["why"] and "128" in block["why"], block
