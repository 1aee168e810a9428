"""The order model jobs start in: longest first, so that the workers finish together.

`longest_first` ranks by what each job's stages took when last done in the run folder; a job
never timed there (a cold run) comes first, ranked by the size of what it starts from. Real
configs and stage records, no TensorFlow (ordering happens before any worker starts)."""

import numpy as np

from edgepipe.models.datasets import BUILTIN, _builtin
from edgepipe.pipeline.build import BuildJob
from edgepipe.pipeline.config import RunConfig
from edgepipe.pipeline.run import longest_first
from edgepipe.pipeline.stages import Stages


def jobs(config, out, names, first="train"):
    return [BuildJob(name, first, config, out) for name in names]


def test_builtin_sizes_are_the_datasets_own():
    for name, size in BUILTIN.items():
        x, _, _ = _builtin(name)
        assert size == np.asarray(x).size, name


def test_a_cold_zoo_run_starts_the_models_on_the_larger_dataset(tmp_path):
    names = ("mlp_swish", "cnn_swish", "mlp_step", "cnn_step")
    config = RunConfig(models=names)
    order = [j.name for j in longest_first(jobs(config, tmp_path, names), Stages(tmp_path))]
    assert order == ["cnn_swish", "cnn_step", "mlp_swish", "mlp_step"]  # stable within a size


def test_recorded_times_rank_jobs_and_untimed_ones_come_first(tmp_path):
    names = ("mlp_swish", "cnn_swish", "mlp_step", "cnn_step")
    config = RunConfig(models=names)
    stages = Stages(tmp_path)
    took = {"mlp_swish": 1.0, "cnn_swish": 2.0, "mlp_step": 30.0}  # cnn_step never timed
    for name, seconds in took.items():
        for stage in ("train", "convert", "bundle"):
            stages.record(f"{stage}:{name}", "k", (), None, seconds / 3)
    order = [j.name for j in longest_first(jobs(config, tmp_path, names), stages)]
    assert order == ["cnn_step", "mlp_step", "cnn_swish", "mlp_swish"]
    # A job that starts at its bundle stage is ranked by that stage's time alone.
    stages.record("bundle:cnn_step", "k", (), None, 0.5)
    stages.record("train:cnn_step", "k", (), None, 100.0)
    mixed = [BuildJob("cnn_step", "bundle", config, tmp_path),
             BuildJob("cnn_swish", "train", config, tmp_path)]
    assert [j.name for j in longest_first(mixed, stages)] == ["cnn_swish", "cnn_step"]


def test_users_models_without_times_start_with_the_largest_file(tmp_path):
    files = {}
    for name, size in (("small", 10), ("large", 1000), ("middle", 100)):
        files[name] = tmp_path / f"{name}.keras"
        files[name].write_bytes(b"x" * size)
    saved_model = tmp_path / "saved"  # a SavedModel folder: the size of its files
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"x" * 400)
    (saved_model / "variables" / "variables.data").write_bytes(b"x" * 300)
    files["saved"] = saved_model
    data = tmp_path / "data.npz"
    data.write_bytes(b"")
    config = RunConfig(models=(), keras=tuple(str(p) for p in files.values()), data=str(data))
    order = [j.name for j in longest_first(jobs(config, tmp_path, list(files), "convert"),
                                           Stages(tmp_path))]
    assert order == ["large", "saved", "middle", "small"]
