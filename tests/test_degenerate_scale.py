"""A degenerate quantization parameter (a scale below 1e-7, e.g. a SOFTMAX input whose logits
span almost nothing) is named by the audit, tensor and scale, before anything runs: LiteRT's
reference SOFTMAX aborts in its Prepare on one."""

import re

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from edgepipe.converters.modes import QuantMode
from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.converters.variants import convert_model
from edgepipe.pipeline.cli import app

runner = CliRunner()


def _classifier(weight_scale: float):
    """Dense -> Dense (logits, weights scaled by `weight_scale`) -> Softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3, name="logits")
    outputs = keras.layers.Softmax()(logits(keras.layers.Dense(8, activation="relu")(inputs)))
    model = keras.Model(inputs, outputs)
    weights, bias = logits.get_weights()
    logits.set_weights([weights * weight_scale, bias * 0.0])
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("degenerate")
    rep = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    [tiny] = convert_model(_classifier(1e-9), "tiny", [QuantMode.INT8], out, rep, "test")
    [normal] = convert_model(_classifier(1.0), "normal", [QuantMode.INT8], out, rep, "test")
    return out, tiny, normal


def test_a_softmax_input_with_a_tiny_scale_is_named_and_the_variant_failed(converted):
    out, tiny, normal = converted
    assert tiny.status == "failed", tiny.record
    model = read_tflite_file(out / "tiny.int8.tflite")
    [softmax] = [op for op in model.operators if op.name == "SOFTMAX"]
    [logits] = model.inputs_of(softmax)
    assert 0 < logits.scales[0] < 1e-7  # the case the audit is for
    problem = next(p for p in tiny.record["audit"]["problems"] if repr(logits.name) in p)
    assert problem in tiny.reason
    assert f"read by op {softmax.index} (SOFTMAX)" in problem
    assert float(re.search(r"quantization scale ([0-9.e+-]+)", problem).group(1)) == \
        pytest.approx(logits.scales[0], rel=1e-2)
    assert "below 1e-07" in problem
    # The same model with ordinary weights: nothing named.
    assert normal.status == "converted", normal.reason
    assert not normal.record["audit"]["problems"]


def test_check_names_it_from_the_file_alone(converted):
    out, _, _ = converted
    result = runner.invoke(app, ["check", str(out / "tiny.int8.tflite")],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "(SOFTMAX)" in result.stderr and "below 1e-07" in result.stderr
