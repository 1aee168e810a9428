"""The repair search (issue 15), run in a build worker (TensorFlow): for each plain variant that
failed or that a target refused, try variants that keep the culprits in higher precision, or
that lower an activation into ops the target has, within a budget of conversions; judge each
try as the runner would (derived tolerance, reference kernels, the refusing target's measured
op table); record every try; make the first that passes a bundle entry of its own.

- A target lacks an op in every type (GELU on TFLite Micro): the model with the activations
  that declare a lowering avoiding it (models/lowering.py), converted in the same mode.
- A target refuses an op in this type only (int8 EXP on TFLite Micro): just those ops kept in
  a precision the target has them in (op-level islands), adding the next op it still lacks.
- An integer variant fails: culprit layer groups, greedily added. First the layers with a
  threshold (a jump, pipeline/kinks.py) together with the layers that feed them: a flip is
  decided by the quantized input of the comparison, which per-layer statistics do not show
  (FACTS.md: mlp_step int8 passes only when the Dense feeding the step and the comparison are
  both float); then the layers worst against their simulated bound, from the runner's
  per-layer comparison. Each group in each precision of [repair] precisions.
A repaired variant that a later parity round failed on some target is "rejected": its label is
not offered again (its try counts against the budget).
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..converters.modes import QuantMode
from ..converters.op_audit import OP_SETS, audit
from ..converters.tflite_file import read_tflite
from ..converters.variants import RECORD_SCHEMA_VERSION, Variant, file_record, save_variant
from ..core.versions import versions
from ..device_tests.schema import ConversionStatus, RunFolder
from .boundary import JUMP, layer_kinks
from .stage_convert import model_inputs

SHORT = {"float32": "f32", "int16": "i16"}


def tag_of(label: str) -> str:
    """The id/file part of a repaired variant's label: `int8+f32[hidden,step]` ->
    `int8.f32.hidden.step` (entry ids allow letters, digits, '.', '_' and '-' only)."""
    tag = label.replace("+", ".").replace("[", ".").replace(",", ".").replace("]", "")
    tag = "".join(c if c.isalnum() or c in "._-" else "_" for c in tag)
    if len(tag) > 120:  # many layers: keep the id short and unique
        import hashlib

        tag = f"{tag[:100]}.{hashlib.sha256(label.encode()).hexdigest()[:12]}"
    return tag


@dataclass
class Search:
    """What every try of one plain variant shares."""

    job: object
    entry: dict
    triggers: list
    model: object
    data: object
    rep: object
    reference: np.ndarray
    block: dict  # the model's block of the manifest (its boundary and layers blocks)
    saved_model: Path
    plain: bytes
    settings: object
    tries: list = field(default_factory=list)
    calibrations: dict = field(default_factory=dict)  # AI Edge Quantizer's, shared by the tries
    note: str = ""  # why nothing could be tried, when nothing was

    @property
    def mode(self) -> QuantMode:
        return QuantMode(self.entry["mode"])

    @property
    def budget_left(self) -> int:
        return self.settings.max_conversions - len(self.tries)

    def rejected(self, label: str) -> str | None:
        """Why a repaired variant with this label was rejected in an earlier round, or None."""
        return next((t["reason"] for t in self.triggers
                     if t["kind"] == "rejected" and t["label"] == label), None)


def repair_model(job) -> tuple[dict, list]:
    """Search every triggered entry of the job's model; (stage value {"entries", "repairs"},
    the files written, relative to the run folder)."""
    from ..converters.convert import temporary_export

    shared: dict = {}
    inputs = model_inputs(job, shared)
    folder = RunFolder(job.out)
    manifest = json.loads(folder.manifest.read_text())
    block = manifest["models"][job.name]
    entries = {e["id"]: e for e in manifest["entries"]}
    reference = np.load(folder.root / block["reference"])  # the bundle's Keras reference
    value, files = {"entries": [], "repairs": [], "rejected": []}, []
    with temporary_export(inputs.model, job.debug) as saved_model:
        for entry_id, entry_triggers in job.triggers.items():
            entry = entries[entry_id]
            value["rejected"] += [{**t, "of": entry_id} for t in entry_triggers
                                  if t["kind"] == "rejected"]
            search = Search(job, entry, entry_triggers, inputs.model, inputs.data, inputs.rep,
                            reference, block, saved_model,
                            (folder.root / entry["tflite"]).read_bytes(),
                            job.config.repair_for(job.name))
            found = _search(search)
            summary = {"of": entry_id, "mode": entry["mode"], "ok": found is not None,
                       "tries": search.tries,
                       "triggers": [{k: t[k] for k in ("target", "kind", "reason")}
                                    for t in entry_triggers]}
            if found is None:
                summary.update(label=None, why=_why_not(search))
            else:
                made, written = _save(search, found)
                value["entries"].append(made)
                files += written
                summary.update(label=found["label"], id=made["id"], why="")
            value["repairs"].append(summary)
    return value, files


def _why_not(search: Search) -> str:
    if not search.tries:
        return search.note or "no culprit layer to keep in higher precision"
    last, budget = search.tries[-1], search.settings.max_conversions
    spent = (f"the budget of {budget} conversions is spent" if len(search.tries) >= budget
             else "no culprit layer is left to add")
    return f"{spent}; last try {last['label']}: {last['why']}"


def _search(search: Search) -> dict | None:
    """The first try that passes (its label, bytes, precision, layers, keep), or None."""
    lowering = list(dict.fromkeys(op for t in search.triggers for op in t.get("lowering", ())))
    if lowering:
        return _lower(search, lowering)
    refused = list(dict.fromkeys(op for t in search.triggers for op in t["ops"]))
    if refused and not any(t["kind"] == "failure" for t in search.triggers):
        return _islands(search, refused)
    groups = _culprit_groups(search)
    if not groups:
        search.note = "no culprit layer found to keep in higher precision"
        return None
    keep: list[str] = []
    precisions = [p for p in search.settings.precisions
                  if not (p == "int16" and search.mode is QuantMode.INT16X8)]
    while groups:
        group = groups.pop(0)
        added = [layer for layer in group if layer not in keep]
        if not added:  # the same conversion again would only spend the budget
            continue
        keep += added
        for precision in precisions:
            if search.budget_left <= 0:
                return None
            found, more = _try(search, keep, precision)
            if found:
                return found
            for layer in _holding(search, more):  # an op a target lacks in this type
                if layer not in keep and [layer] not in groups:
                    groups.insert(0, [layer])
    return None


def _islands(search: Search, ops: list[str]) -> dict | None:
    """A refusal only: keep just the refused ops (their outputs) in a precision the refusing
    targets have them in, adding the next op a target still lacks, within the budget. The
    layer's output stays in the mode's type, so the tolerance is the plain one's."""
    from ..converters.op_audit import MEASURED_OP_SETS, measured_types

    sets = {t["op_set"] for t in search.triggers if t.get("op_set") in MEASURED_OP_SETS}
    precisions = [p for p in search.settings.precisions
                  if not (p == "int16" and search.mode is QuantMode.INT16X8)
                  and all(p in measured_types(s, op) for s in sets for op in ops)]
    if not precisions:
        search.note = (f"no precision in [repair] precisions "
                       f"({', '.join(search.settings.precisions)}) has a kernel for "
                       f"{', '.join(ops)} on {', '.join(sorted(sets))}")
        return None
    ops = list(ops)
    for precision in precisions:
        while search.budget_left > 0:
            found, more = _try(search, _holding(search, ops), precision, ops)
            if found:
                return found
            new = [op for op in more if op not in ops]
            if not new:
                break
            ops += new
    return None


