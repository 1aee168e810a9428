"""Per-layer error on the runner side (issue 15, item 1): device_tests reads every intermediate
tensor the bundle maps to a Keras layer and compares it with that layer's Keras output.

The bundle is real: a tutorial-style Keras model trained here, converted to float32, float16,
dynamic and int8. Its per-layer fields (docs/bundle.md: `models.<name>.layers`,
`entries[i].layers`) are written by `add_layer_fields` below from the interpreter's own tensor
details, as the formats file gives them, so that these tests do not depend on the bundle writer.
"""

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import needs
from tiny_bundle import by_id, convert, entry_of, put_array, read_manifest, write_manifest

from edgepipe.device_tests.bundle import load_bundle
from edgepipe.device_tests.interpreters import Runtime, find_runtime
from edgepipe.device_tests.layers import layer_record
from edgepipe.device_tests.runner import _load_data, run_bundle
from edgepipe.device_tests.schema import ResultStatus
from edgepipe.device_tests.tflm import TflmRuntime, import_tflm
from edgepipe.pipeline.report.shape import RESULTS, check_shape

REPO = Path(__file__).resolve().parents[1]
HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
NO_TFLM = "tflite-micro is not installed (pip install 'edgepipe[micro]'; x86-64 Linux only)"
MODES = ("float32", "float16", "dynamic", "int8")
SAMPLES = [1, 4, 5, 9, 12, 20, 33, 41]
KERAS_LAYERS = ("hidden", "relu", "d2", "out")  # hidden+relu fuse into one tensor
BORN = re.compile(r"error is born in layer `d2` \(TANH\): \d+(\.\d+)? steps against a "
                  r"simulated \d+(\.\d+)?$")


def keras_layer(tensor_name: str):
    """`mymodel_1/d2_1/Tanh` -> `d2`; of fused names (`a;b`, in no fixed order) the layer that
    comes last in the model."""
    named = [re.sub(r"_1$", "", part.split("/")[1]) for part in tensor_name.split(";")
             if part.count("/") >= 2]
    named = [n for n in named if n in KERAS_LAYERS]
    return max(named, key=KERAS_LAYERS.index) if named else None


