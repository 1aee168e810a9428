"""The Model Explorer overlay of a variant's per-layer error (pipeline/overlay.py), read back and
checked against Model Explorer's node-data format as its code specifies it:
model_explorer/node_data_builder.py (GraphNodeData, NodeDataResult, ThresholdItem) and the UI that
loads a file (node_data_provider_extension_service.ts, getNodeDataProviderData and
processNodeDataProviderDataForGraph)."""

import json
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from edgepipe.device_tests.schema import RunFolder
from edgepipe.pipeline.overlay import write_overlays

# GraphNodeData's fields (node_data_builder.py); `results` is the only required one.
GRAPH_FIELDS = {"name": str, "results": dict, "thresholds": list, "gradient": list,
                "hideInAggregatedStatsTable": bool, "hideInChildrenStatsTable": bool,
                "hideAggregatedStats": list, "showExpandedSummaryOnGroupNode": bool,
                "showLabelCountColumnsInChildrenStatsTable": bool}
RESULT_FIELDS = {"value", "bgColor", "textColor"}
THRESHOLD_FIELDS = {"value", "bgColor", "textColor"}
CSS_COLOUR = re.compile(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?|[a-z]+")


def graph_keys(tflite_bytes: bytes) -> tuple[set[str], set[str]]:
    """(output tensor names of subgraph 0's ops, their node ids) as Model Explorer's TFLite
    flatbuffer adapter gives them: an op node's id is its operator index, its outputs'
    `tensor_name` the tensors' names. Read with the interpreter, not edgepipe's reader."""
    interpreter = Interpreter(model_content=tflite_bytes)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    return ({names[i] for op in ops for i in op["outputs"] if i >= 0},
            {str(op["index"]) for op in ops})


def check_node_data(doc, tensor_names: set[str], node_ids: set[str]) -> None:
    """A node-data file Model Explorer reads as one graph's data (GraphNodeData)."""
    assert isinstance(doc, dict)
    # The UI takes a file for one graph when `results` exists and has no `results` of its own.
    assert isinstance(doc.get("results"), dict) and "results" not in doc["results"]
    for key, value in doc.items():
        assert key in GRAPH_FIELDS, f"unknown field {key}"
        assert isinstance(value, GRAPH_FIELDS[key]), key
    assert doc["results"], "an overlay with no node"
    for key, result in doc["results"].items():
        assert isinstance(key, str)
        assert key in tensor_names or key in node_ids, f"{key} is no node of the graph"
        assert set(result) <= RESULT_FIELDS and "value" in result
        assert isinstance(result["value"], (int, float)) and not isinstance(result["value"], bool)
        assert math.isfinite(result["value"])
        for colour in ("bgColor", "textColor"):
            if colour in result:
                assert CSS_COLOUR.fullmatch(result[colour])
    thresholds = doc.get("thresholds", [])
    for item in thresholds:
        assert set(item) <= THRESHOLD_FIELDS and {"value", "bgColor"} <= set(item)
        assert isinstance(item["value"], (int, float)) and math.isfinite(item["value"])
        assert CSS_COLOUR.fullmatch(item["bgColor"])
    values = [t["value"] for t in thresholds]
    assert values == sorted(values) and len(set(values)) == len(values), "not ascending"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with a user's model (a Dense, a separate relu fused into it, a step-like
    layer, a Dense out) converted to int8, and its result on two targets with per-layer rows
    as the runner writes them."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(8, name="hidden")(inputs)
    h = keras.layers.Activation("relu", name="relu")(h)
    h = keras.layers.Dense(8, activation="tanh", name="squash")(h)
    outputs = keras.layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs, name="mymodel")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(32))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()

    root = tmp_path_factory.mktemp("run")
    folder = RunFolder(root)
    path = folder.variant("mymodel", "int8")
    path.parent.mkdir(parents=True)
    path.write_bytes(flatbuffer)

    interpreter = Interpreter(model_content=flatbuffer)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "QUANTIZE"]
    rows = []
    for k, op in enumerate(ops):
        t = details[op["outputs"][0]]
        scale = float(t["quantization"][0]) or None
        bound = 2.0 * (scale or 1e-3)
        max_abs = bound * (0.5 if k != 1 else 12.0)  # the second op leaves its bound
        rows.append({"layer": f"layer{k}", "op": op["op_name"], "tensor": t["index"],
                     "max_abs": max_abs, "range": 4.0, "rel": max_abs / 4.0,
                     "sqnr_db": 30.0 - k, "steps": None, "simulated": bound / 2,
                     "bound": bound, "bound_steps": None, "ok": max_abs <= bound})
    born = rows[1]
    layers = {"samples": 32, "kernels": "builtin", "rows": rows,
              "born": {"layer": born["layer"], "op": born["op"], "steps": 24,
                       "simulated_steps": 1, "bound_steps": 2, "max_abs": born["max_abs"],
                       "bound": born["bound"]},
              "text": f"error is born in layer `{born['layer']}` ({born['op']})"}
    entry = {"id": "mymodel-int8", "model": "mymodel", "mode": "int8",
             "tflite": folder.rel(path)}
    # host-ref is the baseline; host's rows differ, so which one the overlay took is visible.
    host_rows = [{**r, "sqnr_db": 99.0} for r in rows]
    results = [{"id": entry["id"], "target": "host", "layers": {**layers, "rows": host_rows}},
               {"id": entry["id"], "target": "host-ref", "layers": layers}]
    written = write_overlays(folder, {"entries": [entry]}, results)
    return folder, flatbuffer, rows, written, results


