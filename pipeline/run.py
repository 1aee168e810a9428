"""The one run flow: `edgepipe run` and `edgepipe parity` are `run(ctx)` and `parity(ctx)`.

    run(ctx)     build (train -> audit and convert every mode -> bundle) -> parity -> collect
    parity(ctx)  parity -> collect, on a run folder made before

The run folder is the bundle (docs/bundle.md) plus the results of every target. A `RunContext`
is made once, after every input was checked, and carries what each stage needs.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from ..core.errors import EdgepipeError
from ..core.files import check_run_folder, writable_folder
from ..device_tests.schema import ConversionStatus, RunFolder
from .build import STAGES, BuildJob, build_model, check_user_models, stage_key, stage_name
from .bundle import write_manifest
from .config import RunConfig
from .executors import LOCAL, JobFailed, open_executor
from .parity import parity_stage
from .repair import ROUNDS as REPAIR_ROUNDS
from .repair import repair_stage, with_previous_repairs
from .results import check_other_results, collect
from .stages import Stages
from .workers import default_jobs, in_context, prepare


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run needs."""

    config: RunConfig
    folder: RunFolder
    console: object  # a rich Console: the progress lines (stderr)
    stages: Stages
    debug: bool = False
    workers: int = 1
    executor: object = None  # where model jobs and portable parity chunks run (executors.py)

    @property
    def out(self) -> Path:
        return self.folder.root

    @classmethod
    def for_run(cls, config: RunConfig, out_dir: Path, console, debug: bool = False,
                jobs: int | None = None, force: bool = False) -> "RunContext":
        """A new or earlier run folder for `run`: the user's files and the executor (a
        cluster's workers) are checked before TensorFlow is imported and before the folder is
        made, then the folder."""
        from ..models.custom_objects import custom_object_files

        custom_object_files(config.custom_objects)
        if config.keras:
            from ..models.datasets import load_npz_as_given
            from ..models.loading import check_model

            for path in config.keras:
                check_model(Path(path))
            load_npz_as_given(Path(config.data), config.seed)
        workers = jobs or default_jobs()
        executor = open_executor(config.executor, workers, debug)  # a cluster: checked here
        try:
            writable_folder(out_dir)
            check_run_folder(out_dir)
        except BaseException:
            executor.close()
            raise
        if config.unsafe:
            warn_unsafe(console)
        return cls(config, RunFolder(out_dir), console, Stages(out_dir, force), debug, workers,
                   executor)

    @classmethod
    def for_folder(cls, config: RunConfig, run_dir: Path, console, debug: bool = False,
                   jobs: int | None = None) -> "RunContext":
        """An existing run folder for `parity`. Every entry runs again (a board may have
        changed); the results are recorded, so that a later `run` in it reuses them."""
        require_run_folder(run_dir)
        workers = jobs or default_jobs()
        return cls(config, RunFolder(run_dir), console, Stages(run_dir, force=True), debug,
                   workers, open_executor(config.executor, workers, debug))


def run(ctx: RunContext) -> dict:
    """Build every model, run parity on every target, repair what failed or was refused (and
    run parity on the repaired variants), collect; the merged results."""
    try:
        return _run(ctx)
    finally:
        _close(ctx)


def _run(ctx: RunContext) -> dict:
    manifest = build_stage(ctx)
    check_other_results(ctx.folder, ctx.config.targets)
    warn_constant_references(ctx)
    parity_stage(ctx)
    for _ in range(REPAIR_ROUNDS):
        manifest = repair_stage(ctx, manifest)
        if manifest is None:
            break
        parity_stage(ctx)  # the new entries; every other result is fresh and reused
    return collect(ctx.out, ctx.stages, ctx.workers)


def parity(ctx: RunContext) -> dict:
    """Parity on every target of the config, then the merged results and the reports."""
    try:
        check_other_results(ctx.folder, ctx.config.targets)
        warn_constant_references(ctx)
        parity_stage(ctx)
        return collect(ctx.out, ctx.stages, ctx.workers)
    finally:
        _close(ctx)


def _close(ctx: RunContext) -> None:
    """Disconnect from a cluster, saying what crossed the network."""
    said = ctx.executor.summary()
    if said:
        ctx.console.print(f"cluster {said}", highlight=False)
    ctx.executor.close()


def require_run_folder(run_dir: Path) -> None:
    """A run folder made by `edgepipe run`, safe to read, and writable (parity and report
    write into it: a read-only folder is said before any work)."""
    if not RunFolder(run_dir).manifest.is_file():
        raise EdgepipeError(f"{run_dir} is not a run folder (no manifest.json). Make one with "
                            "`edgepipe run --out DIR`.")
    check_run_folder(run_dir)
    with tempfile.TemporaryFile(dir=run_dir, prefix=".edgepipe-probe-"):
        pass


def warn_constant_references(ctx: RunContext) -> None:
    """Say once per model what the runner says in each of its entries (their status is an
    error): its Keras reference is the same for every sample, so nothing is compared."""
    from ..device_tests.bundle import BundleError, load_bundle
    from ..device_tests.runner import constant_reference

    try:
        bundle = load_bundle(ctx.out)
    except BundleError:  # the parity stage says what is wrong with it
        return
    for name, block in bundle.manifest["models"].items():
        try:
            reference = bundle.array(block["reference"], block.get("reference_sha256"),
                                     f"models.{name}.reference")
        except BundleError:
            continue
        message = constant_reference(reference)
        if message:
            ctx.console.print(Text.assemble(("warning: ", "yellow"), f"{name}: {message}; its "
                                            "variants are errors wherever they run"),
                              soft_wrap=True)