def layer_map(content: bytes, output_layer: str) -> list:
    """entries[i].layers without bounds: per Keras layer, the last operator output that carries
    its name (the graph output is the output layer's), in the order the ops run."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=content, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    graph_output = interpreter.get_output_details()[0]["index"]
    last = {}
    # Ops on constants only (float16's DEQUANTIZE of weights) compute no layer's output.
    computed = {d["index"] for d in interpreter.get_input_details()}
    for op in interpreter._get_ops_details():
        if not computed.intersection(op["inputs"]):
            continue
        computed.update(op["outputs"])
        for tensor in op["outputs"]:
            name = details[tensor]["name"]
            layer = output_layer if tensor == graph_output else keras_layer(name)
            if layer in KERAS_LAYERS:
                last[layer] = (op["index"], op["op_name"], int(tensor), name)
    rows = []
    for layer, (_, op, tensor, name) in sorted(last.items(), key=lambda item: item[1][0]):
        scale, zero_point = details[tensor]["quantization"]
        rows.append({"layer": layer, "op": op, "tensor": tensor, "tensor_name": name,
                     "dtype": np.dtype(details[tensor]["dtype"]).name,
                     "scale": float(scale) if scale else None,
                     "zero_point": int(zero_point) if scale else None})
    return rows


def add_layer_fields(root: Path, manifest: dict, name: str, model, x_test: np.ndarray) -> None:
    """The model's `layers` block (Keras outputs of every layer on SAMPLES) and every entry's
    `layers` rows, with bounds: int8 4 steps (simulated 1), float16 1%, dynamic 5%, float32
    1e-5 of the layer's range."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in KERAS_LAYERS])
    outputs = probe.predict(x_test[SAMPLES], verbose=0)
    block = {"samples": SAMPLES, "outputs": []}
    ranges = {}
    for layer, value in zip(KERAS_LAYERS, outputs, strict=True):
        value = np.asarray(value, dtype=np.float32)
        rel = f"layers/{name}.{layer}.npy"
        ranges[layer] = float(value.max() - value.min()) or 1.0
        block["outputs"].append({"layer": layer, "class": type(model.get_layer(layer)).__name__,
                                 "path": rel, "sha256": put_array(root, rel, value),
                                 "shape": list(value.shape), "range": ranges[layer]})
    manifest["models"][name]["layers"] = block
    share = {"float32": 1e-5, "float16": 1e-2, "dynamic": 5e-2}
    for entry in manifest["entries"]:
        rows = layer_map((root / entry["tflite"]).read_bytes(), KERAS_LAYERS[-1])
        for row in rows:
            if row["scale"]:
                row["simulated"] = row["scale"]
                row["bound"] = 4 * row["scale"] + 1e-5 * ranges[row["layer"]]
            else:
                row["simulated"] = None
                row["bound"] = share[entry["mode"]] * ranges[row["layer"]]
        entry["layers"] = rows


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(bundle folder, keras model, test inputs): one regression model, four modes."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.standard_normal((260, 4)).astype(np.float32)
    y = (np.tanh(x @ np.array([1.0, -2.0, 0.5, 0.3])) + 0.3 * np.sin(x[:, 0])).astype(np.float32)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Activation("relu", name="relu")(keras.layers.Dense(16, name="hidden")(
        inputs))
    hidden = keras.layers.Dense(8, activation="tanh", name="d2")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(hidden), name="mymodel")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x[:200], y[:200], epochs=15, batch_size=32, verbose=0)
    x_test, y_test = x[200:], y[200:]

    root = tmp_path_factory.mktemp("layers") / "bundle"
    reference = model.predict(x_test, verbose=0).astype(np.float32)
    manifest = {"schema_version": 1, "created_by": "tests/test_layer_error.py", "versions": {},
                "seed": 0, "entries": [],
                "datasets": {"reg": {"task": "regression", "inputs": "data/x.npy",
                                     "inputs_sha256": put_array(root, "data/x.npy", x_test),
                                     "labels": "data/y.npy",
                                     "labels_sha256": put_array(root, "data/y.npy", y_test),
                                     "samples": len(x_test), "y_std": 1.0}},
                "models": {"mymodel": {"dataset": "reg", "reference": "reference/mymodel.npy",
                                       "reference_sha256": put_array(
                                           root, "reference/mymodel.npy", reference)}}}
    for mode in MODES:
        content = convert(model, mode, x[:200])
        rel = f"tflite/mymodel.{mode}.tflite"
        (root / "tflite").mkdir(exist_ok=True)
        (root / rel).write_bytes(content)
        manifest["entries"].append({
            "id": f"mymodel-{mode}", "model": "mymodel", "mode": mode, "status": "converted",
            "tflite": rel, "sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content),
            "dataset": "reg", "expected_ops": [],
            # generous output bounds: these tests are about the layers, not the verdict
            "tolerance": {"max_abs": 0.5, "max_rel": None, "derivation": "test bundle"}})
    add_layer_fields(root, manifest, "mymodel", model, x_test)
    write_manifest(root, manifest)
    return root, model, x_test


