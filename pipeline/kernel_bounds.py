"""How far two targets' outputs may be apart, derived from the kernels they compute differently
(docs/bundle.md, entry field `target_bounds`).

TFLite Micro and LiteRT's reference kernels compute most ops to the bit. A few differ by a
rounding: `tools/measure_tflm_ops.py` runs both on the same inputs, keeps every tensor, and
records for each op and kernel type the largest difference one invocation makes on identical
inputs, in steps of the op's output (`converters.tflm_ops.TFLM_KERNEL_STEPS`; int16
FULLY_CONNECTED: 1). Such a difference does not stay where it is born: the layers after it carry
it to the outputs with their gain.

For every op of a variant with a measured difference of d steps, the simulation walk that gives
the tolerances and the per-layer figures (pipeline/tolerances.py) adds d steps of the op's output
grid to the Keras layer the op belongs to: to the kernel's output before an activation the
converter keeps apart when the op is the layer's kernel (its first op, with more after it), else
to the layer's output (an op inside a layer counts as d steps of the coarser of its own and the
layer's output grid: the ops after it in the layer are taken to keep it at that size). The walk
runs the rest of the model with the mode's rounding, twice: every value moved up, and every value
moved by a fixed pattern of signs; a layer with a threshold (a jump in the model's boundary block)
keeps its outputs without the difference, since a flip is judged apart, by the flip analysis of
pipeline/results.py. The larger output change, E, bounds the two targets:

    steps = 1 + SAFETY x E / output step

the 1 being the rounding any two builds of the same kernel may differ by, SAFETY the tolerances'
factor for what the walk leaves out. Ops that were never compared on identical inputs count as 0
and are named in the derivation.
"""

from __future__ import annotations

from ..converters.layer_tensors import tensor_layers
from ..converters.modes import QuantMode
from ..converters.tflite_file import TFLiteModel
from ..converters.tflm_ops import TFLM_INACCURATE, TFLM_KERNEL_STEPS, TFLM_VERSION, kernel_type
from .tolerances import SAFETY, Shift, _flat

TARGET = "tflm"  # the target kind whose kernels were measured; compared with `host-ref`
_QUANTIZED = ("int8", "int16")


def differing_ops(model: TFLiteModel, paths, output_layers) -> tuple[list[dict], list[str]]:
    """([{"op", "type", "kernel_steps", "layer", "point", "amount"}, ...], [unmeasured op/type])
    for the ops of `model` (a parsed .tflite) with a quantized output: those whose TFLM kernel
    was measured to differ from the reference kernel, each placed at its Keras layer (`paths`:
    the layer paths in call order; `output_layers`: the layer of each model output)."""
    graph = model.subgraphs[0]
    placed = list(tensor_layers(model, list(paths), output_layers))
    by_layer: dict[str, list] = {}
    for op, index, layers in placed:
        by_layer.setdefault(layers[-1], []).append((op, index))
    found, unmeasured = [], []
    for op, index, layers in placed:
        tensor = graph.tensors[index]
        if tensor.dtype not in _QUANTIZED or len(tensor.scales) != 1:
            continue
        types = ([t.dtype for t in model.inputs_of(op)], [t.dtype for t in model.outputs_of(op)])
        ktype = kernel_type(op.name, *types)
        steps = TFLM_KERNEL_STEPS.get(op.name, {}).get(ktype)
        if ktype in TFLM_INACCURATE.get(op.name, ()):
            continue  # measured wrong on TFLM, not a rounding: it is to fail, not to be bounded
        if steps is None:
            unmeasured.append(f"{op.name} ({ktype})")
        if not steps:
            continue
        layer = layers[-1]
        own = by_layer[layer]
        last_scale = graph.tensors[own[-1][1]].scales
        first, last = own[0][0] is op, own[-1][0] is op
        scale = float(tensor.scales[0])
        if not last and not first:
            scale = max(scale, float(last_scale[0]) if len(last_scale) == 1 else scale)
        found.append({"op": op.name, "type": ktype, "kernel_steps": int(steps), "layer": layer,
                      "point": "pre" if first and not last else "out",
                      "amount": steps * scale})
    return found, sorted(set(unmeasured))


def derive(walks, mode: QuantMode, tflite, refs, simulated, output_step: float | None,
           keep: dict | None = None, boundary: dict | None = None) -> dict | None:
    """The entry's `target_bounds` (None: nothing to derive: a float mode, no op that differs,
    no simulation or no per-layer map to place the ops with). `tflite`: the variant's parsed
    file (TFLiteModel); `refs`: the model's
    LayerReferences; `simulated`: the variant's Simulation (pipeline/tolerances.py);
    `boundary`: the model's boundary block, whose layers with a jump are held at their
    unshifted outputs (a flip is the flip analysis' to judge, pipeline/results.py)."""
    if not mode.integer_only or refs is None or not output_step or simulated is None or \
            simulated.outputs is None:
        return None
    ops, unmeasured = differing_ops(tflite, refs.paths, refs.output_layers)
    if not ops:
        return None
    amounts: dict = {}
    for item in ops:
        point = amounts.setdefault(item["layer"], {})
        point[item["point"]] = point.get(item["point"], 0.0) + item["amount"]
    held = jumps(boundary)
    if held:  # walked again, keeping the threshold layers' outputs to hold them at
        simulated = walks.simulation(mode, keep, shift=Shift({}, capture=frozenset(held)))
        if simulated is None or simulated.outputs is None:
            return None
    base = _flat(simulated.outputs)
    moved = {}
    for signs in ("same", "random"):
        shifted = walks.simulation(mode, keep, shift=Shift(amounts, signs,
                                                           frozen=simulated.captured))
        if shifted is None or shifted.outputs is None:
            return None
        moved[signs] = float(abs(_flat(shifted.outputs) - base).max()) / output_step
    reach = max(moved.values())
    steps = 1.0 + SAFETY * reach
    listed = ", ".join(f"{o['op']} {o['type']} in {o['layer']} ({o['kernel_steps']} step"
                       f"{'s' * (o['kernel_steps'] != 1)})" for o in _distinct(ops))
    text = (f"1 + {SAFETY:g} x {reach:.3g} output steps = {steps:.1f}: tflite-micro "
            f"{TFLM_VERSION} differs from the reference kernels in {listed}, carried to the "
            f"outputs by the layers after them (moved up: {moved['same']:.3g} steps; by a "
            f"pattern of signs: {moved['random']:.3g})")
    if held:
        text += (f"; {', '.join(held)} held at their outputs without the difference: a "
                 "threshold flip is judged apart")
    if unmeasured:
        text += f"; not measured, counted as 0: {', '.join(unmeasured)}"
    return {TARGET: {"steps": steps, "ops": [{k: o[k] for k in
                                              ("op", "type", "kernel_steps", "layer")}
                                             for o in ops],
                     "derivation": text}}


def jumps(boundary: dict | None) -> list[str]:
    """The layers of a model's boundary block with a jump (a threshold) among their kinks."""
    if not boundary or not isinstance(boundary.get("kinks"), list):
        return []
    return [layer for layer, kinks in zip(boundary["layers"], boundary["kinks"], strict=True)
            if any(k.get("kind") == "jump" for k in kinks)]


def _distinct(ops: list) -> list:
    seen, out = set(), []
    for o in ops:
        key = (o["op"], o["type"], o["layer"])
        if key not in seen:
            seen.add(key)
            out.append(o)
    return out
