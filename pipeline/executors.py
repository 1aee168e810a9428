"""Where a run's work runs, behind one seam: `--executor local` (this machine: `--jobs` spawned
worker processes, and parity runners as child processes) or `--executor dask://HOST:PORT` (the
workers of a Dask distributed cluster, pipeline/cluster.py).

Two kinds of work go through it:
- model jobs (train, convert, bundle; repair): `map_jobs(fn, jobs, ...)` yields (job, result),
  or (job, JobFailed) when the job's worker died and the run goes on without that model;
- parity chunks of the targets any edgepipe install can run (host, host-ref, tflm):
  `remote(target)` says whether they go to the cluster, `run_remote` runs one there.
Emulators and boards always run from this machine, which reaches them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ..core.errors import EdgepipeError, JobFailed
from .cluster import SCHEME
from .workers import WorkerPool

LOCAL = "local"
FORMS = f"{LOCAL} or {SCHEME}HOST:PORT"

__all__ = ["FORMS", "LOCAL", "JobFailed", "LocalExecutor", "check_executor", "open_executor"]


def check_executor(text: str) -> str:
    """`text`, when it names an executor; else a one-line EdgepipeError."""
    if text == LOCAL:
        return text
    if isinstance(text, str) and text.startswith(SCHEME):
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname and port and not (parts.path.strip("/") or parts.query
                                            or parts.username):
            return text
    raise EdgepipeError(f"Expected an executor {FORMS} (e.g. dask://10.0.0.5:8786). Received: "
                        f"{text!r}; the port is the Dask scheduler's (8786 by default)")


class LocalExecutor:
    """This machine: model jobs in `workers` spawned processes (pipeline/workers.py), kept
    from the first job to `close`."""

    name = LOCAL

    def __init__(self, workers: int, debug: bool = False):
        self.workers, self.debug = workers, debug
        self._pool = None

    def remote_threads(self) -> int:
        return 0

    def remote(self, target) -> bool:
        return False

    def map_jobs(self, fn, jobs: list, config, out: Path, inputs=None):
        if self._pool is None:
            self._pool = WorkerPool(self.workers, self.debug, config.custom_objects,
                                    config.unsafe)
        yield from self._pool.run(fn, jobs)

    def summary(self) -> str | None:
        return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def open_executor(name: str, workers: int, debug: bool = False):
    """The executor `name` (checked by `check_executor`), connected."""
    if check_executor(name) == LOCAL:
        return LocalExecutor(workers, debug)
    from .cluster import DaskExecutor

    return DaskExecutor(name, debug)
