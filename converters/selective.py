"""Mixed-precision variants for repair by selective precision (issue 15): an integer variant with
chosen nodes kept in higher precision, built by existing tools, never by edgepipe's own rewriting.

- `float_islands`: TF's `QuantizationDebugger` with `denylisted_nodes`, int8 only (its int16x8
  is unsupported: tensorflow/tensorflow#56899). The converter is the plain int8 variant's
  (`convert.make_converter`, same representative samples); `fully_quantize` keeps the plain
  variant's int8 input and output, which the debugger's default (float I/O) would change.
- `ai_edge_quantized`: Google's AI Edge Quantizer (TF-free) on the float32 variant, a static
  recipe for the whole model and per-layer overrides by regex on the ops' output tensor names.
  Calibrated with global min/max: its default moving average of min/max clipped the zoo's outputs.
- `nodes_of_layers` / `layer_regex`: from Keras layer paths to those node names and regexes (names
  matched as converters/layer_tensors.py matches them).

Each tool's silent fallbacks are checked afterwards (a node name that matches nothing, an
override the quantizer skipped): a repair that did not happen must not pass as one.
"""

import copy
import hashlib
import re
import warnings
from importlib import metadata
from pathlib import Path

from ..core.versions import versions
from ..device_tests.schema import ConversionStatus
from .convert import ConversionFailure, make_converter, temporary_export
from .layer_tensors import layers_in_name
from .modes import QuantMode
from .native_output import captured_native_output
from .representative import by_input_name, calibration_samples
from .tflite_file import TFLiteModel, read_tflite

PRECISIONS = ("int16", "float32")
# The recipe each mode starts from (AI Edge Quantizer's names, recipe.py): activation bits.
AEQ_RECIPES = {QuantMode.INT8: ("static_wi8_ai8", 8), QuantMode.INT16X8: ("static_wi8_ai16", 16)}
_QUANTIZED = {"int8", "uint8", "int16"}
_RANK = {"int8": 0, "uint8": 0, "int16": 1, "float16": 2, "float32": 3}


class SelectiveFailure(ConversionFailure):
    """A mixed-precision variant the tool refused or could not make as asked (one line)."""


def _refused(reason: str, status=ConversionStatus.FAILED, log: str = "") -> SelectiveFailure:
    return SelectiveFailure(status, " ".join(reason.split()), log=log)


def _first_line(error: Exception) -> str:
    text = str(error)
    return next((line.strip() for line in text.splitlines() if line.strip()),
                type(error).__name__)[:300]


def debugger_tool() -> str:
    """The `repair.tool` text for `float_islands`."""
    found = versions()
    return f"tensorflow {found.get('tensorflow-cpu') or found.get('tensorflow')} " \
        "QuantizationDebugger"


def aeq_tool() -> str:
    """The `repair.tool` text for `ai_edge_quantized`."""
    return f"ai-edge-quantizer {metadata.version('ai-edge-quantizer')}"


# ---- Keras layer paths -> TFLite node names and AI Edge Quantizer regexes ------------------

def layer_pattern(layer: str) -> str:
    """A regex that finds tensor names inside the scope of `layer` (a layer path, nested model
    calls joined by "/"), as layer_tensors.layers_in_name reads them: TF names the graph scope
    `<model>_1/<layer>_1/<op>`, one `_<n>` added to each name; the first component is the
    model's own scope, never a layer (the leading '/' keeps a layer named like the model from
    matching it)."""
    parts = [p for p in layer.split("/") if p]
    if not parts:
        raise ValueError(f"Expected a Keras layer path. Received: layer={layer!r}")
    return "/" + "/".join(re.escape(p) + r"(?:_\d+)?" for p in parts) + "/"


def _op_outputs(model: TFLiteModel):
    """(op, output tensor) for every operator output in the main subgraph: only these are layer
    outputs (constants carry layer names too: a Dense's weights)."""
    for op in model.subgraphs[0].operators:
        for t in model.outputs_of(op):
            yield op, t


def _model(tflite) -> TFLiteModel:
    return tflite if isinstance(tflite, TFLiteModel) else read_tflite(bytes(tflite))


