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

from ..core.errors import EdgepipeError, JobFailed
from ..core.files import (
    remove_leftovers,
    scratch_file,
    sha256_file,
    write_json,
    write_returned,
)
from ..core.versions import versions
from ..device_tests.bundle import BundleError, load_bundle
from ..device_tests.schema import RunFolder, base_record, results_document
from .budgets import apply_budgets
from .stages import Stages, code_key, digest
from .targets import TargetOptions, check_target, get_target, runner_said
from .targets.base import runner_reads

# The code a result depends on: the import closures of the runner, of the target's modules
# (which hold the targets package, its interface and its options) and of this module, which
# chunks the entries and records what the runner returned.
RUNNER = "edgepipe.device_tests.runner"


def stage_modules(target: str) -> tuple:
    """The modules whose import closure is the code of a result on `target`."""
    return (RUNNER, __name__, *get_target(target).modules)


def stage_name(target: str, entry_id: str) -> str:
    return f"parity:{target}:{entry_id}"


def target_key(target: str, options: TargetOptions) -> str:
    """What every result on `target` shares in its key (computed once per target): the code,
    the installed versions, the per-entry time limit and what of the target's options and
    software decides its results."""
    return digest("parity", target, code_key(*stage_modules(target)), versions(),
                  options.entry_timeout, get_target(target).stage_key(options))


def entry_key(target_key: str, entry: dict, manifest: dict) -> str:
    """One entry's result on a target: the target's key, the entry, its data and reference."""
    model = manifest["models"].get(entry.get("model"), {})
    dataset = manifest["datasets"].get(entry.get("dataset") or model.get("dataset"), {})
    data = {k: dataset.get(k) for k in ("inputs_sha256", "labels_sha256", "samples")}
    if dataset.get("input_files"):  # a model with several inputs: a file (and sha256) each
        data["input_files"] = dataset["input_files"]
    return digest(target_key, entry, data, model.get("reference_sha256"))


def _chunks(ids: list, count: int) -> list:
    """`count` interleaved chunks: neighbours in the manifest (a model's modes) cost alike."""
    return [ids[i::count] for i in range(count) if ids[i::count]]


def parity_stage(ctx) -> None:
    """Run every target of `ctx.config` on the bundle in the run folder, reusing the fresh
    results in `ctx.stages`. Runners are child processes (or boards): a crash in native code
    must not take the pipeline down."""
    out, targets, console, stages = ctx.out, ctx.config.targets, ctx.console, ctx.stages
    options, budgets, debug, executor = (ctx.config.target_options, ctx.config.budgets,
                                         ctx.debug, ctx.executor)
    workers = ctx.workers

    def sessions(target: str) -> int:  # runners at once: --jobs here, a cluster's threads
        kind = get_target(target)
        return kind.sessions(executor.remote_threads() if executor.remote(kind) else workers)

    try:  # the runner's own check of every field, before any runner starts
        manifest = load_bundle(out).manifest
    except BundleError as exc:
        raise EdgepipeError(str(exc)) from None
    entries = manifest["entries"]
    for target in targets:
        check_target(target)
    folder = ctx.folder
    remove_leftovers(folder.results_dir)  # a killed run's chunks
    keys, tasks = {}, []
    for target in targets:
        shared = target_key(target, options)
        keys[target] = {e["id"]: entry_key(shared, e, manifest) for e in entries}
        stale = [i for i, key in keys[target].items()
                 if not stages.fresh(stage_name(target, i), key)]
        chunks = _chunks(stale, sessions(target))
        reused = len(entries) - len(stale)
        console.print(f"parity on {target}: " + ", ".join(filter(None, [
            f"{len(stale)} entries {get_target(target).spread(options, len(chunks))}"
            if stale else "",
            f"{reused} reused" if reused else ""])), highlight=False, markup=False,
                      emoji=False)  # a target's name is text: pool:one is not an emoji
        tasks += [(target, k, chunk) for k, chunk in enumerate(chunks)]

    def run_chunk(task) -> dict:
        target, k, chunk = task
        if executor.remote(get_target(target)):
            return _remote_chunk(executor, folder, target, chunk, options, debug, entries)
        # Beside the target's results (the runner saves outputs/ beside its results file),
        # named as edgepipe's own: a killed run's chunk is removed by the next one.
        name = folder.target_results(target).with_suffix(f".{k}.partial").name
        with scratch_file(folder.results_dir, name) as (partial, _):
            return _run_chunk(target, out, partial, options, chunk, debug)

    with ThreadPoolExecutor(max(1, workers + executor.remote_threads())) as pool:
        running = {pool.submit(run_chunk, task): task for task in tasks}
        try:
            for future in as_completed(running):
                document = future.result()
                target = running[future][0]
                for record in document["results"]:
                    outputs = ([folder.rel(folder.results_dir / record["outputs"])]
                               if record.get("outputs") else [])
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
        _write_results(folder, target, manifest, stages, (budgets or {}).get(target))


def _run_chunk(target: str, root, results, options, chunk: list, debug: bool) -> dict:
    """The chunk's entries of the bundle in `root` on `target`, their results written to
    `results` (outputs beside it): the results document."""
    done = get_target(target).run(root, results, options, only=chunk, debug=debug)
    try:
        return json.loads(results.read_text())
    except (OSError, ValueError):
        raise EdgepipeError(f"The parity runner on {target} wrote no results (exit "
                            f"{done.returncode}): {runner_said(done.stderr, debug)}") from None


def _remote_chunk(executor, folder: RunFolder, target: str, chunk: list, options,
                  debug: bool, entries: list) -> dict:
    """A chunk on a cluster's worker: the runner's files travel there, its results document
    comes back, and the outputs it saved are written here, beside this target's results."""
    done = executor.run_remote(chunk_in_folder, target, chunk, options, debug,
                               out=folder.root, run_files=runner_reads(folder.root, chunk))
    if isinstance(done, JobFailed):  # its worker died: each of its entries is an error
        by_id = {e["id"]: e for e in entries}
        records = [dict(base_record(by_id[i], target), reason=f"the parity chunk's {done}")
                   for i in chunk]
        return results_document(target, sha256_file(folder.manifest), records)
    document, outputs = done
    write_returned(folder.root, {folder.rel(folder.results_dir / rel): data
                                 for rel, data in outputs.items()})
    return document


def chunk_in_folder(root, target: str, chunk: list, options, debug: bool) -> tuple:
    """On a worker, in a folder holding the runner's files: run the chunk; (its results
    document, {path relative to the results folder: bytes} of the outputs it saved)."""
    from pathlib import Path

    folder = RunFolder(Path(root))
    document = _run_chunk(target, folder.root, folder.target_results(target), options, chunk,
                          debug)
    outputs = {p.relative_to(folder.results_dir).as_posix(): p.read_bytes()
               for p in sorted(folder.results_dir.rglob("*.npy")) if p.is_file()}
    return document, outputs


def _write_results(folder: RunFolder, target: str, manifest: dict, stages: Stages,
                   budget) -> None:
    """The target's results document from its records, budgets applied. `seconds` is the sum
    of the entries' own times (they may have run in several processes, or in an earlier run)."""
    values = [stages.value(stage_name(target, e["id"])) for e in manifest["entries"]]
    records = [copy.deepcopy(v["record"]) for v in values]
    last = values[-1] if values else {}
    document = results_document(target, sha256_file(folder.manifest), records,
                                last.get("runtime"), last.get("platform"),
                                sum(r.get("seconds") or 0.0 for r in records))
    if budget:
        apply_budgets(document, manifest, budget)
    write_json(folder.target_results(target), document)
