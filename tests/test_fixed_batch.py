"""Batch-1 variants for TFLite Micro (issue 18): a model exported with a dynamic batch computes
shapes at run time (SHAPE, then STRIDED_SLICE, PACK, REDUCE_PROD, ... on its output); where
TFLite Micro refuses or is not known to run one of those ops and tflm is a target, a batch-1
export (static shapes) is converted beside it, as its own entry with the same checks."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import needs, run_user_model
from typer.testing import CliRunner

from edgepipe.converters.modes import QuantMode
from edgepipe.pipeline.cli import app

HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
runner = CliRunner()


def _transformer_data(model, n=480, seed=3):
    """Sequences whose class is the quarter holding the most energy: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16, 8)).astype(np.float32)
    quarter = rng.integers(0, 4, n)
    for i, q in enumerate(quarter):
        x[i, 4 * q:4 * q + 4] *= 3.0
    return x, quarter.astype(np.int64)


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    """The stranger transformer block (MultiHeadAttention, residual add, LayerNormalization),
    trained briefly, saved as a user would, with its data."""
    from stranger_models import transformer_block

    root = tmp_path_factory.mktemp("transformer")
    _, model, _ = transformer_block()
    x, y = _transformer_data(model)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:400], y[:400], epochs=4, batch_size=32, verbose=0)
    model.save(root / "transformer.keras")
    np.savez(root / "data.npz", x_train=x[:400], y_train=y[:400], x_test=x[400:],
             y_test=y[400:])
    return root, model, x


def test_a_batch_one_variant_only_where_the_dynamic_batch_adds_ops_tflm_lacks(transformer,
                                                                               tmp_path):
    from edgepipe.converters.tflite_file import read_tflite
    from edgepipe.converters.variants import convert_model

    _, model, x = transformer
    modes = [QuantMode.FLOAT32]
    plain = convert_model(model, "t", modes, tmp_path / "none", x[:50])
    assert [v.tag for v in plain] == ["float32"]  # no tflm target: no batch-1 variant
    made = convert_model(model, "t", modes, tmp_path / "tflm", x[:50], batch_one_for="tflm")
    assert [v.tag for v in made] == ["float32", "float32.batch1"]
    dynamic, fixed = made
    removed = fixed.record["fixed_batch"]["removes"]
    ops = {op["op"]: op for op in dynamic.record["audit"]["ops"] if op["dynamic_batch"]}
    assert removed and set(removed) <= set(ops), (removed, ops)
    # The batch-1 file has static shapes and none of the dynamic batch's shape arithmetic.
    parsed = read_tflite(fixed.path.read_bytes(), "fixed")
    assert [t.shape[0] for t in parsed.input_tensors()] == [1]
    assert not any(op["dynamic_batch"] for op in fixed.record["audit"]["ops"])
    assert "SHAPE" not in {op["op"] for op in fixed.record["audit"]["ops"]}
    assert fixed.record["status"] == "converted" and fixed.path.name == "t.float32.batch1.tflite"


def test_check_names_the_dynamic_batch_as_the_cause(transformer, tmp_path):
    from edgepipe.converters.variants import convert_model

    _, model, x = transformer
    (variant,) = convert_model(model, "t", [QuantMode.FLOAT32], tmp_path, x[:50])
    result = runner.invoke(app, ["check", str(variant.path), "--target", "tflm", "--json"])
    said = json.loads(result.stdout)["audit"]["targets"]["tflm"]
    named = [u for u in said["unsupported_ops"] + said["unknown_ops"]
             if "dynamic batch dimension" in u]
    assert named and all("a batch-1 export removes it" in u for u in named), said


def test_the_batch_one_variant_runs_on_tflite_micro(transformer, tmp_path):
    """The issue's show: the LayerNormalization + MultiHeadAttention model's float32 batch-1
    variant runs on TFLite Micro, with a parity figure, as its own entry."""
    needs(HAVE_TFLM, "tflite-micro is not installed: pip install 'edgepipe[micro]'")
    root, _, _ = transformer
    out = tmp_path / "run"
    run_user_model(root / "transformer.keras", root / "data.npz", out, ["float32", "int8"],
                   ["host", "tflm"])
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {e["id"]: e for e in manifest["entries"]}
    assert entries["transformer-float32.batch1"]["fixed_batch"] == 1
    records = {(r["id"], r["target"]): r
               for r in json.loads((out / "results.json").read_text())["results"]}
    fixed = records[("transformer-float32.batch1", "tflm")]
    assert fixed["status"] == "pass", fixed
    metrics = fixed["metrics"]
    print(f"\ntransformer float32 batch 1 on tflm: max_abs_error {metrics['max_abs_error']:.3g}, "
          f"top-1 agreement {metrics['task']['top1_agreement']}, arena "
          f"{metrics.get('arena_bytes')} bytes")
    assert metrics["max_abs_error"] < 1e-3
    assert records[("transformer-float32.batch1", "host")]["status"] == "pass"
    # The dynamic variant, as TFLite Micro says of it.
    plain = records[("transformer-float32", "tflm")]
    assert plain["status"] in ("unsupported", "pass"), plain
    if plain["status"] == "unsupported":  # the runner's reason points at the batch-1 entry
        assert "the batch-1 export transformer-float32.batch1 is made for this target" in \
            plain["reason"], plain["reason"]
    # Without tflm the convert stage is redone (its key holds it) and the batch-1 files go.
    run_user_model(root / "transformer.keras", root / "data.npz", out, ["float32", "int8"],
                   ["host"])
    ids = {e["id"] for e in json.loads((out / "manifest.json").read_text())["entries"]}
    assert not any(".batch1" in i for i in ids), ids
    assert not list((out / "tflite").glob("*.batch1.*"))
