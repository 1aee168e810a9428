"""Which tensor of a .tflite holds each Keras layer's output, found from the tensors' names.

The converter names an op's output tensor after the TF ops it came from, under the Keras call
scopes: `<model>_1/<layer>_1/<op>` (a nested model adds its own scope: `<model>_1/<inner>_1/
<layer>_1/<op>`), and joins the names of fused ops with ';' (a Dense followed by an
Activation("relu") layer: `m_1/hidden_1/MatMul;m_1/relu_1/Relu`, one tensor for both layers).
TF makes each scope unique by adding `_<n>` to the layer's name (`step` -> `step_1`, a layer
named `step_1` -> `step_1_2`, a shared layer's second call -> `shared_3`), so one trailing
`_<n>` is removed before a scope is looked up among the layer names.

Only operator outputs can be layer outputs (weights carry their layer's name too), and not those
computed from constants alone (float16 weights dequantized at load). The graph's output tensor
has no layer in its name (`StatefulPartitionedCall_1:0`): it belongs to the model's output
layer. A QUANTIZE the converter inserts outputs `tfl.quantize`: it takes the layer of its input
when that input is a layer's float output.

A layer's tensor is the last operator output (in execution order) whose name holds its scope;
when several layers end on one tensor, the last of them in Keras' call order owns it and the
others are fused into it. Nothing here depends on a layer's class.
"""

from __future__ import annotations

import re

from .tflite_file import Operator, TFLiteModel

_UNIQUE_SUFFIX = re.compile(r"^(.+)_\d+$")
_OUTPUT_INDEX = re.compile(r":(\d+)$")


def _layer_tree(paths) -> dict:
    """{name: subtree} from layer paths ("outer/inner"): a nested model's layers under it."""
    tree: dict = {}
    for path in paths:
        node = tree
        for part in path.split("/"):
            node = node.setdefault(part, {})
    return tree


def _scope_name(scope: str, known) -> str | None:
    """The layer (or nested model) name a call scope stands for among `known`: without its
    uniquifying `_<n>` first (a layer named `step_1` has the scope `step_1_2`), as it is else."""
    match = _UNIQUE_SUFFIX.match(scope)
    if match and match.group(1) in known:
        return match.group(1)
    return scope if scope in known else None


def layers_in_name(name: str, tree: dict, model_name: str | None = None) -> list[str]:
    """The layer paths whose call scopes a tensor name holds, in the order they appear."""
    found = []
    for part in name.split(";"):
        scopes = part.split("/")[:-1]  # the last component is the TF op
        if not scopes:
            continue
        if model_name is not None and _scope_name(scopes[0], {model_name}) is None:
            continue
        node, path = tree, []
        for scope in scopes[1:]:
            step = _scope_name(scope, node)
            if step is None:
                break
            path.append(step)
            node = node[step]
            if not node:  # a layer, not a nested model: the rest is inside the layer
                found.append("/".join(path))
                break
    return list(dict.fromkeys(found))


def _quantization(tensor) -> tuple:
    if len(tensor.scales) == 1:
        return float(tensor.scales[0]), int(tensor.zero_points[0]) if tensor.zero_points else 0
    return None, None


def tensor_layers(model: TFLiteModel, paths, outputs=(), model_name: str | None = None):
    """(op, output tensor index, layer paths in call order) for every output of an op of
    subgraph 0 that names a layer, in the order the ops run (arguments as `map_layers`').
    Ops computed from constants alone are skipped."""
    order = {path: i for i, path in enumerate(paths)}
    tree = _layer_tree(paths)
    graph = model.subgraphs[0]
    constant = {t.index for t in graph.tensors if t.buffer_bytes}
    graph_outputs = {}
    for position, index in enumerate(graph.outputs):
        if index < 0:
            continue
        match = _OUTPUT_INDEX.search(graph.tensors[index].name)
        k = int(match.group(1)) if match and len(graph.outputs) > 1 else position
        if k < len(outputs):
            graph_outputs[index] = outputs[k]
    holds: dict[int, list[str]] = {}
    for op in graph.operators:
        inputs = [i for i in op.inputs if i >= 0]
        if inputs and all(i in constant for i in inputs):
            constant.update(i for i in op.outputs if i >= 0)
            continue
        for index in op.outputs:
            if index < 0:
                continue
            layers = layers_in_name(graph.tensors[index].name, tree, model_name)
            if op.name == "QUANTIZE" and not layers and inputs:
                source = graph.tensors[inputs[0]]
                if source.dtype.startswith("float") and not source.is_quantized:
                    layers = holds.get(inputs[0], [])
            if index in graph_outputs:
                layers = [*layers, graph_outputs[index]]
            layers = sorted((layer for layer in dict.fromkeys(layers) if layer in order),
                            key=order.__getitem__)
            if layers:
                holds[index] = layers
                yield op, index, layers


def map_layers(model: TFLiteModel, paths, outputs=(), model_name: str | None = None
               ) -> tuple[list[dict], list[dict]]:
    """(rows, fused) for subgraph 0 of `model`.

    `paths`: the Keras layer paths in call order; `outputs`: the layer path of each model
    output, in the Keras model's output order; `model_name`: the Keras model's name, to check
    the outer scope (None: any). Rows, in the order the ops run: {"layer", "op", "tensor",
    "tensor_name", "dtype", "scale", "zero_point"}; fused: {"layer", "into"} for layers whose
    tensor another layer's output took over. Layers with no tensor at all (a Dropout, a layer
    the converter folded into a constant) are in neither."""
    paths = list(paths)
    order = {path: i for i, path in enumerate(paths)}
    graph = model.subgraphs[0]
    holds: dict[int, list[str]] = {}  # tensor -> the layers its name (or its origin) gives it
    last: dict[str, tuple[Operator, int]] = {}  # layer -> (op, tensor) of its last own output
    taken: dict[str, tuple[Operator, int]] = {}  # layer -> its last output a later layer took
    for op, index, layers in tensor_layers(model, paths, outputs, model_name):
        holds[index] = layers
        # A tensor that also names a later layer is that layer's work: a Dense followed by
        # Activation("relu") (one tensor for both), or a mish whose inner Relu the converter
        # fused into a second copy of the Dense before it. It is a layer's own output only
        # when it names no later layer.
        latest = max(layers, key=order.__getitem__)
        for layer in layers:
            (last if layer == latest else taken)[layer] = (op, index)
    rows, fused = [], []
    for layer, (_, index) in taken.items():
        if layer not in last:  # no tensor of its own: fused into the latest layer it shares
            fused.append({"layer": layer,
                          "into": max(holds[index], key=order.__getitem__)})
    for layer, (op, index) in sorted(last.items(), key=lambda kv: (kv[1][0].index,
                                                                  kv[1][0].outputs.index(
                                                                      kv[1][1]))):
        tensor = graph.tensors[index]
        scale, zero_point = _quantization(tensor)
        rows.append({"layer": layer, "op": op.name, "tensor": index,
                     "tensor_name": tensor.name, "dtype": tensor.dtype, "scale": scale,
                     "zero_point": zero_point})
    return rows, fused