def _holding(search: Search, ops: list[str]) -> list[str]:
    """The layers that hold an op named in `ops`."""
    from ..converters.selective import layers_of_ops

    return layers_of_ops(search.plain, ops, _layer_names(search)) if ops else []


def _culprit_groups(search: Search) -> list[list[str]]:
    """The culprit layer groups, most likely first (see the module docstring)."""
    groups: list[list[str]] = []
    refused = [op for t in search.triggers if t["kind"] == "refusal" for op in t["ops"]]
    if refused:
        groups.append(_holding(search, refused))
    if any(t["kind"] == "failure" for t in search.triggers):
        boundary = search.block.get("boundary") or {}
        for layer, kinks in zip(boundary.get("layers", []), layer_kinks(boundary) if boundary
                                else [], strict=True):
            if any(k.get("kind") == JUMP for k in kinks):  # a threshold: units can flip
                groups.append([*_producers(search.model, layer), layer])
        for t in search.triggers:
            groups += [[layer] for layer in t.get("layers", [])]
    seen, unique = set(), []
    for group in groups:
        key = tuple(group)
        if group and key not in seen:
            seen.add(key)
            unique.append(group)
    return unique


def _layer_names(search: Search) -> list[str]:
    return [layer.name for layer in search.model.layers]


def _producers(model, name: str) -> list[str]:
    """The layers whose outputs `name` takes (its first call's inputs), model inputs aside."""
    import keras

    try:
        layer = model.get_layer(name)
    except ValueError:
        return []
    found = []
    for node in getattr(layer, "_inbound_nodes", [])[:1]:
        for tensor in node.input_tensors:
            op = tensor._keras_history.operation
            if not isinstance(op, keras.layers.InputLayer) and op.name != name:
                found.append(op.name)
    return found