@pytest.fixture
def copy(made, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(made[0], target)
    return target


def tighten(root: Path, entry_id: str, layer: str) -> None:
    """A forced failure: the layer's bound (and simulated error) far below what int8 gives."""
    manifest = read_manifest(root)
    row = next(r for r in entry_of(manifest, entry_id)["layers"] if r["layer"] == layer)
    row["simulated"], row["bound"] = 0.1 * row["scale"], 0.2 * row["scale"]
    write_manifest(root, manifest)


@pytest.fixture(scope="module")
def host(made):
    return by_id(run_bundle(made[0], isolate=False))


def test_every_mode_gets_a_row_per_mapped_layer(host, made):
    manifest = read_manifest(made[0])
    for mode in MODES:
        layers = host[f"mymodel-{mode}"]["layers"]
        assert layers["samples"] == len(SAMPLES)
        assert layers["kernels"].startswith("default")
        # the Dense `hidden` fused into `relu` has no tensor of its own
        assert [r["layer"] for r in layers["rows"]] == ["relu", "d2", "out"], mode
        assert [r["tensor"] for r in layers["rows"]] == \
            [r["tensor"] for r in entry_of(manifest, f"mymodel-{mode}")["layers"]]
        assert layers["born"] is None, (mode, layers)
        assert layers["text"].startswith(
            "every layer stays within its bound (3 of 3 layers bounded); the error grows most "
            f"in layer `{layers['growth']['layer']}`")
        mapped = entry_of(manifest, f"mymodel-{mode}")["layers"]
        for row, given in zip(layers["rows"], mapped, strict=True):
            assert "error" not in row and row["ok"] is True
            assert row["rel"] == pytest.approx(row["max_abs"] / row["range"], rel=1e-12)
            if mode == "int8":
                assert row["steps"] == pytest.approx(row["max_abs"] / given["scale"], rel=1e-9)
                assert 0.2 < row["steps"] < 4, row  # the int8 error is a step or so
                assert row["sqnr_db"] > 15
            else:
                assert row["steps"] is None and row["bound_steps"] is None
    # float32 is float32: the same numbers to float rounding; float16 close to them
    assert all(r["max_abs"] < 1e-5 * r["range"] or r["max_abs"] < 1e-6
               for r in host["mymodel-float32"]["layers"]["rows"])
    assert all(r["rel"] < 1e-2 for r in host["mymodel-float16"]["layers"]["rows"])


def test_int8_figures_are_the_dequantized_tensors_against_keras(host, made):
    """max|Δ| and SQNR recomputed here from the interpreter's own tensors and scales."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    root, model, x_test = made
    manifest = read_manifest(root)
    row = next(r for r in entry_of(manifest, "mymodel-int8")["layers"] if r["layer"] == "d2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "intended for debugging purposes only"
        interpreter = Interpreter(model_content=(root / "tflite/mymodel.int8.tflite")
                                  .read_bytes(), experimental_preserve_all_tensors=True)
    given = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(given["index"], [len(SAMPLES), 4])
    interpreter.allocate_tensors()
    scale, zero_point = given["quantization"]
    q = np.clip(np.round(x_test[SAMPLES] / scale) + zero_point, -128, 127).astype(np.int8)
    interpreter.set_tensor(given["index"], q)
    interpreter.invoke()
    got = (interpreter.get_tensor(row["tensor"]).astype(np.float64) - row["zero_point"]) \
        * row["scale"]
    ref = keras.Model(model.inputs, model.get_layer("d2").output).predict(x_test[SAMPLES],
                                                                          verbose=0)
    figures = next(r for r in host["mymodel-int8"]["layers"]["rows"] if r["layer"] == "d2")
    assert figures["max_abs"] == pytest.approx(np.abs(got - ref).max(), rel=1e-5)
    sqnr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref) ** 2))
    assert figures["sqnr_db"] == pytest.approx(sqnr, abs=1e-3)


def test_a_tightened_middle_bound_names_that_layer_and_keeps_the_status(copy, host):
    tighten(copy, "mymodel-int8", "d2")
    record = by_id(run_bundle(copy, only=["mymodel-int8"]))["mymodel-int8"]  # in the worker
    layers = record["layers"]
    assert [r["ok"] for r in layers["rows"]] == [True, False, True]
    assert layers["born"]["layer"] == "d2" and layers["born"]["op"] == "TANH"
    assert layers["born"]["simulated_steps"] == pytest.approx(0.1)
    assert layers["born"]["bound_steps"] == pytest.approx(0.2)
    assert BORN.match(layers["text"]), layers["text"]
    assert record["status"] == host["mymodel-int8"]["status"] == ResultStatus.PASS
    assert record["checks"] == host["mymodel-int8"]["checks"]


def test_float_layers_are_named_with_relative_figures(copy):
    manifest = read_manifest(copy)
    row = next(r for r in entry_of(manifest, "mymodel-float16")["layers"] if r["layer"] == "d2")
    row["simulated"], row["bound"] = 1e-9, 2e-9
    write_manifest(copy, manifest)
    layers = by_id(run_bundle(copy, only=["mymodel-float16"], isolate=False))[
        "mymodel-float16"]["layers"]
    assert layers["born"]["layer"] == "d2" and layers["born"]["steps"] is None
    assert re.fullmatch(r"error is born in layer `d2` \(TANH\): \S+ of its range against a "
                        r"simulated \S+", layers["text"]), layers["text"]


def test_a_tensor_of_another_name_is_one_row_error_not_a_crash(copy, host):
    manifest = read_manifest(copy)
    row = next(r for r in entry_of(manifest, "mymodel-dynamic")["layers"] if r["layer"] == "d2")
    row["tensor_name"] = "mymodel_1/other_1/Tanh"
    write_manifest(copy, manifest)
    record = by_id(run_bundle(copy, only=["mymodel-dynamic"], isolate=False))["mymodel-dynamic"]
    rows = {r["layer"]: r for r in record["layers"]["rows"]}
    assert rows["d2"]["error"].startswith(f"tensor {row['tensor']} is named 'mymodel_1/d2_1/Tanh'"
                                          f" in this model but the bundle maps layer 'd2' to "
                                          f"'mymodel_1/other_1/Tanh'")
    assert "\n" not in rows["d2"]["error"] and "max_abs" not in rows["d2"]
    assert rows["relu"]["ok"] is True and rows["out"]["ok"] is True
    assert record["layers"]["text"].endswith("; 1 could not be compared")
    assert record["status"] == host["mymodel-dynamic"]["status"]


def test_a_bundle_without_layer_fields_gets_no_layers(copy):
    manifest = read_manifest(copy)
    del manifest["models"]["mymodel"]["layers"]
    write_manifest(copy, manifest)
    assert all("layers" not in r for r in run_bundle(copy, isolate=False)["results"])


def test_a_runtime_that_cannot_preserve_tensors_says_so(made):
    """tflite-runtime before experimental_preserve_all_tensors: its Interpreter refuses the
    keyword (made here: the installed interpreter without that keyword)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    class OldInterpreter(Interpreter):
        def __init__(self, model_path=None, model_content=None,
                     experimental_op_resolver_type=OpResolverType.AUTO):
            super().__init__(model_path=model_path, model_content=model_content,
                             experimental_op_resolver_type=experimental_op_resolver_type)

    bundle = load_bundle(made[0])
    entry = entry_of(bundle.manifest, "mymodel-int8")
    _, inputs, _, _ = _load_data(bundle, entry)
    old = Runtime("tflite_runtime", "2.4.0", "default", OldInterpreter, OpResolverType)
    data = (made[0] / entry["tflite"]).read_bytes()
    assert old.load(data) is not None  # it runs the model: only the per-layer part is missing
    got = layer_record(bundle, entry, bundle.model("mymodel")["layers"], inputs, old, data)
    assert got == {"unavailable": "tflite_runtime 2.4.0 (default kernels) cannot preserve "
                                  "intermediate tensors (its Interpreter takes no "
                                  "experimental_preserve_all_tensors; a newer tflite-runtime "
                                  "or ai-edge-litert has it)"}
    # and a TFLite Micro build without the preserve-all-tensors config
    if HAVE_TFLM:
        module, version = import_tflm()
        bare = TflmRuntime(types.SimpleNamespace(Interpreter=module.Interpreter), version)
        got = layer_record(bundle, entry, bundle.model("mymodel")["layers"], inputs, bare, data)
        assert got == {"unavailable": f"tflite_micro {version} cannot preserve intermediate "
                                      f"tensors (its Python runtime has no "
                                      f"InterpreterConfig.kPreserveAllTensors)"}


def test_reference_kernels_and_tflm_give_the_same_int8_layers(copy, host):
    needs(HAVE_TFLM, NO_TFLM)
    tighten(copy, "mymodel-int8", "d2")
    ref = by_id(run_bundle(copy, kernels="reference", only=["mymodel-int8"], isolate=False))
    micro = by_id(run_bundle(copy, runtime="tflite_micro", only=["mymodel-int8"]))
    ref, micro = ref["mymodel-int8"]["layers"], micro["mymodel-int8"]["layers"]
    assert ref["kernels"] == "reference (BUILTIN_REF)"
    assert micro["kernels"].startswith("reference (TFLite Micro preserve-all-tensors mode")
    assert micro["born"]["layer"] == "d2" and BORN.match(micro["text"])
    for a, b in zip(ref["rows"], micro["rows"], strict=True):  # batch 1 vs one batch
        assert a["layer"] == b["layer"] and a["steps"] == pytest.approx(b["steps"], abs=1.0)


def test_merged_results_accept_the_layers_field(host, tmp_path):
    check_shape({"results": list(host.values())}, RESULTS, tmp_path / "results.json", "")
    runtime = find_runtime()
    assert runtime.name == "ai_edge_litert"  # what the figures above were measured on


def test_parity_suite_names_the_birth_layer_without_failing(copy):
    tighten(copy, "mymodel-int8", "d2")
    done = subprocess.run([sys.executable, "-m", "pytest", "device_tests", "-p",
                           "no:cacheprovider", "--bundle", str(copy), "--junitxml",
                           str(copy.parent / "junit.xml")], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    assert "per-layer error" in done.stdout
    line = next(s for s in done.stdout.splitlines() if s.startswith("mymodel-int8 on host: "))
    assert BORN.match(line.split(": ", 1)[1]), line
    junit = (copy.parent / "junit.xml").read_text()
    assert 'name="layers" value="error is born in layer `d2` (TANH)' in junit


# ------------------------------------------------------------------- through `edgepipe run`

@pytest.fixture(scope="module")
def user_run(made, tmp_path_factory):
    """The same model as a user's .keras through `edgepipe run` (the bundle writer fills the
    per-layer fields) on host, host-ref and, where installed, tflm."""
    from typer.testing import CliRunner

    from edgepipe.pipeline.cli import app

    root = tmp_path_factory.mktemp("user_layers")
    _, model, x_test = made
    model.save(root / "mymodel.keras")
    rng = np.random.default_rng(1)
    x_train = rng.standard_normal((200, 4)).astype(np.float32)
    y_train = model.predict(x_train, verbose=0)[:, 0]
    y_test = model.predict(x_test, verbose=0)[:, 0]
    np.savez(root / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    targets = ["host", "host-ref"] + (["tflm"] if HAVE_TFLM else [])
    (root / "edgepipe.toml").write_text(
        '[run]\nkeras = ["mymodel.keras"]\ndata = "data.npz"\n'
        'modes = ["float16", "dynamic", "int8"]\n'
        f'targets = [{", ".join(map(repr, targets)).replace(chr(39), chr(34))}]\n')
    out = root / "run"
    result = CliRunner().invoke(app, ["run", "--config", str(root / "edgepipe.toml"), "--out",
                                      str(out), "--no-repair"], env={"COLUMNS": "200"})
    return out, result, targets


@pytest.mark.slow
def test_edgepipe_run_gives_every_variant_its_layers_on_every_target(user_run):
    out, result, targets = user_run
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "results.json").read_text())
    seen = set()
    for record in merged["results"]:
        if record["status"] == ResultStatus.UNSUPPORTED:  # tflm has no float16 DEQUANTIZE
            assert "layers" not in record
            continue
        layers = record["layers"]
        seen.add((record["mode"], record["target"]))
        assert layers["born"] is None, (record["id"], record["target"], layers)
        assert [r["layer"] for r in layers["rows"]] == ["relu", "d2", "out"]
        assert all(r["ok"] for r in layers["rows"])
        assert (layers["rows"][0]["steps"] is not None) == (record["mode"] == "int8")
    assert seen >= {(m, t) for m in ("dynamic", "int8") for t in targets} | {
        ("float16", "host"), ("float16", "host-ref")}


@pytest.mark.slow
def test_edgepipe_parity_names_the_layer_of_a_tightened_bound(user_run):
    from typer.testing import CliRunner

    from edgepipe.pipeline.cli import app

    out, result, targets = user_run
    assert result.exit_code == 0, result.output
    tighten(out, "mymodel-int8", "d2")
    result = CliRunner().invoke(app, ["parity", str(out), "--target", ",".join(targets)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output  # diagnostic: the verdict is the same
    merged = json.loads((out / "results.json").read_text())
    for record in merged["results"]:
        if record["id"] == "mymodel-int8":
            assert record["status"] == ResultStatus.PASS
            assert BORN.match(record["layers"]["text"]), (record["target"], record["layers"])


def test_the_layer_where_the_error_grows_most_is_named_even_within_every_bound():
    from edgepipe.device_tests.layers import largest_growth

    rows = [{"layer": "hidden", "op": "FULLY_CONNECTED", "rel": 0.013},
            {"layer": "step_1", "op": "SELECT_V2", "rel": 1.0},
            {"layer": "broken", "op": "ADD", "error": "unreadable"},
            {"layer": "output", "op": "FULLY_CONNECTED", "rel": 0.1}]
    assert largest_growth(rows) == {"layer": "step_1", "op": "SELECT_V2", "from": 0.013,
                                    "to": 1.0}
    assert largest_growth([{"layer": "a", "op": "ADD", "rel": 0.0}]) is None