def test_the_overlay_is_model_explorer_node_data_for_the_tflite(run):
    folder, flatbuffer, rows, written, _ = run
    names, ids = graph_keys(flatbuffer)
    error_path, sqnr_path = folder.overlay("mymodel", "int8"), folder.overlay("mymodel", "int8",
                                                                               "sqnr")
    assert error_path.name == "mymodel.int8.overlay.json"
    assert written == [error_path, sqnr_path]
    for path in written:
        check_node_data(json.loads(path.read_text()), names, ids)


def test_the_overlay_holds_each_tensors_error_and_sqnr_from_the_baseline(run):
    folder, flatbuffer, rows, _, _ = run
    interpreter = Interpreter(model_content=flatbuffer)
    name_of = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    error = json.loads(folder.overlay("mymodel", "int8").read_text())
    sqnr = json.loads(folder.overlay("mymodel", "int8", "sqnr").read_text())
    assert "host-ref" in error["name"] and "host-ref" in sqnr["name"]
    for row in rows:
        key = name_of[row["tensor"]]
        assert error["results"][key]["value"] == pytest.approx(row["rel"])
        assert sqnr["results"][key]["value"] == row["sqnr_db"]  # host-ref's, not host's 99
    colours = [error["results"][name_of[r["tensor"]]]["bgColor"] for r in rows]
    assert colours[0] != colours[1] and colours[0] == colours[2]  # the born layer stands out
    # Thresholds come from the bounds: the smallest bound/range is the first one.
    assert error["thresholds"][0]["value"] == pytest.approx(min(r["bound"] / 4.0 for r in rows))


def test_a_variant_without_per_layer_data_gets_no_overlay_and_a_stale_one_goes(run, tmp_path):
    _, flatbuffer, _, _, results = run
    folder = RunFolder(tmp_path)
    folder.variant("mymodel", "int8").parent.mkdir()
    folder.variant("mymodel", "int8").write_bytes(flatbuffer)
    entry = {"id": "mymodel-int8", "model": "mymodel", "mode": "int8",
             "tflite": folder.rel(folder.variant("mymodel", "int8"))}
    assert len(write_overlays(folder, {"entries": [entry]}, results)) == 2
    keep = folder.overlays_dir / "notes.txt"  # not ours: never removed
    keep.write_text("mine")
    unavailable = [{"id": entry["id"], "target": "tflm",
                    "layers": {"unavailable": "tflite-micro cannot preserve its tensors"}}]
    assert write_overlays(folder, {"entries": [entry]}, unavailable) == []
    assert not folder.overlay("mymodel", "int8").exists()
    assert not folder.overlay("mymodel", "int8", "sqnr").exists()
    assert keep.read_text() == "mine"


@pytest.mark.slow
def test_a_run_writes_overlays_that_model_explorer_reads_for_each_variant(tmp_path):
    """`edgepipe run` on a user's model (a relu fused into its Dense): every converted variant
    gets its overlays from the runner's per-layer results, each key a node of its .tflite."""
    from typer.testing import CliRunner

    from edgepipe.pipeline.cli import app

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 4)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(4, 1))) + 0.1 * x[:, :1]).astype(np.float32)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, name="hidden")(inputs)
    h = keras.layers.Activation("relu", name="relu")(h)
    outputs = keras.layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs, name="user")
    model.compile("adam", "mse")
    model.fit(x[:128], y[:128], epochs=3, verbose=0)
    model.save(tmp_path / "user.keras")
    np.savez(tmp_path / "d.npz", x_train=x[:128], y_train=y[:128], x_test=x[128:],
             y_test=y[128:])
    (tmp_path / "run.toml").write_text('[run]\nmodes = ["float32", "int8"]\n'
                                       'targets = ["host-ref"]\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "run.toml"), "--model",
                                      str(tmp_path / "user.keras"), "--data",
                                      str(tmp_path / "d.npz"), "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    folder = RunFolder(out)
    manifest = json.loads(folder.manifest.read_text())
    converted = [e for e in manifest["entries"] if e.get("tflite")]
    assert {e["mode"] for e in converted} == {"float32", "int8"}
    for entry in converted:
        names, ids = graph_keys((out / entry["tflite"]).read_bytes())
        tag = entry["id"][len(entry["model"]) + 1:]
        error = json.loads(folder.overlay(entry["model"], tag).read_text())
        check_node_data(error, names, ids)
        assert "host-ref" in error["name"]
    assert 'alt="per-layer error of user on host-ref"' in folder.report.read_text()