def _label(mode: QuantMode, precision: str, layers: list[str], ops=None) -> str:
    inside = f":{','.join(ops)}" if ops else ""
    return f"{mode.value}+{SHORT[precision]}[{','.join(layers)}{inside}]"


def _try(search: Search, keep: list[str], precision: str,
         ops: list[str] | None = None) -> tuple[dict | None, list[str]]:
    """One conversion with the layers `keep` (only their `ops`, when given) in `precision`,
    judged; (the found variant or None, the ops a refusing target still lacks)."""
    from ..converters import selective
    from ..converters.representative import by_input_name

    label = _label(search.mode, precision, keep, ops)
    record = {"label": label, "layers": list(keep), "precision": precision,
              "ops": list(ops or ())}
    if search.rejected(label):  # its conversion was spent in an earlier round
        record.update(bytes=None, ok=False, why=f"rejected: {search.rejected(label)}")
        search.tries.append(record)
        return None, []
    rep = by_input_name(search.model, search.rep)
    output_layer = search.model.outputs[0]._keras_history.operation.name
    try:
        # The QuantizationDebugger keeps the model's int8 output: a float output layer is
        # AI Edge Quantizer's (float32 at the edges) to make.
        if (precision == "float32" and search.mode is QuantMode.INT8
                and (ops or output_layer not in keep)):
            record["tool"] = selective.debugger_tool()
            nodes = (selective.nodes_of_ops(search.plain, ops) if ops else
                     selective.nodes_of_layers(search.plain, keep, output_layer))
            data = selective.float_islands(search.saved_model, rep, nodes,
                                           debug=search.job.debug)
        else:
            record["tool"] = selective.aeq_tool()
            float32 = _float32(search)
            regex = (selective.ops_regex(float32, ops) if ops else
                     selective.layer_regex(keep, float32, output_layer))
            data = selective.ai_edge_quantized(float32, rep, search.mode, {regex: precision},
                                               debug=search.job.debug,
                                               calibrations=search.calibrations)
    except Exception as e:  # a tool's refusal is this try's outcome, not the run's end
        record.update(bytes=None, ok=False, why=_one_line(e))
        search.tries.append(record)
        return None, []
    # Islands of single ops leave the layer's output in the mode's type: the plain simulation.
    keep_layers = None if ops else {layer: precision for layer in keep}
    ok, why, more = _judge(search, data, keep_layers, search.model)
    record.update(bytes=len(data), ok=ok, why=why)
    search.tries.append(record)
    if not ok:
        return None, more
    return {**record, "data": data, "keep": keep_layers, "kind": "precision",
            "model": search.model}, []


