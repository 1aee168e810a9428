"""Repair (issue 15): a plain integer variant that fails parity, or whose op a target refuses in
that type, gets repaired variants of its own, each a bundle entry that runs on every target.

This module is the parent's side (no TensorFlow): it reads the targets' results for what needs
repair (`triggers`), runs one job per model (repair_search.py, in the build workers), keeps each
model's outcome as a stage keyed by its inputs, and puts the repaired entries and the record of
every search into the manifest. The parity stage then runs the new entries everywhere.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from ..converters.builtin_ops import BUILTIN_OPERATORS
from ..converters.modes import QuantMode
from ..core.errors import JobFailed
from ..device_tests.schema import ConversionStatus, ResultStatus, RunFolder
from .build import stage_key
from .results import read_target_results
from .stages import code_key, digest
from .targets import get_target

SEARCH = "edgepipe.pipeline.repair_search"
# Repair, then parity on the repaired variants, at most this many times a run: a repaired
# variant that fails or errs on a target (an older runtime without the kernel it needs) is
# rejected and the search goes on past it.
ROUNDS = 3
INTEGER_MODES = tuple(m.value for m in QuantMode if m.integer_only)
_OP_NAMES = frozenset(BUILTIN_OPERATORS.values())
_WORD = re.compile(r"\b[A-Z][A-Z0-9_]+\b")


@dataclass(frozen=True)
class RepairJob:
    """Repair the entries of model `name` that `triggers` name (one list per plain entry id);
    `config`, `out`, `debug` as a BuildJob's (repair_search loads the model the same way)."""

    name: str
    config: object
    out: Path
    triggers: dict
    debug: bool = False


def refused_ops(reason: str) -> list[str]:
    """The TFLite builtin ops a target's reason for `unsupported` names, in order."""
    return list(dict.fromkeys(w for w in _WORD.findall(reason or "") if w in _OP_NAMES))


def lacks_everywhere(op_set: str | None, op: str) -> bool:
    """Whether the op set was measured to have no kernel for `op` in any type: no precision
    can help, only a lowering into other ops (GELU on TFLite Micro)."""
    from ..converters.op_audit import refused_in_every_type

    return refused_in_every_type(op_set, op)


def triggers(manifest: dict, folder: RunFolder, targets) -> dict:
    """{model: {plain entry id: [trigger]}}: each variant converted by edgepipe (not a given
    file nor a repair) that needs repair. An integer variant: it failed on a target, or a
    target refused it naming an op. Any variant: a target refused an op it has in no type (a
    lowering may avoid it). A trigger: {target, kind ("failure" | "refusal"), reason, ops,
    lowering (the ops to lower away), op_set, layers (the record's per-layer rows, worst
    first)}. A repaired variant that fails or errs on a target adds a trigger of kind
    "rejected" (its `label`) to the entry it repairs: the search does not offer it again."""
    plain = {e["id"]: e for e in manifest["entries"]
             if e.get("status") == ConversionStatus.CONVERTED
             and not e.get("given") and not e.get("repair") and not e.get("fixed_batch")}
    repaired = {e["id"]: e for e in manifest["entries"] if e.get("repair")}
    found: dict = {}
    for target in targets:
        path = folder.target_results(target)
        if not path.is_file():
            continue
        for r in read_target_results(path)["results"]:
            made = repaired.get(r["id"])
            if made is not None and r["status"] in (ResultStatus.FAIL, ResultStatus.ERROR):
                label = made["repair"]["label"]
                found.setdefault(made["model"], {}).setdefault(made["repair"]["of"], []).append(
                    {"target": target, "kind": "rejected", "label": label, "ops": [],
                     "lowering": [], "op_set": None, "layers": [],
                     "reason": f"{label} {r['status']} on {target}: {r.get('reason') or ''}"})
            entry = plain.get(r["id"])
            if entry is None:
                continue
            integer = entry["mode"] in INTEGER_MODES
            trigger = {"target": target, "reason": r.get("reason") or "", "lowering": []}
            op_set, ops = get_target(target).op_set, refused_ops(r.get("reason"))
            lower = [op for op in ops if lacks_everywhere(op_set, op)]
            if r["status"] == ResultStatus.FAIL and integer:
                trigger.update(kind="failure", ops=[], op_set=None, layers=_worst_layers(r))
            elif r["status"] == ResultStatus.UNSUPPORTED and ops and (integer or lower):
                trigger.update(kind="refusal", ops=ops, op_set=op_set, layers=[],
                               lowering=lower)
            else:
                continue
            found.setdefault(entry["model"], {}).setdefault(entry["id"], []).append(trigger)
    return found


def _worst_layers(record: dict) -> list[str]:
    """The layers of a record's per-layer comparison, the worst against its bound first (the
    one where the error is born leads)."""
    rows = ((record.get("layers") or {}).get("rows")) or []
    born = ((record.get("layers") or {}).get("born") or {}).get("layer")

    def ratio(row: dict) -> float:
        bound = row.get("bound")
        return (row.get("max_abs") or 0.0) / bound if bound else 0.0

    ranked = [row["layer"] for row in sorted(rows, key=ratio, reverse=True) if ratio(row) > 0]
    return list(dict.fromkeys(([born] if born else []) + ranked))


def job_key(config, out: Path, name: str, model_triggers: dict) -> str:
    """What decides a model's repairs: the search's code, the model's bundle (its variants,
    references and tolerances), what triggered them and the model's [repair] settings."""
    return digest("repair", code_key(SEARCH), stage_key("bundle", config, out, name),
                  model_triggers, config.repair_for(name).as_dict(),
                  config.tolerances.get(name, {}))


