"""edgepipe's per-layer error beside TF's QuantizationDebugger, on the int8 variants of a run.

    .venv/bin/python tools/compare_quant_debugger.py RUN_DIR [--models a,b] [--out FILE.md]
        [--model PATH.keras --data DATA.npz]   # a run made with `edgepipe run --model/--data`

For each plain int8 entry of RUN_DIR (made by `edgepipe run`, with target host-ref), the
debugger is built as edgepipe built the variant: converters/convert.make_converter on a
SavedModel export of the run's Keras model, calibrated on the same representative samples; its
debug_dataset is exactly the samples of the manifest's `models.<name>.layers`, one at a time.

What each side measures (TF 2.21, tensorflow/lite/tools/optimize/debugging/python/debugger.py
and lite/python/convert.py mlir_quantize): the debugger quantizes its calibrated model with
`enable_numeric_verify=True` and the default `enable_whole_model_verify=False`, which puts a
NumericVerify op after every quantized op: "float and quantized ops will be run from same input
(output of previous quantized layer)". Its `mean_squared_error` is therefore a PER-OP error
(each sample's mean of diff**2, averaged over samples), and `max_abs_error` the mean over
samples of each sample's max |diff|. edgepipe's runner compares each layer's tensor with Keras
on the float input: an ACCUMULATED error. So two pairs are compared, like with like:

- per-op: the debugger's default statistics against edgepipe's per-layer LOCAL error, each
  Keras layer called (tolerances' layer walk) on the dequantized tensors the int8 variant gave
  its inputs, read on host-ref with device_tests' preserve-all-tensors machinery. The first
  layer reads the float model input, as the debugger's float copy of the first op does (its
  operand is the model's float input, not the QUANTIZE's output): its error includes the
  input's quantization;
- accumulated: the debugger run on a whole-model-verify build of its own quantized model (the
  float ops chained on float values: the float model) against edgepipe's runner rows
  (results/host-ref.json `layers.rows`), whose MSE follows from their `sqnr_db` and the Keras
  reference: mean(ref**2) * 10**(-sqnr_db/10).

Keys: the debugger names a statistic `NumericVerify/<tensor>:<index>`; the tensor is read from
the NumericVerify op's first input and matched by name with the entry's `layers[].tensor_name`.
Debugger tensors inside a layer (a swish's LOGISTIC before its MUL) have no edgepipe row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from edgepipe.device_tests.schema import RunFolder

# The runner's target for each choice of kernels: its results hold the rows compared.
TARGETS = {"reference": "host-ref", "default": "host"}
TINY = 1e-12  # an MSE below this is float32 rounding (values ~1, eps 6e-8: MSE ~4e-15)
TINY_ABS = 1e-6  # the same for a max |diff|


def rel_diff(a, b, tiny: float = TINY) -> float | None:
    if a is None or b is None:
        return None
    if max(abs(a), abs(b)) < tiny:
        return 0.0  # both nothing but float32 rounding
    return abs(a - b) / max(abs(a), abs(b))


# ---------------------------------------------------------------------------- the debugger side

def _verify_stats(debugger) -> dict:
    """{quantized tensor name: {metric: value}} of a run debugger."""
    found = {}
    for key, metrics in debugger.layer_statistics.items():
        # The debug model's quantized tensor carries the converter's name plus a uniquing digit;
        # TF's own _get_operand_name_and_index (layer_statistics_dump) strips it.
        name, _ = debugger._get_operand_name_and_index(key)
        found[name] = {k: float(v) for k, v in metrics.items()}
    return found


def debugger_statistics(keras_model, representative, samples: np.ndarray) -> dict:
    """{"per_op": {tensor: metrics}, "whole": {tensor: metrics}, "grids": {tensor: (scale,
    zero_point)}} from TF's QuantizationDebugger on `samples` (one model input)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    from edgepipe.converters.convert import make_converter, temporary_export
    from edgepipe.converters.modes import QuantMode
    from edgepipe.converters.native_output import captured_native_output
    from edgepipe.converters.representative import calibration_samples

    def dataset():
        for sample in samples:
            yield [sample[None].astype(np.float32)]

    with temporary_export(keras_model) as saved, captured_native_output(True):
        converter = make_converter(saved, QuantMode.INT8,
                                   lambda: calibration_samples(representative))
        per_op = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                           debug_dataset=dataset)
        per_op.run()
        whole_model = tf_convert.mlir_quantize(
            per_op.calibrated_model,
            disable_per_channel=converter._experimental_disable_per_channel,
            enable_numeric_verify=True, enable_whole_model_verify=True)
        whole = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=whole_model, debug_dataset=dataset)
        whole.run()
        plain = tf.lite.Interpreter(model_content=per_op.get_nondebug_quantized_model())
    grids = {}
    for d in plain.get_tensor_details():
        q = d["quantization_parameters"]
        if len(q["scales"]) == 1:
            grids[d["name"]] = (float(q["scales"][0]), int(q["zero_points"][0]))
    return {"per_op": _verify_stats(per_op), "whole": _verify_stats(whole), "grids": grids}


