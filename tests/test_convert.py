"""Conversion in every mode, the op audit, and what `edgepipe convert` / `check` report."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import imported_modules
from typer.testing import CliRunner

from edgepipe.converters.convert import explain_failure
from edgepipe.converters.modes import QuantMode, parse_modes
from edgepipe.converters.representative import check_representative
from edgepipe.converters.variants import convert_model
from edgepipe.core.errors import EdgepipeError
from edgepipe.models.activations import PiecewiseLinear, Step
from edgepipe.models.registry import ACTIVATIONS
from edgepipe.models.zoo import ZOO
from edgepipe.pipeline.cli import app

runner = CliRunner()
MODES = [m.value for m in QuantMode]
# What TF 2.21 cannot quantize to int16x8 (FACTS.md): an expected, documented outcome.
EXPECTED_UNSUPPORTED = {("step", "int16x8"): ("GREATER",),
                        ("hard_swish", "int16x8"): ("HARD_SWISH",)}
CASES = [pytest.param(model, mode, id=f"{model}-{mode}") for model in ZOO for mode in MODES]


@pytest.mark.parametrize("model, mode", CASES)
def test_every_zoo_variant_converts_or_is_a_documented_limit(converted_zoo, model, mode):
    out, records = converted_zoo
    record = records[(model, mode)]
    activation = ZOO[model].activation
    expected = EXPECTED_UNSUPPORTED.get((activation, mode))
    if expected:
        assert record["status"] == "unsupported", record["reason"]
        assert set(expected) <= set(record["ops"])
        assert "has no int16 kernel" in record["reason"]
        assert not (out / f"{model}.{mode}.tflite").exists()
        return
    assert record["status"] == "converted", record["reason"]
    assert record["audit"]["ok"] and not record["audit"]["problems"]
    assert {op["kind"] for op in record["audit"]["ops"]} == {"builtin"}
    ops = {op["op"] for op in record["audit"]["ops"]}
    assert set(ACTIVATIONS[activation].tflite_ops) <= ops, "the activation lowered differently"
    data = (out / record["file"]).read_bytes()
    assert len(data) == record["bytes"]
    if mode in ("int8", "int16x8"):
        io_type = "int8" if mode == "int8" else "int16"
        assert [t["dtype"] for t in record["inputs"] + record["outputs"]] == [io_type] * 2
        assert all(t["scale"][0] > 0 for t in record["inputs"] + record["outputs"])


@pytest.mark.parametrize("model", list(ZOO))
def test_float32_file_reproduces_the_keras_forward(converted_zoo, model):
    check = converted_zoo[1][(model, "float32")]["forward_check"]
    assert check["ok"] and check["max_rel_error"] <= 1e-5
    assert check["samples"] in (88, 359)  # the whole diabetes / digits test split


@pytest.mark.parametrize("model", ["mlp_piecewise", "cnn_step", "mlp_swish", "cnn_mish"])
def test_custom_gradients_are_dropped_at_export(quick_zoo, converted_zoo, model):
    layers = keras.models.load_model(quick_zoo[0] / f"{model}.keras").layers
    custom = [layer for layer in layers if isinstance(layer, (PiecewiseLinear, Step))]
    grads = converted_zoo[1][(model, "float32")]["custom_gradients"]
    # The SavedModel keeps one gradient function per custom-gradient layer; the .tflite none.
    assert len(grads["saved_model"]) == len(custom)
    assert bool(custom) == (model in ("mlp_piecewise", "cnn_step"))
    assert all(g["op_type"].startswith("CustomGradient-") for g in grads["saved_model"])
    assert grads["tflite_subgraphs"] == 1 and grads["dropped"]


def test_digits_cnn_int8_is_at_most_030_of_float32(converted_zoo):
    for act in ("swish", "piecewise", "step"):
        sizes = {m: converted_zoo[1][(f"cnn_{act}", m)]["bytes"] for m in ("float32", "int8")}
        assert sizes["int8"] <= 0.30 * sizes["float32"], sizes


@keras.saving.register_keras_serializable(package="edgepipe_tests")
class MyInverse(keras.layers.Layer):
    """Calls tf.linalg.inv: TFLite has no builtin for MatrixInverse."""

    def call(self, x):
        m = tf.reshape(x, [-1, 2, 2]) + 3.0 * tf.eye(2)
        return tf.reshape(tf.linalg.inv(m), [-1, 4])


@keras.saving.register_keras_serializable(package="edgepipe_tests")
class SignStep(keras.layers.Layer):
    """A step written as relu(sign(x)): SIGN has no int8 kernel and stays in float."""

    def call(self, x):
        return tf.nn.relu(tf.sign(x))


def _tiny_model(layer, path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="input")
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(keras.layers.Dense(4)(inputs))))
    model.save(path)
    return model


def test_missing_builtin_is_named_by_layer_and_op_and_the_batch_goes_on(quick_zoo, tmp_path):
    _tiny_model(MyInverse(name="my_inverse"), tmp_path / "inverse.keras")
    good = quick_zoo[0] / "mlp_swish.keras"
    result = runner.invoke(app, ["convert", str(tmp_path / "inverse.keras"), str(good),
                                 "--mode", "float32,int8", "--rep-data", str(tmp_path / "r.npy"),
                                 "-o", str(tmp_path / "out")], env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output  # the rep data file does not exist yet
    np.save(tmp_path / "r.npy", np.random.default_rng(0).normal(size=(50, 4)))
    result = runner.invoke(app, ["convert", str(tmp_path / "inverse.keras"),
                                 "--mode", "float32", "-o", str(tmp_path / "out")],
                           env={"COLUMNS": "250"})
    result = runner.invoke(app, ["convert", str(tmp_path / "inverse.keras"), str(good),
                                 "--mode", "float32", "-o", str(tmp_path / "out")],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    record = json.loads((tmp_path / "out" / "inverse.float32.json").read_text())
    assert record["status"] == "failed"
    assert record["ops"] == ["MatrixInverse"] and record["layers"] == ["my_inverse"]
    assert "needs TF op MatrixInverse in layer 'my_inverse'" in record["reason"]
    assert "MatrixInverse" in result.stdout and "my_inverse" in result.stdout
    assert not (tmp_path / "out" / "inverse.float32.tflite").exists()
    # ...and the other model of the batch converted.
    assert json.loads((tmp_path / "out" / "mlp_swish.float32.json").read_text())["status"] \
        == "converted"
    assert (tmp_path / "out" / "mlp_swish.float32.tflite").is_file()


def test_a_float_op_left_inside_an_int8_model_is_a_finding_of_the_audit(tmp_path):
    model = _tiny_model(SignStep(name="sign_step"), tmp_path / "sign.keras")
    rep = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    [variant] = convert_model(model, "sign", [QuantMode.INT8], tmp_path, rep, "test")
    assert variant.status == "converted"  # LiteRT runs it; integer-only targets will not
    [finding] = variant.record["findings"]
    assert "(SIGN) in subgraph 0 computes in float" in finding["message"]
    assert "inside a model meant to be fully integer" in finding["message"]
    assert finding["rewrite"] == ""  # no known rewrite for SIGN


def test_check_tflite_does_not_import_tensorflow(converted_zoo):
    path = converted_zoo[0] / "cnn_step.int8.tflite"
    code = ("from typer.testing import CliRunner\n"
            "from edgepipe.pipeline.cli import app\n"
            f"r = CliRunner().invoke(app, ['check', {str(path)!r}, '--json'])\n"
            "assert r.exit_code == 0, r.output\n")
    assert imported_modules(code, ("tensorflow", "keras")) == []


def test_check_tflite_lists_ops_kinds_and_types(converted_zoo):
    path = converted_zoo[0] / "cnn_step.int8.tflite"
    result = runner.invoke(app, ["check", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "int8" and report["audit"]["integer_only"]
    ops = {op["op"]: op for op in report["audit"]["ops"]}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "GREATER", "SELECT_V2", "SOFTMAX"} <= set(ops)
    assert ops["GREATER"]["input_types"] == ["int8", "int8"]
    assert ops["GREATER"]["output_types"] == ["bool"]


def test_check_keras_shows_dropped_gradients_and_equal_forward(quick_zoo):
    result = runner.invoke(app, ["check", str(quick_zoo[0] / "mlp_piecewise.keras")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "SavedModel carried 1 (CustomGradient-" in result.stdout
    assert "no gradient function: dropped" in result.stdout
    assert "float32 forward vs Keras on diabetes test split (88 samples)" in result.stdout


@pytest.mark.parametrize("samples, message", [
    pytest.param(np.zeros((0, 4)), "representative dataset is empty", id="empty"),
    pytest.param(np.where(np.arange(40).reshape(10, 4) == 29, np.nan, 1.0),
                 "sample 7 contains NaN or Inf (1 of 10 samples do)", id="nan"),
    pytest.param(np.full((3, 4), np.inf), "sample 0 contains NaN or Inf", id="inf"),
    pytest.param(np.zeros((10, 5)), "expected samples of shape (4,) (array shape (N, 4)), "
                 "got array shape (10, 5)", id="shape"),
    pytest.param(np.array([["a"] * 4] * 3), "expected real numbers (float32), got dtype <U1",
                 id="dtype"),
])
def test_representative_data_is_checked_before_the_converter(samples, message):
    with pytest.raises(EdgepipeError) as info:
        check_representative(samples, (4,), "rep.npy")
    assert message in str(info.value)


def test_float64_representative_data_is_cast_with_a_note():
    x, notes = check_representative(np.zeros((5, 4)), (4,), "rep.npy")
    assert x.dtype == np.float32
    assert notes == ["rep.npy: cast from float64 to float32, the model's input type"]


def test_int16_failure_is_explained_as_unsupported():
    error = RuntimeError("Quantization to 16x8-bit not yet supported for op: 'GREATER'.\n"
                         "Quantization to 16x8-bit not yet supported for op: 'CAST'.\n")
    failure = explain_failure(error, QuantMode.INT16X8)
    assert failure.status == "unsupported" and failure.ops == ("GREATER", "CAST")
    assert failure.reason.startswith("unsupported: op GREATER, CAST has no int16 kernel")


def test_modes_parse_and_reject():
    assert parse_modes("all") == list(QuantMode)
    assert parse_modes("int8,float16") == [QuantMode.INT8, QuantMode.FLOAT16]
    with pytest.raises(EdgepipeError,
                       match=r"Unknown mode 'int4'. Did you mean 'int8'\? Valid modes: all, dyn"):
        parse_modes("int4")


@pytest.mark.parametrize("variant, code, named", [
    pytest.param("cnn_piecewise.int8", 0, None, id="piecewise-int8-runs"),
    pytest.param("cnn_step.int8", 0, None, id="step-int8-runs"),
    pytest.param("cnn_gelu_tanh.float32", 1, "GELU: tflite-micro", id="gelu-no-kernel"),
    pytest.param("cnn_mish.int8", 1, "EXP: tflite-micro", id="mish-exp-float-only"),
    pytest.param("cnn_hard_swish.int8", 0, None, id="hard_swish-int8-runs"),
])
def test_check_against_tflite_micro(converted_zoo, variant, code, named):
    result = runner.invoke(app, ["check", str(converted_zoo[0] / f"{variant}.tflite"),
                                 "--target", "tflm", "--json"])
    assert result.exit_code == code, result.output
    report = json.loads(result.stdout)
    unsupported = report["audit"]["targets"]["tflm"]["unsupported_ops"]
    if named:
        assert any(u.startswith(named) for u in unsupported), unsupported
    else:
        assert unsupported == []


def test_tflm_table_names_missing_kernels_and_wrong_ones():
    from edgepipe.converters.tflm_ops import tflm_verdict

    assert tflm_verdict("CONV_2D", ("int8", "int8", "int32"), ("int8",)) == ("runs", "")
    assert "no kernel registered for SIGN" in tflm_verdict("SIGN", ("float32",), ("float32",))[1]
    assert "measured to compute it wrong" in tflm_verdict("RELU6", ("int8",), ("int8",))[1]
    assert tflm_verdict("UNKNOWN_OP", ("float32",), ())[0] == "unknown"