def nodes_of_layers(tflite, layers, output_layer: str | None = None) -> list[str]:
    """The op output tensor names of `tflite` (bytes or a TFLiteModel) that belong to `layers`
    (layer paths), in graph order: the names `float_islands` takes. Every op inside a layer
    counts (a step's GREATER and CAST), and a fused op (`.../hidden_1/MatMul;.../relu_1/Relu`)
    belongs to every layer it names. `output_layer`: the Keras model's output layer, whose
    tensor is the graph output (named `StatefulPartitionedCall_1:0`, no layer in it).
    Raises SelectiveFailure naming a layer that owns no op output."""
    model = _model(tflite)
    layers = list(dict.fromkeys(layers))
    tree: dict = {}  # {name: subtree}, as layers_in_name takes the layer paths
    for layer in layers:
        node = tree
        for part in layer.split("/"):
            node = node.setdefault(part, {})
    graph_outputs = {t.index for t in model.output_tensors()}
    found, owned = [], set()
    for _, t in _op_outputs(model):
        held = set(layers_in_name(t.name, tree))
        if output_layer in layers and t.index in graph_outputs:
            held.add(output_layer)
        if held:
            owned |= held
            found.append(t.name)
    missing = [layer for layer in layers if layer not in owned]
    if missing:
        raise _refused(f"not converted: no operator output of the variant belongs to layer(s) "
                       f"{', '.join(map(repr, missing))} (its op outputs: "
                       f"{', '.join(t.name for _, t in _op_outputs(model))[:300]}); name "
                       "Keras layer paths, or pass output_layer for the model's output layer")
    return list(dict.fromkeys(found))


def layer_regex(layers, tflite=None, output_layer: str | None = None) -> str:
    """One regex for AI Edge Quantizer's overrides that selects the ops of `layers`: it is
    searched in an op's scope (its output tensor names joined by ';', with a trailing ';').
    With `tflite` (the float32 variant it quantizes) every layer must own an op there (else
    SelectiveFailure, as `nodes_of_layers`), and `output_layer`'s graph output tensor, which
    has no layer in its name, is matched by its exact name."""
    layers = list(dict.fromkeys(layers))
    alternatives = [layer_pattern(layer) for layer in layers]
    if tflite is not None:
        model = _model(tflite)
        nodes_of_layers(model, layers, output_layer)
        if output_layer in layers:
            alternatives += [f"(?:^|;){re.escape(t.name)};" for t in model.output_tensors()]
    return "|".join(alternatives)


def nodes_of_ops(tflite, ops) -> list[str]:
    """The output tensor names of every operator named in `ops` (e.g. the EXP and LOG a target
    lacks in int8): the nodes `float_islands` keeps in float when only those ops need to be.
    Raises SelectiveFailure when the variant holds none of them."""
    model = _model(tflite)
    wanted = set(ops)
    found = [t.name for op, t in _op_outputs(model) if op.name in wanted]
    if not found:
        raise _refused(f"not converted: the variant holds no {', '.join(sorted(wanted))} op")
    return list(dict.fromkeys(found))


def ops_regex(tflite, ops) -> str:
    """A regex for AI Edge Quantizer's overrides that selects exactly the operators named in
    `ops` in `tflite` (the float32 variant it quantizes), by their output tensor names."""
    return "|".join(f"(?:^|;){re.escape(name)};" for name in nodes_of_ops(tflite, ops))


def layers_of_ops(tflite, ops, layer_names) -> list[str]:
    """The layers among `layer_names` (in their order) that hold an operator named in `ops`
    (e.g. the EXP a target refuses in int8 -> the mish layer). Ops outside every layer's scope
    (a QUANTIZE the converter inserted, the graph output's op) name no layer."""
    model = _model(tflite)
    tree = {name: {} for name in layer_names}
    wanted = set(ops)
    held = set()
    for op, t in _op_outputs(model):
        if op.name in wanted:
            held.update(layers_in_name(t.name, tree))
    return [name for name in layer_names if name in held]


# ---- TF's QuantizationDebugger: nodes kept in float ----------------------------------------

def float_islands(source, representative, nodes, mode: QuantMode = QuantMode.INT8,
                  debug: bool = False) -> bytes:
    """An int8 variant with `nodes` (op output tensor names of the plain int8 variant, as
    `nodes_of_layers` gives them) computed in float, with QUANTIZE/DEQUANTIZE around them.
    `source`: a SavedModel folder (`representative` as `convert_saved_model` takes it) or a
    Keras model (`representative` as `convert_model` takes it). The converter options and the
    representative samples are the plain int8 variant's; input and output stay int8."""
    mode = QuantMode(mode)
    if mode is not QuantMode.INT8:
        raise _refused(f"unsupported: TF's QuantizationDebugger keeps nodes in float in int8 "
                       f"variants only, not {mode.value} (tensorflow/tensorflow#56899); use "
                       "ai_edge_quantized for int16 activations", ConversionStatus.UNSUPPORTED)
    nodes = list(dict.fromkeys(nodes))
    if not nodes:
        raise ValueError("Expected at least one node to keep in float. Received: nodes=[]")
    if representative is None:
        raise _refused("not converted: float islands need the plain int8 variant's "
                       "representative samples to calibrate")
    if isinstance(source, (str, Path)):
        return _float_islands(Path(source), representative, nodes, debug)
    with temporary_export(source, debug) as saved_model:
        return _float_islands(saved_model, by_input_name(source, representative), nodes, debug)