def _lower(search: Search, ops: list[str]) -> dict | None:
    """One conversion of the model with its activations lowered away from `ops`."""
    from ..converters.convert import convert_saved_model, temporary_export
    from ..converters.representative import by_input_name
    from ..models.lowering import lowered_model, output_change

    others = _also_lacking(search, ops)
    if others:
        search.note = (f"a lowering avoids {', '.join(ops)} but {others}: no lowering makes "
                       "this variant run there")
        return None
    lowered, what = lowered_model(search.model, set(ops))
    if lowered is None:
        search.note = (f"no layer declares a lowering that avoids {', '.join(ops)} "
                       "(README: Alternative lowerings)")
        return None
    names = ",".join(w["layer"] for w in what)
    how = "+".join(dict.fromkeys(w["lowering"] for w in what))
    label = f"{search.mode.value}+{how}[{names}]"
    record = {"label": label, "layers": [w["layer"] for w in what], "precision": None,
              "lowerings": what, "tool": "tflite converter",
              # where the rewrite changes numerics: the lowered Keras model against the original
              "float32_change": output_change(search.model, lowered, _inputs(search.data))}
    if search.rejected(label):  # its conversion was spent in an earlier round
        record.update(bytes=None, ok=False, why=f"rejected: {search.rejected(label)}")
        search.tries.append(record)
        return None
    try:
        with temporary_export(lowered, search.job.debug) as saved:
            data, _ = convert_saved_model(saved, search.mode, by_input_name(lowered, search.rep),
                                          [layer.name for layer in lowered.layers],
                                          search.job.debug)
    except Exception as e:
        record.update(bytes=None, ok=False, why=_one_line(e))
        search.tries.append(record)
        return None
    ok, why, _ = _judge(search, data, None, lowered)
    record.update(bytes=len(data), ok=ok, why=why)
    search.tries.append(record)
    return {**record, "data": data, "keep": None, "kind": "lowering", "model": lowered} if ok \
        else None


def _also_lacking(search: Search, ops: list[str]) -> str:
    """What else the refusing targets lack in the plain variant, beside `ops` (float16's
    DEQUANTIZE, a hybrid kernel on TFLite Micro), one line; "" when nothing."""
    report = audit(read_tflite(search.plain), search.mode, op_sets=OP_SETS)
    found = []
    for t in search.triggers:
        if t["kind"] == "refusal" and t.get("op_set"):
            lacking = [line for line in report.unsupported(t["op_set"])
                       if line.split(":")[0] not in ops]
            if lacking:
                found.append(f"{t['target']} also lacks {lacking[0]}")
    return "; ".join(found)


def _float32(search: Search) -> bytes:
    """The plain float32 variant of the model (AI Edge Quantizer starts from it)."""
    folder = RunFolder(search.job.out)
    path = folder.tflite_dir / f"{search.entry['model']}.{QuantMode.FLOAT32.value}.tflite"
    if path.is_file():
        return path.read_bytes()
    from ..converters.convert import convert_saved_model

    data, _ = convert_saved_model(search.saved_model, QuantMode.FLOAT32)
    return data