def warn_unsafe(console) -> None:
    from ..models.loading import UNSAFE_WARNING

    console.print(Text.assemble(("warning: ", "yellow"), UNSAFE_WARNING), soft_wrap=True)


def build_stage(ctx: RunContext) -> dict:
    """Train (zoo), convert and bundle every model whose stages are not fresh, `workers` models
    at a time; write the manifest from every model's blocks; return it."""
    config, out, console, stages = ctx.config, ctx.out, ctx.console, ctx.stages
    debug, workers = ctx.debug, ctx.workers
    names = list(config.user_models) if config.keras else list(config.models)
    jobs = longest_first([BuildJob(name, first, config, out, debug) for name in names
                          if (first := _first_stale(config, out, name, stages))], stages)
    if len(jobs) < len(names):
        console.print(f"reused {len(names) - len(jobs)} of {len(names)} models (trained, "
                      "converted and bundled with the same inputs before)", highlight=False)
    if jobs and config.keras:
        prepare(debug, config.custom_objects, config.unsafe)
        in_context(check_user_models, config, [job.name for job in jobs])
    if jobs:
        plural = "s" * (len(jobs) != 1)
        where = (f"{min(workers, len(jobs))} worker(s)" if ctx.executor.name == LOCAL
                 else ctx.executor.name)
        console.print(f"building {len(jobs)} model{plural} on {where}", highlight=False)
    failed = {}
    for job, result in ctx.executor.map_jobs(build_model, jobs, config, out,
                                             inputs=lambda job: _job_reads(stages, job)):
        if isinstance(result, JobFailed):  # the run goes on without this model
            failed[job.name] = f"building {job.name} failed: {result}"
            console.print(Text.assemble((f"{job.name}: error: ", "red"), result),
                          soft_wrap=True)
            continue
        done, summary = result
        for stage in done:
            stages.record(stage.name, stage.key, stage.outputs, stage.value, stage.seconds)
        stages.save()
        console.print(_built_line(job, summary, done), highlight=False)
    names = [name for name in names if name not in failed]
    values = {name: stages.value(stage_name("bundle", name)) for name in names}
    datasets = {}
    for value in values.values():
        datasets.setdefault(value["dataset"], value["dataset_block"])
    entries, repairs = with_previous_repairs(ctx, names, [e for v in values.values()
                                                          for e in v["entries"]])
    return write_manifest(out, datasets, {n: v["model"] for n, v in values.items()},
                          entries, config.seed, repairs, failed)


def longest_first(jobs: list, stages: Stages) -> list:
    """The jobs, longest first: the last job to start decides when the workers finish
    together. How long is what the job's stages took when last done in this folder; a job
    with no time on record comes first (it has never been built here: it trains, for the zoo),
    by the size of what it starts from (the user's model, or the zoo model's dataset)."""
    def expected(job: BuildJob) -> tuple:
        took = stages.seconds(stage_name(stage, job.name)
                              for stage in STAGES[STAGES.index(job.first):])
        return (0, -took) if took is not None else (-1, -_input_size(job))

    return sorted(jobs, key=expected)


def _input_size(job: BuildJob) -> int:
    """A size to rank a job with no time on record: its .keras file's bytes, or the numbers its
    zoo dataset holds."""
    if job.config.keras:  # a .keras file, or a SavedModel folder
        path = Path(job.config.user_models[job.name])
        files = path.rglob("*") if path.is_dir() else [path]
        return sum(p.stat().st_size for p in files if p.is_file())
    from ..models.datasets import BUILTIN
    from ..models.zoo import ZOO

    return BUILTIN[ZOO[job.name].dataset]


def _job_reads(stages: Stages, job: BuildJob) -> list:
    """The run-folder files a build job reads: what the model's stages before its first wrote."""
    return stages.outputs_of(stage_name(stage, job.name)
                             for stage in STAGES[:STAGES.index(job.first)])


def _first_stale(config: RunConfig, out: Path, name: str, stages: Stages) -> str | None:
    """The model's first stage to redo (the later ones follow), or None: all fresh."""
    for stage in STAGES[1:] if config.keras else STAGES:
        try:
            key = stage_key(stage, config, out, name)
        except FileNotFoundError:  # an upstream artifact is missing
            return stage
        if not stages.fresh(stage_name(stage, name), key):
            return stage
    return None


def _built_line(job: BuildJob, summary: dict, done: list) -> str:
    """`<model>: trained ..., converted ..., bundled (train S s, convert S s, bundle S s), S s`:
    the job's stages, what each took, and the job's time."""
    parts = []
    if "trained" in summary:
        t = summary["trained"]["training"]
        parts.append(f"trained {t['epochs_run']} epochs (best {t['best_epoch']}"
                     f"{', early stop' if t['early_stopped'] else ''})")
    if "converted" in summary:
        bad = [f"{mode} {status}" for mode, status in summary["converted"]
               if status != ConversionStatus.CONVERTED]
        parts.append(f"converted {len(summary['converted'])} modes"
                     + (f" ({', '.join(bad)})" if bad else ""))
    took = ", ".join(f"{stage.name.split(':')[0]} {stage.seconds:.1f} s" for stage in done)
    parts.append(f"bundled ({took})")
    return f"{job.name}: {', '.join(parts)}, {summary['seconds']:.1f} s"
