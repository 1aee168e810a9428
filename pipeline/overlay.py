"""Model Explorer node-data overlays of the per-layer error: open a variant's `.tflite` in Model
Explorer (google-ai-edge/model-explorer) with its overlay, and each op is coloured by how far its
output tensor is from Keras (README, "Per-layer error in Model Explorer").

The format is Model Explorer's node data, as its `node_data_builder.GraphNodeData` writes it and
its UI reads it (node_data_provider_extension_service.ts): plain JSON, written here with no
dependency on Model Explorer.

    {"name": "...",                                  # shown as the overlay's name
     "results": {"<key>": {"value": 0.0123, "bgColor": "#aceebb"}, ...},
     "thresholds": [{"value": 0.004, "bgColor": "..."}, ...]}   # ascending: value <= t -> colour

A file whose top level has `results` applies to the graph it is opened beside, so no graph id
(for a .tflite, its signature key or "main") is needed.

Keys: the op's output tensor name, as ai-edge-quantizer's overlays do. Model Explorer matches a
key against each op node's output `tensor_name` (outputsMetadata) as well as against node ids, so
a tensor name finds its op in both of its TFLite adapters (the flatbuffer one numbers op nodes by
operator index, the MLIR one by its own walk), and stays readable in the file; it is the name the
runner checks when it reads the tensor. Only where two op outputs share a name (or it is empty)
is the key the node id instead: the operator's index in subgraph 0, which the flatbuffer adapter
(the default for .tflite) gives its op nodes.

Two files per variant, since a node holds one value in this format: `<model>.<tag>.overlay.json`
(max|Δ| / the layer's Keras range: the per-layer plot's y) and `<model>.<tag>.overlay.sqnr.json`
(SQNR in dB). A node is green when its tensor is within its own derived bound, red when not,
dark red where the error is born; the thresholds (for nodes without a bound of their own) come
from the bounds: within the smallest layer bound, within the largest, beyond.

One overlay per variant, not per target: Model Explorer shows one graph per .tflite, and the
figures come from the reference kernels (host-ref, the baseline TFLM and boards are compared
with) when it ran with per-layer data, else from the first target in report order that has it;
the overlay's name says which. The report's plot shows every target.
"""

import math
import re
from collections import Counter
from pathlib import Path

from ..converters.tflite_file import TFLiteFormatError, read_tflite_file
from ..core.errors import EdgepipeError
from ..core.files import prune, write_json
from ..device_tests.schema import RunFolder
from .targets import REGISTRY, TargetKind, order_key

BASELINE = REGISTRY[TargetKind.HOST_REF].name
WITHIN, BEYOND, BORN = "#aceebb", "#ff8182", "#a40e26"   # green, red, dark red
BETWEEN = "#fff8c5"                                       # within some layers' bounds only
OVERLAY_NAME = re.compile(r".+\.overlay(\.sqnr)?\.json")  # what `write_overlays` writes


def _number(value) -> float | None:
    return (float(value) if isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) else None)


def per_layer(record: dict | None) -> list[dict]:
    """The rows of a result record's per-layer data that name a tensor, else []."""
    layers = (record or {}).get("layers")
    if not isinstance(layers, dict):
        return []
    return [r for r in layers.get("rows") or [] if isinstance(r, dict)
            and isinstance(r.get("tensor"), int) and not isinstance(r.get("tensor"), bool)]


def chosen_target(records: dict[str, dict]) -> str | None:
    """The target an overlay shows: the reference kernels when they have per-layer data, else
    the first target in report order that has it."""
    having = sorted((t for t, r in records.items() if per_layer(r)), key=order_key)
    return BASELINE if BASELINE in having else (having[0] if having else None)