# ---------------------------------------------------------------------------- the edgepipe side

def _walk_class():
    from edgepipe.converters.modes import QuantMode
    from edgepipe.pipeline.tolerances import _Walk

    class LocalWalk(_Walk):
        """The float layer walk, with each mapped layer's output replaced by the variant's
        dequantized tensor: each layer runs on what the quantized model gave its inputs."""

        def __init__(self, tflite_values: dict):
            super().__init__(QuantMode.FLOAT32, None, False)
            self.tflite_values, self.local = tflite_values, {}

        def call(self, op, args, kwargs, key, n_inputs, path=(), output=True):
            outputs = super().call(op, args, kwargs, key, n_inputs, path, output)
            name = "/".join(path + (op.name,))
            got = self.tflite_values.get(name)
            if got is not None and len(outputs) == 1 and got.size == outputs[0].size:
                self.local[name] = np.asarray(outputs[0], np.float64)
                outputs = [got.reshape(outputs[0].shape).astype(np.float32)]
            return outputs

    return LocalWalk


def edgepipe_values(tflite: bytes, rows: list, x: np.ndarray, kernels: str) -> dict:
    """{tensor index: dequantized values on `x`} from the variant run on `kernels` (host-ref:
    "reference", host: "default") with every tensor preserved (device_tests' own machinery,
    as the runner reads them)."""
    from edgepipe.device_tests.interpreters import find_runtime
    from edgepipe.device_tests.layers import _run, dequantized

    preserved = find_runtime(kernels=kernels).load_preserving(tflite)
    tensors = sorted({int(r["tensor"]) for r in rows})
    read, failed = _run(preserved, x, tensors)
    if failed:
        raise RuntimeError(f"tensors not readable: {failed}")
    values = {}
    for r in rows:
        pieces = read[int(r["tensor"])]
        raw = np.stack(pieces) if pieces[0].ndim == 0 else np.concatenate(pieces)
        values[int(r["tensor"])] = dequantized(raw, r.get("scale"), r.get("zero_point"))
    return values


def _stats(diff: np.ndarray) -> dict:
    """The debugger's aggregation: per sample, then the mean over samples."""
    per = diff.reshape(diff.shape[0], -1)
    return {"mse": float(np.mean(np.mean(per ** 2, axis=1))),
            "max_abs": float(np.mean(np.abs(per).max(axis=1)))}


def edgepipe_statistics(keras_model, entry: dict, refs: dict, record: dict, tflite: bytes,
                        x: np.ndarray, kernels: str = "reference") -> dict:
    """{layer: {"local": stats, "accumulated": stats, "runner_mse": from the runner's row}}."""
    rows = entry.get("layers") or []
    values = edgepipe_values(tflite, rows, x, kernels)
    by_layer = {r["layer"]: values[int(r["tensor"])] for r in rows}
    walk = _walk_class()(by_layer)
    # The float model input, as the debugger's float copy of the first op reads it: that op's
    # error includes the input's quantization.
    walk.model(keras_model, [x.astype(np.float32)], ())
    runner = {r.get("layer"): r for r in (record.get("layers") or {}).get("rows") or []}
    found = {}
    for r in rows:
        layer = r["layer"]
        ref = refs[layer].astype(np.float64)
        got = by_layer[layer].reshape(ref.shape)
        out = {"accumulated": _stats(got - ref)}
        if layer in walk.local:
            out["local"] = _stats(got - walk.local[layer].reshape(ref.shape))
        sqnr = runner.get(layer, {}).get("sqnr_db")
        out["runner_mse"] = (float(np.mean(ref ** 2)) * 10 ** (-sqnr / 10)
                             if sqnr is not None else None)
        out["runner_max_abs"] = runner.get(layer, {}).get("max_abs")
        found[layer] = out
    return found


# ---------------------------------------------------------------------------- the run folder

