"""The executor seam without a cluster: which names are executors, and what a user without Dask
distributed installed is told."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepipe.core.errors import EdgepipeError
from edgepipe.pipeline.config import RunConfig
from edgepipe.pipeline.executors import LocalExecutor, check_executor, open_executor

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))


@pytest.mark.parametrize("name", ["local", "dask://127.0.0.1:8786", "dask://sched.lan:1",
                                  "dask://[::1]:8786"])
def test_executor_names(name):
    assert check_executor(name) == name


@pytest.mark.parametrize("name", ["", "Local", "dask://", "dask://host", "dask://host:0",
                                  "dask://host:99999", "dask://host:8786/x", "tcp://h:8786",
                                  "dask://user@host:8786", "spark://h:7077"])
def test_not_executors(name):
    with pytest.raises(EdgepipeError, match="Expected an executor local or dask://HOST:PORT"):
        check_executor(name)


def test_local_is_the_spawned_pool_here():
    executor = open_executor("local", 3)
    assert isinstance(executor, LocalExecutor) and executor.workers == 3
    assert executor.remote_threads() == 0 and executor.summary() is None


def job_pid(job) -> int:
    return os.getpid()


def job_cores(job) -> tuple:
    time.sleep(0.5)  # long enough for every worker to start and take a job
    return os.getpid(), tuple(sorted(os.sched_getaffinity(0)))


def test_each_worker_has_a_core_of_its_own(tmp_path):
    """With no more workers than cores, each worker (its TensorFlow threads too) runs on one
    core, no two on the same; this process keeps them all. With more workers than cores
    nothing is pinned."""
    cores = tuple(sorted(os.sched_getaffinity(0)))
    config = RunConfig(models=("mlp_swish",))
    for workers in (2, len(cores) + 1):
        executor = LocalExecutor(workers)
        try:
            seen = dict(result for _, result in executor.map_jobs(
                job_cores, list(range(4 * workers)), config, tmp_path))
        finally:
            executor.close()
        assert len(seen) >= 2  # two workers at least took jobs
        if workers <= len(cores):
            assert all(len(pinned) == 1 for pinned in seen.values()), seen
            assert len({pinned for pinned in seen.values()}) == len(seen), seen
        else:
            assert set(seen.values()) == {cores}, seen
    assert tuple(sorted(os.sched_getaffinity(0))) == cores


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_workers_are_started_once_and_kept_until_close(tmp_path):
    """The build's jobs and the repair's later ones share the spawned workers (each imports
    TensorFlow once); `close` stops them. One worker runs its jobs in this process."""
    config = RunConfig(models=("mlp_swish",))
    executor = LocalExecutor(2)
    try:
        build = {pid for _, pid in executor.map_jobs(job_pid, [1, 2, 3, 4], config, tmp_path)}
        repair = {pid for _, pid in executor.map_jobs(job_pid, [5], config, tmp_path)}
        assert os.getpid() not in build and 1 <= len(build) <= 2
        assert repair <= build  # one job, yet in a warm worker: not this process, not a new one
    finally:
        executor.close()
    assert not any(_alive(pid) for pid in build)
    single = LocalExecutor(1)
    assert {pid for _, pid in single.map_jobs(job_pid, [1, 2], config, tmp_path)} == {
        os.getpid()}
    single.close()


def test_without_dask_installed_the_cluster_executor_says_what_to_install(tmp_path):
    """A Python where `import distributed` fails, made here (a module that raises, first on the
    path), not assumed of the machine."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "distributed.py").write_text("raise ImportError('No module named distributed')\n")
    done = subprocess.run([EDGEPIPE, "run", "--out", str(tmp_path / "run"), "--executor",
                           "dask://127.0.0.1:8786"], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(shadow), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --executor dask://127.0.0.1:8786 needs Dask distributed, which is not "
        "installed; pip install 'edgepipe[cluster]'"]
    assert not (tmp_path / "run").exists()