def _judge(search: Search, data: bytes, keep: dict | None, model) -> tuple[bool, str, list]:
    """Whether a try passes as the runner would judge it: no audit problem, every op a refusing
    target's table lists in its type, and the derived bounds held on the test split with
    LiteRT's reference kernels. (ok, why not, the ops a refusing target still lacks)."""
    from ..device_tests.interpreters import find_runtime
    from ..device_tests.metrics import (
        check_bounds,
        error_metrics,
        fail_reason,
        read_bounds,
        task_metrics,
    )
    from ..models.datasets import Task
    from .tolerances import derive, simulation

    parsed = read_tflite(data)
    report = audit(parsed, search.mode, op_sets=OP_SETS)
    if report.problems:
        return False, report.problems[0], []
    for t in search.triggers:
        if t["kind"] == "refusal" and t.get("op_set"):
            lacking = report.unsupported(t["op_set"])
            if lacking:
                ops = sorted({line.split(":")[0] for line in lacking})
                return False, f"{t['target']} still lacks {'; '.join(lacking)}", ops
    metric = "accuracy" if search.data.task is Task.CLASSIFICATION else "r2"
    out_scale = parsed.output_tensors()[0].scales
    tolerance = derive(search.mode, search.reference,
                       simulation(model, search.mode, search.data.x_test, search.rep, keep=keep),
                       out_scale[0] if len(out_scale) else None, metric)
    for key, value in search.job.config.tolerances.get(search.job.name, {}).get(
            search.mode.value, {}).items():
        tolerance[key] = value
    try:  # a variant the reference kernels refuse (a rescale they cannot do) fails its try
        loaded = find_runtime(None, "reference").load(data)
        outputs, _ = loaded.run(_inputs(search.data))
        outputs = outputs.reshape(search.reference.shape)
    except Exception as e:
        return False, f"host-ref kernels: {_one_line(e)}", []
    step = loaded.output_step
    metrics = error_metrics(outputs, search.reference, step)
    metrics["task"] = task_metrics(search.data.task.value, search.data.y_test, search.reference,
                                   outputs, search.data.y_std)
    failed = fail_reason(check_bounds(read_bounds(tolerance), metrics))
    return (not failed), failed or "passes its derived bounds on host-ref kernels", []


def _inputs(data):
    """The test inputs as the runner feeds them: one array, or {input name: array}."""
    if data.input_names:
        return {n: x for n, x in zip(data.input_names, data.x_test, strict=True)}
    x = data.x_test
    return x if x.dtype.kind in "iu" else x.astype(np.float32)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text or type(e).__name__)[:300]


def _save(search: Search, found: dict) -> tuple[dict, list]:
    """The repaired variant's .tflite and record, and its bundle entry; the files written."""
    from .bundle import entry as bundle_entry

    job, folder = search.job, RunFolder(search.job.out)
    tag = tag_of(found["label"])
    path = folder.tflite_dir / f"{job.name}.{tag}.tflite"
    reason = "; ".join(f"{t['target']}: {t['reason']}" for t in search.triggers)
    repair = {"of": search.entry["id"], "kind": found["kind"], "label": found["label"],
              "tag": tag, "precision": found["precision"], "layers": found["layers"],
              "ops": found.get("ops", []),
              "lowerings": found.get("lowerings", []), "tool": found["tool"],
              "reason": reason,
              "tries": search.tries}
    parsed = read_tflite(found["data"], source=path.name)
    report = audit(parsed, search.mode, op_sets=OP_SETS, source=path.name)
    record = {"schema_version": RECORD_SCHEMA_VERSION, "model": job.name, "mode": search.mode.value,
              **file_record(found["data"], parsed, report, path), "repair": repair,
              "converter": {"tool": found["tool"], "of": search.entry["id"]},
              "versions": versions()}
    save_variant(path, found["data"], record)
    variant = Variant(job.name, search.mode, ConversionStatus.CONVERTED, "", record, path)
    made = bundle_entry(job.out, variant, found["model"], search.data, search.reference,
                        search.rep, job.config.tolerances.get(job.name, {}),
                        keep=found["keep"], layers=search.block.get("layers"),
                        boundary=search.block.get("boundary"))
    return made, [folder.rel(path), folder.rel(path.with_suffix(".json"))]