def _representative(folder: RunFolder, name: str, keras_model, manifest: dict, entry: dict,
                    data: Path | None):
    """The samples edgepipe calibrated the variant on (stage_convert's rule)."""
    count = int((entry.get("converter") or {}).get("representative_samples") or 200)
    if data is None:
        from edgepipe.pipeline.conversion import model_data

        return model_data(keras_model, folder.keras(name), None, count, need_rep=True
                          ).representative
    from edgepipe.models.datasets import load_npz_as_given, sample_count, take
    from edgepipe.models.loading import describe_io

    io = describe_io(keras_model, data)
    seed = int(manifest.get("seed") or 0)
    given = load_npz_as_given(data, seed, io.inputs)
    order = np.random.default_rng(seed).permutation(sample_count(given.x_train))
    return take(given.x_train, order[:count])


def compare_model(folder: RunFolder, manifest: dict, entry: dict, record: dict,
                  keras_path: Path, data: Path | None = None, custom_objects=(),
                  kernels: str = "reference") -> dict:
    from edgepipe.models.loading import LoadOptions, load_keras

    name = entry["model"]
    block = manifest["models"][name]["layers"]
    dataset = manifest["datasets"][manifest["models"][name]["dataset"]]
    samples = np.asarray(block["samples"], np.int64)
    x = np.load(folder.root / dataset["inputs"])[samples].astype(np.float32)
    refs = {o["layer"]: np.load(folder.root / o["path"]) for o in block["outputs"]}
    model = load_keras(keras_path, LoadOptions.from_files(custom_objects))
    rep = _representative(folder, name, model, manifest, entry, data)
    tf_side = debugger_statistics(model, rep, x)
    tflite = (folder.root / entry["tflite"]).read_bytes()
    ours = edgepipe_statistics(model, entry, refs, record, tflite, x, kernels)
    return {"model": name, "id": entry["id"], "samples": len(samples), "kernels": kernels,
            "rows": _rows(entry, tf_side, ours, list(refs)),
            "grids": _grid_check(entry, tf_side["grids"])}


def _grid_check(entry: dict, grids: dict) -> dict:
    """Do the debugger's quantized model and edgepipe's variant put each layer tensor on the
    same grid (same calibration, same quantizer)?"""
    same = differ = 0
    for r in entry.get("layers") or []:
        theirs = grids.get(r["tensor_name"])
        if theirs is None or r.get("scale") is None:
            continue
        ok = math.isclose(theirs[0], r["scale"], rel_tol=1e-6) and theirs[1] == r["zero_point"]
        same += ok
        differ += not ok
    return {"same": same, "differ": differ}


def _rows(entry: dict, tf_side: dict, ours: dict, paths: list) -> list:
    """One row per debugger tensor (in the debug model's op order) and per edgepipe layer."""
    from edgepipe.converters.layer_tensors import _layer_tree, layers_in_name

    by_name = {r["tensor_name"]: r for r in entry.get("layers") or []}
    tree = _layer_tree(paths)
    rows, seen = [], set()
    for tensor, metrics in tf_side["per_op"].items():
        mine = by_name.get(tensor)
        whole = tf_side["whole"].get(tensor, {})
        row = {"tensor": tensor, "tf_mse": metrics["mean_squared_error"],
               "tf_max": metrics["max_abs_error"], "tf_whole_mse": whole.get(
                   "mean_squared_error")}
        if mine is not None:
            seen.add(mine["layer"])
            e = ours[mine["layer"]]
            row.update(layer=mine["layer"], op=mine["op"],
                       ep_mse=e.get("local", {}).get("mse"),
                       ep_max=e.get("local", {}).get("max_abs"),
                       ep_acc_mse=e["accumulated"]["mse"], runner_mse=e["runner_mse"])
        else:
            inside = layers_in_name(tensor, tree)
            row.update(layer=None, inside=inside[-1] if inside else None)
        rows.append(row)
    for r in entry.get("layers") or []:
        if r["layer"] not in seen:
            e = ours[r["layer"]]
            rows.append({"tensor": r["tensor_name"], "layer": r["layer"], "op": r["op"],
                         "tf_mse": None, "tf_max": None, "tf_whole_mse": None,
                         "ep_mse": e.get("local", {}).get("mse"),
                         "ep_max": e.get("local", {}).get("max_abs"),
                         "ep_acc_mse": e["accumulated"]["mse"], "runner_mse": e["runner_mse"],
                         "no_verify": True})
    return rows


