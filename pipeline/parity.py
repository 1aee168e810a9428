"""Parity on every target, entry by entry: reuse each fresh result, run the rest in parallel.

A result is keyed by its entry in the manifest (the variant's sha256, its tolerance, its data
and reference hashes), the runner's code, the installed versions and the target's options. The
stale entries of a target are split into chunks, one runner process (or board session) per
chunk, `--jobs` of them at a time. Each target's results file is then put together from the
records, and the budgets applied to it, in manifest order.
"""

import copy
import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..core.errors import EdgepipeError
from ..core.files import remove_leftovers, scratch_file, sha256_file, write_json
from ..core.versions import versions
from ..device_tests.bundle import BundleError, load_bundle, one_line
from ..device_tests.runner import SCHEMA_VERSION
from .budgets import apply_budgets
from .junit import RECORD, STATUSES, check_shape
from .stages import Stages, code_version, digest
from .targets import TargetOptions, check_target, is_ssh, results_path, run_target, runner_said

# One target's results document (runner, Vela, a board): the merge reads model and mode too.
TARGET_RESULTS = {"target": "!string",
                  "results": [{**RECORD, "model": "!string", "mode": "!string"}]}
# The code a result depends on: the runner, and how the pipeline reaches each target.
RUNNER_CODE = ("device_tests", "pipeline/targets.py", "pipeline/emulator.py",
               "pipeline/ssh_target.py", "pipeline/npu.py")


def stage_name(target: str, entry_id: str) -> str:
    return f"parity:{target}:{entry_id}"


def entry_key(target: str, entry: dict, manifest: dict, options: TargetOptions) -> str:
    model = manifest["models"].get(entry.get("model"), {})
    dataset = manifest["datasets"].get(entry.get("dataset") or model.get("dataset"), {})
    return digest("parity", target, code_version(*RUNNER_CODE), versions(), entry,
                  {k: dataset.get(k) for k in ("inputs_sha256", "labels_sha256", "samples")},
                  model.get("reference_sha256"), options.entry_timeout,
                  options.accelerator if target == "ethos-u" else None,
                  options.ssh_python if is_ssh(target) else None, _board(target))


def _board(target: str):
    """What is known of the board's own software: the emulator's build stamp (a real board's
    is only known by asking it; `edgepipe parity` always asks)."""
    if target == "qemu-aarch64":
        from .emulator import built_with

        return built_with()
    return None


def _chunks(ids: list, count: int) -> list:
    """`count` interleaved chunks: neighbours in the manifest (a model's modes) cost alike."""
    return [ids[i::count] for i in range(count) if ids[i::count]]


def read_results(path: Path) -> dict:
    """One target's results file, checked as far as merging and the reports read it (the
    records' shape is junit.py's, the one results.json is checked with): a run folder travels,
    and a file edited by hand or cut short must be one line, not a crash."""
    fix = "Rerun `edgepipe parity` on the run folder."
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise EdgepipeError(f"{path}: not a results file (not JSON: {one_line(e)}). {fix}"
                            ) from None
    check_shape(doc, TARGET_RESULTS, path, fix)
    if not isinstance(doc.get("results"), list):  # a list spec allows null: this one may not
        raise EdgepipeError(f"Expected results in {path} to be a list. Received: nothing "
                            f"(absent or null). {fix}")
    for i, r in enumerate(doc["results"]):
        if r["status"] not in STATUSES:  # an unknown status would count as neither ok nor bad
            raise EdgepipeError(f"Expected results[{i}].status in {path} to be one of "
                                f"{', '.join(STATUSES)}. Received: {r['status']!r}. {fix}")
    return doc


def parity_stage(out: Path, targets, console, debug: bool = False,
                 options: TargetOptions | None = None, budgets: dict | None = None,
                 stages: Stages | None = None, workers: int = 1) -> None:
    """Run every target on the bundle in `out`, reusing the fresh results in `stages` (none
    when it is None: everything runs). Runners are child processes (or boards): a crash in
    native code must not take the pipeline down."""
    options = options or TargetOptions()
    stages = stages or Stages(out, force=True)
    try:  # the runner's own check of every field, before any runner starts
        manifest = load_bundle(out).manifest
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    entries = manifest["entries"]
    for target in targets:
        check_target(target)
    remove_leftovers(out / "results")  # a killed run's chunks
    for path in sorted((out / "results").glob("*.json")):  # merged as they are, after the runs
        if path.name not in {results_path(out, t).name for t in targets}:
            read_results(path)
    keys, tasks = {}, []
    for target in targets:
        keys[target] = {e["id"]: entry_key(target, e, manifest, options) for e in entries}
        stale = [i for i, key in keys[target].items()
                 if not stages.fresh(stage_name(target, i), key)]
        # A board gets one session at a time; Vela is quick.
        count = 1 if is_ssh(target) or target == "ethos-u" else max(1, workers)
        chunks = _chunks(stale, count)
        reused = len(entries) - len(stale)
        console.print(f"parity on {target}: " + ", ".join(filter(None, [
            f"{len(stale)} entries in {len(chunks)} runner(s)" if stale else "",
            f"{reused} reused" if reused else ""])), highlight=False)
        tasks += [(target, k, chunk) for k, chunk in enumerate(chunks)]

    def run_chunk(task) -> dict:
        target, k, chunk = task
        # Beside the target's results (the runner saves outputs/ beside its results file),
        # named as edgepipe's own: a killed run's chunk is removed by the next one.
        name = results_path(out, target).with_suffix(f".{k}.partial").name
        with scratch_file(out / "results", name) as (partial, _):
            done = run_target(target, out, options, debug, only=chunk, out_json=partial)
            try:
                return json.loads(partial.read_text())
            except ValueError:
                raise EdgepipeError(f"The parity runner on {target} wrote no results (exit "
                                    f"{done.returncode}): {runner_said(done.stderr, debug)}"
                                    ) from None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        running = {pool.submit(run_chunk, task): task for task in tasks}
        try:
            for future in as_completed(running):
                document = future.result()
                target = running[future][0]
                for record in document["results"]:
                    outputs = [f"results/{record['outputs']}"] if record.get("outputs") else []
                    stages.record(stage_name(target, record["id"]),
                                  keys[target][record["id"]], outputs,
                                  {"record": record, "runtime": document.get("runtime"),
                                   "platform": document.get("platform")})
                stages.save()
        except BaseException:
            for future in running:
                future.cancel()
            raise
    for target in targets:
        _write_results(out, target, manifest, stages, (budgets or {}).get(target))


def _write_results(out: Path, target: str, manifest: dict, stages: Stages, budget) -> None:
    """The target's results document from its records, budgets applied. `seconds` is the sum
    of the entries' own times (they may have run in several processes, or in an earlier run)."""
    values = [stages.value(stage_name(target, e["id"])) for e in manifest["entries"]]
    records = [copy.deepcopy(v["record"]) for v in values]
    last = values[-1] if values else {}
    document = {"schema_version": SCHEMA_VERSION,
                "manifest_sha256": sha256_file(out / "manifest.json"), "target": target,
                "runtime": last.get("runtime"), "platform": last.get("platform"),
                "seconds": round(sum(r.get("seconds") or 0.0 for r in records), 4),
                "results": records}
    if budget:
        apply_budgets(document, manifest, budget)
    write_json(results_path(out, target), document)
