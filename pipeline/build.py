"""One model's way into the bundle: train (zoo) -> convert every mode -> its bundle blocks.

Each model is one job (`build_model`), run in a worker process under `--jobs N`: its modes share
one SavedModel export, and its stages must run in order. The stage keys are computed without
TensorFlow, so a run whose stages are all fresh never imports it.

Where the code of a stage is. A stage's key hashes the import closure of the modules it declares
(`stage_modules`, `stages.code_key`), so each stage's work lives in its own module
(stage_train.py, stage_convert.py, stage_bundle.py) that imports only what that stage runs:
editing the converter or pipeline/conversion.py redoes the convert stage (and the bundle stage,
whose key holds the convert key), not training. This module is the orchestration that calls
them (the job, the loop, the key): it is declared by every stage, so an edit here redoes every
build stage. For that to cost no more than it must, it imports no stage module (it reaches
them by name: a static import would put every stage's code into every stage's closure), no
RunConfig (pipeline/config.py imports the converters' modes and the targets) and nothing only
one stage needs.

A stage module has `key_parts(config, out, name)`: what besides the code decides its outputs
(settings, data, upstream artifacts; it may read them, they must exist), and
`run(job, shared) -> StageRun`; `shared` holds what a job's stages load once (the model).
"""

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..device_tests.schema import RunFolder
from .stages import code_key, digest

# Each stage, in order, and the module that does its work.
STAGE_MODULES = {stage: f"{__package__}.stage_{stage}" for stage in ("train", "convert", "bundle")}
STAGES = tuple(STAGE_MODULES)


def stage_modules(stage: str) -> tuple[str, str]:
    """The modules whose import closure is the stage's code: its own and this one."""
    return (STAGE_MODULES[stage], __name__)


def stage_name(stage: str, model: str) -> str:
    return f"{stage}:{model}"


def keras_path(config, out: Path | None, name: str) -> Path:
    """The model's .keras file: the user's, or the one the train stage writes."""
    return Path(config.user_models[name]) if config.keras else RunFolder(out).keras(name)


def stage_key(stage: str, config, out: Path, name: str) -> str:
    """The key of one of the model's stages; reads its upstream artifacts, which must exist."""
    return digest(stage, code_key(*stage_modules(stage)),
                  _module(stage).key_parts(config, out, name))


def check_user_models(config, names) -> None:
    """Refuse, before any work starts, a user's model that its data does not fit."""
    _module("convert").check_user_models(config, names)


def _module(stage: str):
    return importlib.import_module(STAGE_MODULES[stage])


@dataclass(frozen=True)
class BuildJob:
    """Build `name` from `first` (a stage of STAGES) on; the stages after it are redone too."""

    name: str
    first: str
    config: object  # the RunConfig (not imported: see the module's docstring)
    out: Path
    debug: bool = False


@dataclass(frozen=True)
class StageRun:
    """What a stage's `run` did: the files it wrote (relative to the run folder), its value for
    the stage record, and its part of the job's summary."""

    outputs: tuple
    value: object = None
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StageDone:
    name: str  # e.g. "convert:cnn_swish"
    key: str
    outputs: tuple  # paths relative to the run folder
    value: object = None
    seconds: float = 0.0  # what it took: the next run schedules the longest jobs first


def build_model(job: BuildJob) -> tuple[list[StageDone], dict]:
    """Run the job's stages; return what each did (for the stage record) and a summary for
    the console ({"trained": training record, "converted": [...modes], "seconds": ...})."""
    started = time.perf_counter()
    done, summary, shared = [], {}, {}
    for stage in STAGES[STAGES.index(job.first):]:
        begun = time.perf_counter()
        ran = _module(stage).run(job, shared)
        summary.update(ran.summary)
        done.append(StageDone(stage_name(stage, job.name),
                              stage_key(stage, job.config, job.out, job.name), ran.outputs,
                              ran.value, time.perf_counter() - begun))
    summary["seconds"] = time.perf_counter() - started
    return done, summary