# ---------------------------------------------------------------------------- the tables

def _g(v) -> str:
    if v is None:
        return "—"
    return "0" if v == 0 else f"{v:.3g}"


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2g}%"


def table(result: dict) -> str:
    lines = [f"### {result['id']} ({result['samples']} samples, {result['kernels']} kernels; "
             f"grids: "
             f"{result['grids']['same']} layer tensors on the same grid as the debugger's "
             f"model, {result['grids']['differ']} differ)", "",
             "| layer | tensor | debugger MSE (per op) | edgepipe MSE (layer on dequantized "
             "inputs) | rel. diff | debugger max\\|Δ\\| | edgepipe max\\|Δ\\| | rel. diff | "
             "debugger MSE (whole model) | edgepipe MSE (runner, vs Keras) | rel. diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r.get("layer") is None:
            layer = f"(inside `{r['inside']}`)" if r.get("inside") else "(no layer)"
        else:
            layer = f"`{r['layer']}` {r['op']}" + (" (no NumericVerify)"
                                                  if r.get("no_verify") else "")
        lines.append(" | ".join([
            f"| {layer}", f"`{r['tensor']}`", _g(r["tf_mse"]), _g(r.get("ep_mse")),
            _pct(rel_diff(r["tf_mse"], r.get("ep_mse"))), _g(r["tf_max"]), _g(r.get("ep_max")),
            _pct(rel_diff(r["tf_max"], r.get("ep_max"), TINY_ABS)), _g(r["tf_whole_mse"]),
            _g(r.get("runner_mse")), _pct(rel_diff(r["tf_whole_mse"], r.get("runner_mse")))])
            + " |")
    return "\n".join(lines)


def summary(result: dict) -> str:
    both = [r for r in result["rows"] if r.get("layer") and r["tf_mse"] is not None]
    op = [rel_diff(r["tf_mse"], r["ep_mse"]) for r in both if r.get("ep_mse") is not None]
    acc = [rel_diff(r["tf_whole_mse"], r["runner_mse"]) for r in both
           if r["tf_whole_mse"] is not None and r.get("runner_mse") is not None]
    inside = sum(r.get("layer") is None for r in result["rows"])
    none = sum(bool(r.get("no_verify")) for r in result["rows"])
    return (f"{result['id']}: {len(both)} layers matched by tensor name; per-op MSE rel. diff "
            f"max {_pct(max(op)) if op else '—'}, accumulated MSE rel. diff max "
            f"{_pct(max(acc)) if acc else '—'}; {inside} debugger tensors inside layers, "
            f"{none} layers without NumericVerify")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder made by `edgepipe run`")
    parser.add_argument("--models", default="", help="comma-separated model names (default: "
                                                     "every int8 variant)")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="a user's .keras file the run was made with (name = its stem)")
    parser.add_argument("--data", type=Path, help="the .npz the run was made with (--model)")
    parser.add_argument("--custom-objects", type=Path, action="append", default=[],
                        help="the Python file(s) of the models' custom layers (as for "
                             "`edgepipe run`)")
    parser.add_argument("--kernels", choices=sorted(TARGETS), default="reference",
                        help="edgepipe's side: reference kernels and host-ref's results "
                             "(default), or the default kernels (those the debugger's "
                             "interpreter uses) and host's results")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--out", type=Path, help="also write the tables as Markdown")
    args = parser.parse_args(argv)
    folder = RunFolder(args.run)
    manifest = json.loads(folder.manifest.read_text())
    results = json.loads(folder.target_results(TARGETS[args.kernels]).read_text())["results"]
    records = {r["id"]: r for r in results}
    wanted = {m for m in args.models.split(",") if m}
    given = {p.stem: p for p in args.model}
    done, text = [], []
    for entry in manifest["entries"]:
        if (entry.get("mode") != "int8" or entry.get("repair") or not entry.get("layers")
                or (wanted and entry["model"] not in wanted)):
            continue
        keras_path = given.get(entry["model"], folder.keras(entry["model"]))
        result = compare_model(folder, manifest, entry, records.get(entry["id"], {}),
                               keras_path, args.data, args.custom_objects, args.kernels)
        done.append(result)
        block = table(result) + "\n\n" + summary(result) + "\n"
        print(block, flush=True)
        text.append(block)
    if args.out:
        args.out.write_text("\n".join(text))
    if args.json:
        args.json.write_text(json.dumps(done, indent=1))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