def _float_islands(saved_model: Path, representative, nodes: list[str], debug: bool) -> bytes:
    import tensorflow as tf

    def samples():
        return calibration_samples(representative)

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes,
                                                            fully_quantize=True)
    log = []
    try:
        with captured_native_output(not debug) as log, warnings.catch_warnings():
            # The debugger builds a tf.lite.Interpreter, which warns of its deprecation.
            warnings.simplefilter("ignore")
            converter = make_converter(saved_model, QuantMode.INT8, samples)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=samples, debug_options=options)
            flatbuffer = debugger.get_nondebug_quantized_model()
    except Exception as e:  # the converter and the debugger raise ConverterError, ValueError
        raise _refused(f"not converted: {debugger_tool()} failed keeping "
                       f"{', '.join(nodes)} in float: {_first_line(e)}",
                       log="".join(log)) from e
    _check_islands(read_tflite(flatbuffer), nodes)
    return flatbuffer


def _check_islands(model: TFLiteModel, nodes: list[str]) -> None:
    """Every node exists and computes in float, and the I/O stays int8: the debugger ignores
    unknown names silently, which would hand back the plain variant as a 'repair'."""
    producers = {t.name: op for op, t in _op_outputs(model)}
    missing = [n for n in nodes if n not in producers]
    if missing:
        raise _refused(f"not converted: node(s) {', '.join(map(repr, missing))} are not "
                       "operator outputs of the int8 variant; take the names from "
                       "nodes_of_layers() on the plain int8 variant")
    quantized = [n for n in nodes
                 if any(t.dtype in _QUANTIZED for t in model.inputs_of(producers[n])
                        + model.outputs_of(producers[n]))]
    if quantized:
        raise _refused(f"not converted: the QuantizationDebugger left node(s) "
                       f"{', '.join(map(repr, quantized))} quantized")
    io = [t for t in model.input_tensors() + model.output_tensors()
          if t.dtype not in _QUANTIZED and t.dtype.startswith("float")]
    if io:
        raise _refused(f"not converted: float islands changed the int8 variant's input/output "
                       f"{io[0].name!r} to {io[0].dtype}")


# ---- AI Edge Quantizer: per-layer precision by regex ---------------------------------------

def ai_edge_quantized(float32_tflite: bytes, representative, mode: QuantMode = QuantMode.INT8,
                      overrides: dict | None = None, debug: bool = False,
                      calibrations: dict | None = None) -> bytes:
    """The float32 variant quantized by AI Edge Quantizer: `mode` "int8" (static_wi8_ai8) or
    "int16x8" (static_wi8_ai16) for the whole model, then `overrides` {regex on an op's output
    tensor names: "int16" | "float32"} (later ones win; `layer_regex` builds them). Calibrated
    on `representative` (the plain variant's samples: one array, or {input name: array}) with
    global min/max. The quantizer keeps float32 input and output (QUANTIZE/DEQUANTIZE at the
    ends). Raises SelectiveFailure when it refuses, or when an override was not applied.
    `calibrations`: a dict kept across calls with the same `representative` (a repair search's
    tries), where each float32 model's calibration is kept: it was 80 % of a try's time."""
    try:
        mode = QuantMode(mode)
    except ValueError:
        mode = None
    if mode not in AEQ_RECIPES:
        raise ValueError(f"Expected mode int8 or int16x8. Received: mode={mode!r}")
    overrides = dict(overrides or {})
    for regex, precision in overrides.items():
        if precision not in PRECISIONS:
            raise ValueError(f"Expected a precision among {', '.join(PRECISIONS)}. Received: "
                             f"{regex!r}: {precision!r}")
        try:
            re.compile(regex)
        except re.error as e:
            raise ValueError(f"Expected a regular expression. Received: {regex!r} ({e})") \
                from None
    if representative is None:
        raise _refused(f"not converted: {aeq_tool()}'s {AEQ_RECIPES[mode][0]} needs the plain "
                       "variant's representative samples to calibrate")
    float_model = read_tflite(bytes(float32_tflite))
    scopes = [";".join(t.name for t in float_model.outputs_of(op)) + ";"
              for op in float_model.subgraphs[0].operators]
    idle = [r for r in overrides if not any(re.search(r, s) for s in scopes)]
    if idle:
        raise _refused(f"not converted: override regex {idle[0]!r} matches no operator's "
                       "output tensor names in the float32 variant")
    log = []
    try:
        with captured_native_output(not debug) as log, warnings.catch_warnings():
            # Its calibrator preserves all tensors on purpose, and LiteRT warns of it.
            warnings.simplefilter("ignore")
            flatbuffer = _aeq_quantize(bytes(float32_tflite), representative, mode, overrides,
                                       calibrations)
    except Exception as e:  # AEQ raises ValueError, RuntimeError, KeyError on what it refuses
        raise _refused(f"not converted: {aeq_tool()} refused: {_first_line(e)}",
                       log="".join(log)) from e
    _check_overrides(float_model, read_tflite(flatbuffer), overrides)
    return flatbuffer


