"""Worker processes for `--jobs N`: build jobs that import TensorFlow, one per process.

Workers are spawned, not forked: a fork of a process that may hold TensorFlow's threads can
deadlock. Each imports TensorFlow once and the `--custom-objects` files, and ignores Ctrl-C:
the parent gets it, stops, and terminates them.
"""

import multiprocessing
import os
import signal

from .quiet import import_tensorflow, quiet_tensorflow

_options = None  # this process's LoadOptions
_prepared = None  # the (files, unsafe) they were made from
_failed: Exception | None = None  # why the worker could not start, raised by its first job


def _cores() -> tuple:
    """The cores this process may run on, by number; none where that cannot be asked (not
    Linux)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:
        return ()


def default_jobs() -> int:
    """The cores this process may use."""
    return max(1, len(_cores()) or os.cpu_count() or 1)


def prepare(debug: bool, files, unsafe: bool) -> None:
    """Import TensorFlow and the custom objects in this process (the worker's or the parent's,
    for --jobs 1), TensorFlow on one intra-op thread (`one_thread`)."""
    from ..models.loading import LoadOptions

    global _options, _prepared
    wanted = (tuple(str(f) for f in files), unsafe)
    if _prepared == wanted:  # done already (a run checks users' models first)
        return
    quiet_tensorflow(debug)
    import_tensorflow(debug)
    one_thread()
    _options = LoadOptions.from_files(files, unsafe)
    _prepared = wanted


def one_thread() -> None:
    """One intra-op thread for this process's TensorFlow: the cores are shared out by --jobs,
    one job each. With TensorFlow's default (a thread per core in every process), two jobs on
    two cores trained 37 % slower each than one job alone; and the thread count decides how
    float reductions are split, so a fixed count keeps the .tflite files the same at any
    --jobs (on a cluster too). One thread was also faster at --jobs 1 on the zoo's models."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran here (a test's process): left as it is
        pass


def in_context(fn, *args):
    """fn(*args) with this process's --custom-objects and --unsafe in force."""
    from ..models.loading import load_options

    with load_options(_options):
        return fn(*args)


def cores_for(workers: int) -> tuple:
    """The cores `workers` workers are pinned to, one each; none (no pinning) when there are
    fewer cores than workers, or no way to pin. Two unpinned workers training on two cores took
    7.9 s each for cnn_swish where each pinned to a core of its own took 6.2 s (alone 5.7 s):
    TensorFlow's threads hand each batch over, and the scheduler moved them onto the core the
    other worker was using."""
    cores = _cores()
    return cores if workers <= len(cores) else ()


def _pin(cores: tuple) -> None:
    """This worker (and the threads it starts) on one of `cores`: the pool's workers are
    numbered in the order they start."""
    if cores:
        number = multiprocessing.current_process()._identity[-1]
        os.sched_setaffinity(0, {cores[(number - 1) % len(cores)]})


def _init_worker(debug: bool, files, unsafe: bool, cores: tuple = ()) -> None:
    global _failed
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _pin(cores)  # before TensorFlow starts its threads: they inherit it
        prepare(debug, files, unsafe)
    except Exception as exc:  # raised by a job instead: a failing initializer is restarted
        _failed = exc        # by the pool for ever


def _call(fn_and_job):
    if _failed is not None:
        raise _failed
    fn, job = fn_and_job
    return job, in_context(fn, job)


class WorkerPool:
    """`workers` spawned processes for model jobs, started on first use and kept until `close`:
    the build and the repair jobs of a run share them, so each imports TensorFlow once."""

    def __init__(self, workers: int, debug: bool, files=(), unsafe: bool = False):
        self.workers, self.debug, self.files, self.unsafe = workers, debug, tuple(files), unsafe
        self._pool = None

    def run(self, fn, jobs: list):
        """Yield (job, fn(job)) as each finishes: in this process when there is one worker (or
        one job) and no worker was started yet; else in the workers. A job's exception is
        raised here."""
        if not jobs:
            return
        if self._pool is None and (self.workers <= 1 or len(jobs) == 1):
            prepare(self.debug, self.files, self.unsafe)
            for job in jobs:
                yield _call((fn, job))
            return
        if self._pool is None:
            workers = max(1, min(self.workers, len(jobs)))
            self._pool = multiprocessing.get_context("spawn").Pool(
                workers, initializer=_init_worker,
                initargs=(self.debug, self.files, self.unsafe, cores_for(workers)))
        yield from self._pool.imap_unordered(_call, [(fn, job) for job in jobs])

    def close(self) -> None:
        """Stop the workers (also in the middle of a job: on an error or Ctrl-C here)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