def node_keys(tflite: Path) -> dict[int, str]:
    """{tensor index: overlay key} for the output tensors of subgraph 0's operators."""
    model = read_tflite_file(tflite)
    if not model.subgraphs:
        return {}
    main = model.subgraphs[0]
    produced = {t: op.index for op in main.operators for t in op.outputs if t >= 0}
    names = Counter(main.tensors[t].name for t in produced)
    return {t: (main.tensors[t].name if main.tensors[t].name and names[main.tensors[t].name] == 1
                else str(op)) for t, op in produced.items()}


def overlays(entry: dict, record: dict, target: str, keys: dict[int, str]) -> tuple[dict, dict]:
    """(the error overlay, the SQNR overlay) of one variant's result on `target`."""
    layers = record["layers"]
    born = (layers.get("born") or {}).get("layer") if isinstance(layers.get("born"), dict) \
        else None
    error, sqnr, bounds, top = {}, {}, [], 0.0
    for row in per_layer(record):
        key = keys.get(row["tensor"])
        if key is None:  # not an op's output in this file: nothing in the graph to colour
            continue
        span, bound = _number(row.get("range")), _number(row.get("bound"))
        rel = _number(row.get("rel"))
        if rel is None and span and _number(row.get("max_abs")) is not None:
            rel = _number(row["max_abs"]) / span
        colour = None
        if row.get("layer") == born:
            colour = BORN
        elif isinstance(row.get("ok"), bool):
            colour = WITHIN if row["ok"] else BEYOND
        if bound is not None and span:
            bounds.append(bound / span)
        if rel is not None:
            error[key] = _result(rel, colour)
            top = max(top, rel)
        db = _number(row.get("sqnr_db"))
        if db is not None:
            sqnr[key] = _result(db, colour)
    where = f"{entry['id']} on {target}"
    doc = {"name": f"{where}: max|Δ| / layer range", "results": error}
    thresholds = _thresholds(bounds, top)
    if thresholds:
        doc["thresholds"] = thresholds
    return doc, {"name": f"{where}: SQNR (dB)", "results": sqnr}


def _result(value: float, colour: str | None) -> dict:
    return {"value": value, **({"bgColor": colour} if colour else {})}


def _thresholds(bounds: list[float], top: float) -> list[dict]:
    """Ascending: within every layer's bound, within the largest, beyond (up to the largest
    error: Model Explorer leaves a value above the last threshold uncoloured)."""
    if not bounds:
        return []
    out = [{"value": min(bounds), "bgColor": WITHIN}]
    if max(bounds) > out[-1]["value"]:
        out.append({"value": max(bounds), "bgColor": BETWEEN})
    if top > out[-1]["value"]:
        out.append({"value": top, "bgColor": BEYOND})
    return out


def write_overlays(folder: RunFolder, manifest: dict, results: list[dict]) -> list[Path]:
    """Write each converted variant's overlays (from the chosen target's per-layer data) into
    the run folder; remove the ones no longer written. Returns the paths written."""
    records: dict[str, dict[str, dict]] = {}
    for r in results:
        records.setdefault(r.get("id"), {})[r.get("target")] = r
    written = []
    for entry in manifest.get("entries") or []:
        mine = records.get(entry["id"]) or {}
        target = chosen_target(mine)
        if target is None or not entry.get("tflite"):
            continue
        try:
            keys = node_keys(folder.root / entry["tflite"])
        except TFLiteFormatError as exc:
            raise EdgepipeError(f"{entry['id']}: cannot read its .tflite for the Model Explorer "
                                f"overlay: {exc}") from None
        error, sqnr = overlays(entry, mine[target], target, keys)
        model = entry.get("model") or ""
        tag = entry["id"][len(model) + 1:] if entry["id"].startswith(f"{model}-") else entry["id"]
        for path, doc in ((folder.overlay(model, tag), error),
                          (folder.overlay(model, tag, "sqnr"), sqnr)):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, doc)
            written.append(path)
    if folder.overlays_dir.is_dir():
        prune(folder.overlays_dir, OVERLAY_NAME, {p.name for p in written})
    return written