def _aeq_quantize(float_bytes: bytes, representative, mode: QuantMode, overrides: dict,
                  calibrations: dict | None = None) -> bytes:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import (
        algorithm_manager,
        calibrator,
        qtyping,
        quantizer,
        recipe_manager,
    )
    from ai_edge_quantizer.utils import qsv_utils

    all_ops = qtyping.TFLOperationName.ALL_SUPPORTED

    def everywhere():  # the mode for every op
        recipes = recipe_manager.RecipeManager()
        recipes.add_static_config(".*", all_ops, activation_num_bits=AEQ_RECIPES[mode][1],
                                  weight_num_bits=8)
        return recipes

    whole, recipes = everywhere(), everywhere()
    for regex, precision in overrides.items():
        if precision == "int16":
            recipes.add_static_config(regex, all_ops, activation_num_bits=16, weight_num_bits=8)
        else:
            recipes.add_quantization_config(
                regex, all_ops, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)

    # Calibrated for the whole model in the mode: the min/max of every tensor, whichever a try
    # keeps in float32 or int16 (its recipe takes the ones it quantizes), so one calibration
    # serves every try. Global min/max (qsv_utils.min_max_update) instead of the default moving
    # average with smoothing 0.95, which forgets early extremes: on the zoo it clipped outputs.
    key = (hashlib.sha256(float_bytes).hexdigest(), mode)
    qsvs = (calibrations or {}).get(key)
    if qsvs is None:
        signatures = Interpreter(model_content=float_bytes).get_signature_list()
        name, signature = next(iter(signatures.items()))
        calib = calibrator.Calibrator(float_bytes, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({name: list(_signature_samples(representative, signature["inputs"]))},
                        whole)
        qsvs = calib.get_model_qsvs()
        if calibrations is not None:
            calibrations[key] = qsvs
    quant = quantizer.Quantizer(float_bytes, recipes.get_quantization_recipe())
    result = quant.quantize(copy.deepcopy(qsvs), enable_progress_report=False)  # kept as read
    return bytes(result.quantized_model)


def _signature_samples(representative, input_names):
    """The representative samples as AEQ's calibration takes them: {signature input: batch of
    one} per sample; the signature's input names are the Keras input names."""
    names = list(input_names)
    for sample in calibration_samples(representative):
        if isinstance(sample, dict):
            unknown = set(sample) - set(names)
            if unknown:
                raise ValueError(f"representative input(s) {sorted(unknown)} are not inputs "
                                 f"of the float32 variant ({', '.join(names)})")
            yield sample
        else:
            if len(names) != len(sample):
                raise ValueError(f"{len(sample)} representative array(s) for a model with "
                                 f"inputs {', '.join(names)}: give {{input name: array}}")
            yield dict(zip(names, sample, strict=True))


def _check_overrides(float_model: TFLiteModel, quantized: TFLiteModel, overrides: dict) -> None:
    """No float32 output of an overridden op ends in lower precision than asked: AEQ skips an
    override it has no config for and silently falls back to the whole-model recipe. Higher is
    fine (an op AEQ does not quantize, such as CAST, stays float32 under an int16 override)."""
    if not overrides:
        return
    asked = {}
    for op in float_model.subgraphs[0].operators:
        outputs = float_model.outputs_of(op)
        scope = ";".join(t.name for t in outputs) + ";"
        precision = None
        for regex, p in overrides.items():  # the last matching override wins, as in AEQ
            if re.search(regex, scope):
                precision = p
        if precision:
            for t in outputs:
                if t.dtype == "float32":
                    asked[t.name] = (op.name, precision)
    got = {t.name: t.dtype for _, t in _op_outputs(quantized)}
    wrong = [(name, op, p, got.get(name)) for name, (op, p) in asked.items()
             if _RANK.get(got.get(name), -1) < _RANK[p]]
    if wrong:
        name, op, p, dtype = wrong[0]
        raise _refused(f"not converted: {aeq_tool()} left {op} ({name}) {dtype or 'absent'} "
                       f"where {p} was asked ({len(wrong)} tensor(s) so)",
                       ConversionStatus.UNSUPPORTED)
