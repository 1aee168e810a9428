"""The train stage: a zoo model trained on its built-in dataset, saved with its training record.

Its code is this module's import closure (build.py): it imports what training runs, nothing of
the converters.
"""

from ..core.versions import versions
from ..device_tests.schema import RunFolder
from .build import StageRun


def key_parts(config, out, name: str) -> list:
    """The model, the epochs, the seed and the installed versions (TensorFlow's above all)."""
    return [name, config.epochs, config.seed, versions()]


def run(job, shared: dict) -> StageRun:
    from ..models.datasets import load_builtin
    from ..models.training import TrainConfig, train
    from ..models.zoo import ZOO

    config, folder, spec = job.config, RunFolder(job.out), ZOO[job.name]
    record = train(spec, load_builtin(spec.dataset, config.seed),
                   TrainConfig(epochs=config.epochs, seed=config.seed), folder.models_dir)
    return StageRun((folder.rel(folder.keras(job.name)),
                     folder.rel(folder.training_record(job.name))), summary={"trained": record})
