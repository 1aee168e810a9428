"""Batched parity: one invoke of a whole input set gives, bit for bit, the outputs of a
per-sample loop.

The runner invokes once for the whole set when the model's batch dimension is dynamic
(`LoadedModel.run` -> "batch"). That is only an optimisation if no sample's output depends on
the others in its batch; `make bench` times the two, this proves they agree, the way the bench
compares them: np.array_equal, no tolerance.

Why exact equality holds, on both kernel sets and in every mode (measured on ai-edge-litert
2.3.0, XNNPACK and BUILTIN_REF): no kernel reduces across the batch dimension. Convolutions and
fully connected layers compute each output row (a sample, or a pixel of one) from that sample
alone, in the same accumulation order whatever the batch size, and the dynamic-range ("hybrid")
kernels quantize their float input per sample (TFLite's BatchQuantizeFloats, XNNPACK's qd8 per
batch row), never with one scale for the whole batch. If a runtime ever breaks this, these tests
say which variant and by how much, and the runner's batched path needs a tolerance.
"""

import numpy as np
import pytest
from tiny_bundle import read_manifest

from edgepipe.device_tests.interpreters import KERNELS, find_runtime

CNN_SAMPLES = 96  # digits test images; enough for several GEMM tiles per layer


def per_sample(model, x: np.ndarray) -> np.ndarray:
    """The loop the bench times: one invoke per sample on a batch-1 input (one model input)."""
    return np.concatenate([model._invoke([x[i:i + 1]]) for i in range(len(x))])


def assert_batched_is_per_sample(content: bytes, x: np.ndarray, kernels: str) -> None:
    model = find_runtime(None, kernels).load(content)
    assert model.batched, f"input shape_signature {model.signature}: expected a dynamic batch"
    batched, how = model.run(x)
    assert how == "batch"
    looped = per_sample(model, x)
    assert looped.shape == batched.shape
    diff = float(np.max(np.abs(batched - looped)))
    np.testing.assert_array_equal(batched, looped, err_msg=f"max |diff| {diff:g}")
    # And again batched, after the interpreter was resized to 1: the same outputs again.
    np.testing.assert_array_equal(model.run(x)[0], batched)


@pytest.fixture(scope="module")
def cnn_variants(tmp_path_factory):
    """A zoo CNN (cnn_mish: every op type Mish lowers to, besides conv/depthwise/dense/softmax)
    converted in every mode by the pipeline's own converter; untrained, seeded weights are
    enough for a question about invokes. Returns ({mode: tflite bytes}, digits test inputs)."""
    import keras

    from edgepipe.converters.modes import QuantMode
    from edgepipe.converters.variants import convert_model
    from edgepipe.models.architectures import build_model
    from edgepipe.models.datasets import load_builtin
    from edgepipe.models.zoo import ZOO

    keras.utils.set_random_seed(0)
    digits = load_builtin("digits")
    model = build_model(ZOO["cnn_mish"], digits.x_train.shape[1:], 10)
    out = tmp_path_factory.mktemp("cnn_variants")
    variants = convert_model(model, "cnn_mish", list(QuantMode), out,
                             representative=digits.x_train[:100])
    converted = {v.mode.value: v.path.read_bytes() for v in variants if v.status == "converted"}
    assert set(converted) == {m.value for m in QuantMode}, {v.mode.value: v.reason
                                                            for v in variants}
    return converted, np.ascontiguousarray(digits.x_test[:CNN_SAMPLES], dtype=np.float32)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic", "int8", "int16x8"])
def test_cnn_batched_equals_per_sample(cnn_variants, mode, kernels):
    contents, x = cnn_variants
    assert_batched_is_per_sample(contents[mode], x, kernels)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("entry_id", ["mlp-float32", "mlp-int8", "clf-float32", "clf-int8"])
def test_bundle_batched_equals_per_sample(tiny_bundle, entry_id, kernels):
    root, _, _ = tiny_bundle
    manifest = read_manifest(root)
    entry = next(e for e in manifest["entries"] if e["id"] == entry_id)
    x = np.load(root / manifest["datasets"][entry["dataset"]]["inputs"])
    assert_batched_is_per_sample((root / entry["tflite"]).read_bytes(), x, kernels)


def test_fixed_batch_model_runs_per_sample(tiny_bundle):
    """A model saved with batch size 1 cannot be resized: the runner loops, one sample at a
    time, and says so."""
    root, _, _ = tiny_bundle
    manifest = read_manifest(root)
    x = np.load(root / manifest["datasets"]["reg"]["inputs"])
    model = find_runtime(None, "default").load((root / "tflite/mlp_fixed.float32.tflite")
                                               .read_bytes())
    assert not model.batched
    outputs, how = model.run(x)
    assert how == "per-sample"
    assert outputs.shape == (len(x), 1)
