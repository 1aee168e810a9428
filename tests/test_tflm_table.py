"""The measured TFLite Micro op table (converters/tflm_ops.py) as `check --target tflm` uses it:
an op or type the table has not measured is unknown, never a refusal (issue 18); shape
arithmetic that exists only because of the dynamic batch is named as such."""

import json

import pytest
from typer.testing import CliRunner

from edgepipe.converters import tflm_ops
from edgepipe.converters.tflm_ops import REFUSES, RUNS, UNKNOWN, WRONG, tflm_verdict
from edgepipe.pipeline.cli import app

runner = CliRunner()


def test_a_verdict_is_measured_or_unknown(monkeypatch):
    """Runs and refusals come from measured models only; the rest is unknown."""
    monkeypatch.setattr(tflm_ops, "TFLM_KERNELS", {"FOO": frozenset({"float32"})})
    monkeypatch.setattr(tflm_ops, "TFLM_REFUSED", {"FOO": frozenset({"int8"}),
                                                   "BAR": frozenset({"any"})})
    monkeypatch.setattr(tflm_ops, "TFLM_INACCURATE", {"FOO": frozenset({"int16"})})
    monkeypatch.setattr(tflm_ops, "TFLM_NOTES", {"FOO": "int8 fails at load: foo.cc:1",
                                                 "BAR": "no kernel registered for BAR"})
    assert tflm_verdict("FOO", ("float32",), ("float32",)) == (RUNS, "")
    verdict, why = tflm_verdict("FOO", ("int8",), ("int32",))
    assert verdict == REFUSES and "foo.cc:1" in why
    assert tflm_verdict("FOO", ("int16",), ("int64",))[0] == WRONG
    assert tflm_verdict("BAR", ("float16",), ())[0] == REFUSES  # no kernel at all: any type
    verdict, why = tflm_verdict("FOO", ("int32",), ("int32",))  # measured, but not on int32
    assert verdict == UNKNOWN and "not measured" in why and "on float32" in why
    verdict, why = tflm_verdict("BAZ", ("float32",), ())
    assert verdict == UNKNOWN and "no measured model held BAZ" in why


def test_the_generated_table_holds_its_measured_refusals():
    """SIGN has no kernel at all; EXP was measured to fail in int8; RELU6 int8 computes wrong."""
    assert tflm_verdict("SIGN", ("float32",), ("float32",))[0] == REFUSES
    assert tflm_verdict("EXP", ("int8",), ("int8",))[0] == REFUSES
    assert tflm_verdict("RELU6", ("int8",), ("int8",))[0] == WRONG
    assert tflm_verdict("CONV_2D", ("int8", "int8", "int32"), ("int8",))[0] == RUNS


@pytest.fixture(scope="module")
def stranger_variants(tmp_path_factory):
    from stranger_models import convert_all

    from edgepipe.converters.modes import QuantMode

    out = tmp_path_factory.mktemp("strangers")
    variants = convert_all(out, [QuantMode.FLOAT32, QuantMode.INT8])
    return out, {(v.model, v.mode.value): v for v in variants}


def _check(path):
    result = runner.invoke(app, ["check", str(path), "--target", "tflm", "--json"])
    return result.exit_code, json.loads(result.stdout), result


def test_an_unmeasured_op_never_fails_check(stranger_variants, monkeypatch):
    """The step written `tf.where(x >= 0.5, 1.0, 0.0)` gives GREATER_EQUAL. With the table as
    it stood before GREATER_EQUAL was measured (issue 18: check exited 1 "was not measured"
    for a file TFLM then ran), check says it is not known and passes."""
    out, _ = stranger_variants
    path = out / "step_cnn.int8.tflite"
    code, report, result = _check(path)
    ops = [op["op"] for op in report["audit"]["ops"]]
    assert "GREATER_EQUAL" in ops
    assert code == 0, result.output
    for table in ("TFLM_KERNELS", "TFLM_REFUSED"):
        monkeypatch.delitem(getattr(tflm_ops, table), "GREATER_EQUAL", raising=False)
    code, report, result = _check(path)
    said = report["audit"]["targets"]["tflm"]
    assert code == 0, result.output
    assert said["unsupported_ops"] == [] and said["supported"] is True
    assert [u.split(":")[0] for u in said["unknown_ops"]] == ["GREATER_EQUAL"]
    assert "TFLite Micro decides" in said["unknown_ops"][0]
    shown = runner.invoke(app, ["check", str(path), "--target", "tflm"])
    assert shown.exit_code == 0 and "not measured" in shown.output, shown.output


def test_dynamic_batch_shape_arithmetic_is_named(stranger_variants, monkeypatch):
    """The transformer block, exported with a dynamic batch, computes shapes at run time
    (SHAPE and the ops on its output). An op of that arithmetic that TFLM refuses is named as
    coming from the dynamic batch dimension, with the fix."""
    from edgepipe.converters.op_audit import audit, dynamic_shape_ops
    from edgepipe.converters.tflite_file import read_tflite

    out, _ = stranger_variants
    model = read_tflite((out / "transformer.float32.tflite").read_bytes(), "transformer")
    sub = model.subgraphs[0]
    found = dynamic_shape_ops(sub)
    names = {op.name for op in sub.operators if op.index in found}
    assert "SHAPE" in names and len(names) > 1, names
    assert all(op.name not in {"FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX"}
               for op in sub.operators if op.index in found), names
    arithmetic = sorted(names - {"SHAPE"})[0]
    monkeypatch.setitem(tflm_ops.TFLM_REFUSED, arithmetic, frozenset({"any"}))
    monkeypatch.setitem(tflm_ops.TFLM_NOTES, arithmetic, f"no kernel for {arithmetic}")
    monkeypatch.delitem(tflm_ops.TFLM_KERNELS, arithmetic, raising=False)
    said = audit(model, op_sets=("tflm",)).unsupported("tflm")
    named = [s for s in said if s.startswith(arithmetic)]
    assert named and "dynamic batch dimension" in named[0] and "batch-1 export" in named[0]