def stage_name(model: str) -> str:
    return f"repair:{model}"


def repair_stage(ctx, manifest: dict) -> dict | None:
    """Repair what the last parity run found (models whose [repair] is enabled); return the
    manifest with the repaired entries and the record of every search (`repairs`), written to
    the run folder, or None when it holds them already (nothing needed repair, or the repairs
    `with_previous_repairs` put in it were confirmed)."""
    config, stages, folder = ctx.config, ctx.stages, ctx.folder
    wanted = {name: t for name, t in triggers(manifest, folder, config.targets).items()
              if config.repair_for(name).enabled}
    jobs, values = [], {}
    for name, model_triggers in wanted.items():
        _remember_rejected(model_triggers, _previous(ctx, name))
        key = job_key(config, ctx.out, name, model_triggers)
        if stages.fresh(stage_name(name), key):
            values[name] = stages.value(stage_name(name))
        else:
            jobs.append((RepairJob(name, config, ctx.out, model_triggers, ctx.debug), key))
    if jobs:
        ctx.console.print(f"repairing {sum(len(j.triggers) for j, _ in jobs)} variant(s) of "
                          f"{len(jobs)} model(s)", highlight=False)
    keys = {job.name: key for job, key in jobs}
    failed = dict(manifest.get("failed_models") or {})
    for job, result in ctx.executor.map_jobs(_repair_model, [j for j, _ in jobs], config,
                                             ctx.out, inputs=lambda job: _reads(ctx, job.name)):
        if isinstance(result, JobFailed):  # the model keeps its plain variants
            failed[job.name] = f"repairing {job.name} failed: {result}"
            ctx.console.print(f"{job.name}: error: {result}", highlight=False, markup=False)
            continue
        value, files = result
        value["bundle_key"] = stage_key("bundle", config, ctx.out, job.name)
        stages.record(stage_name(job.name), keys[job.name], files, value)
        stages.save()
        values[job.name] = value
        for line in summary_lines(value):
            ctx.console.print(f"{job.name}: {line}", highlight=False, markup=False)
    from .bundle import write_manifest

    entries, repairs = _joined([e for e in manifest["entries"] if not e.get("repair")],
                               [values.get(name) for name in manifest["models"]])
    if entries == manifest["entries"] and repairs == manifest.get("repairs", []) and \
            failed == manifest.get("failed_models", {}):
        return None  # the repairs of the last run, confirmed: parity has run them already
    return write_manifest(ctx.out, manifest["datasets"], manifest["models"], entries,
                          manifest["seed"], repairs, failed)


def _reads(ctx, name: str) -> list:
    """The run-folder files a repair job reads: the manifest and what the model's build
    stages wrote (its .keras file, variants, references)."""
    from .build import STAGES
    from .build import stage_name as build_stage

    return [ctx.folder.rel(ctx.folder.manifest),
            *ctx.stages.outputs_of(build_stage(stage, name) for stage in STAGES)]


def _previous(ctx, name: str) -> dict | None:
    """The model's last repair stage value, when made from the bundle it has now."""
    done = ctx.stages.done_stages.get(stage_name(name))
    value = done.get("value") if done else None
    if value and value.get("bundle_key") == stage_key("bundle", ctx.config, ctx.out, name):
        return value
    return None


def _remember_rejected(model_triggers: dict, previous: dict | None) -> None:
    """Add to `model_triggers` the rejections of earlier rounds (kept in the last value): a
    rejected variant's entry is gone from the manifest, its results with it, yet it must not
    be offered again, nor the search flip back to it on the next run."""
    for trigger in (previous or {}).get("rejected", []):
        listed = model_triggers.get(trigger["of"])
        if listed is not None and not any(t["kind"] == "rejected" and t["label"]
                                          == trigger["label"] for t in listed):
            listed.append({k: v for k, v in trigger.items() if k != "of"})


def _joined(plain: list, values: list) -> tuple[list, list]:
    """The manifest's entries (the plain ones, then each model's repaired ones, in model
    order) and its repair records; `values`: each model's repair stage value or None."""
    entries, repairs = list(plain), []
    for value in values:
        if value:
            entries += value["entries"]
            repairs += value["repairs"]
    return entries, repairs


def with_previous_repairs(ctx, names: list, plain: list) -> tuple[list, list]:
    """The manifest's entries and repair records, with the repaired entries of the last run
    whose model bundle has not changed since (their files intact): parity then reuses their
    results as it reuses the plain ones, and the manifest is written once, not without them
    and then with them again. The repair stage, after parity, confirms or replaces them."""
    stages, values = ctx.stages, []
    for name in names:
        value = _previous(ctx, name)
        keep = (value is not None and ctx.config.repair_for(name).enabled
                and stages.fresh(stage_name(name), stages.done_stages[stage_name(name)]["key"]))
        values.append(value if keep else None)
    return _joined(plain, values)


def _repair_model(job: RepairJob):
    """repair_search.repair_model, imported in the worker: it imports TensorFlow, which a run
    whose every stage is fresh never loads."""
    from .repair_search import repair_model

    return repair_model(job)


def summary_lines(value: dict) -> list[str]:
    """One console line per search: what was repaired and how, or why it could not be."""
    lines = []
    for r in value["repairs"]:
        tries = len(r["tries"])
        if r["ok"]:
            lines.append(f"{r['of']} repaired as {r['label']} ({tries} conversion"
                         f"{'s' * (tries != 1)})")
        else:
            lines.append(f"{r['of']} not repaired: {r['why']}")
    return lines
