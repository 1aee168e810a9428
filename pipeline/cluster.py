"""The driver's side of `--executor dask://HOST:PORT`: jobs run on a Dask distributed cluster.

Dask schedules; edgepipe only submits. At connect the driver checks that every worker runs
the same edgepipe (its version and its source) and TensorFlow, and that some worker offers the
`tf` resource that bounds the TensorFlow jobs per worker. Model jobs go through
`Client.get_executor(resources={"tf": 1})`, no more at once than the cluster has `tf` slots (a
job waiting on a worker that dies counts against it as if it had run there); parity chunks go
through a plain executor. Each job's inputs travel by content (pipeline/sandbox.py); its
outputs come back as bytes, and this process writes them through the atomic path, so a run
killed at any point leaves every file whole. A job whose worker died (`KilledWorker`, after
the scheduler's retries) is that job's error, naming the signal from the worker's nanny; a
model job runs in the worker's job process (pipeline/job_process.py), whose death is said the
same way without costing the worker.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import time
from pathlib import Path

from ..core.errors import EdgepipeError, JobFailed
from ..core.files import sha256_file, write_returned
from ..core.versions import versions
from .job_process import death
from .sandbox import Shipped, pack_user_path, run_in_folder, run_sandboxed

SCHEME = "dask://"
RESOURCE = "tf"  # the worker resource a TensorFlow job takes one of
DEATH_WAIT = 5.0  # seconds to find a dead worker's signal in its nanny's log
CONNECT_TIMEOUT = "10s"  # Dask retries a refused connection until then
_KILLED = re.compile(r"Worker process (\d+) (?:was killed by signal (\d+)|was killed by "
                     r"unknown signal|exited with status (\d+))")


def worker_identity() -> dict:
    """What must be equal on the driver and every worker: the versions of edgepipe and of
    TensorFlow, and a digest of edgepipe's source (an editable install keeps its version)."""
    found = versions()
    tf = {k: found[k] for k in ("tensorflow-cpu", "tensorflow") if k in found}
    return {"edgepipe": found.get("edgepipe", "?"), **tf, "source": source_digest()}


def source_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for room in ("core", "models", "converters", "pipeline", "device_tests"):
        for path in sorted((root / room).rglob("*.py")):
            h.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()[:12]


def describe(identity: dict) -> str:
    tf = ", ".join(f"{k} {v}" for k, v in identity.items() if k.startswith("tensorflow"))
    return f"edgepipe {identity['edgepipe']} (source {identity['source']}){', ' + tf if tf else ''}"


def _address(url: str) -> str:
    """HOST:PORT without a protocol: Dask's `distributed.comm.default-scheme` (tcp, or tls
    where the user's Dask configuration turns TLS on) decides it."""
    return url.removeprefix(SCHEME)


class DaskExecutor:
    """The executor `dask://HOST:PORT` (executors.py): model jobs sandboxed on the cluster's
    workers (the driver writes their files), and the chunks of portable targets there too."""

    def __init__(self, url: str, debug: bool = False):
        try:
            from distributed import Client
        except ImportError:
            raise EdgepipeError(f"--executor {url} needs Dask distributed, which is not "
                                "installed; pip install 'edgepipe[cluster]'") from None
        self.name = self.url = url
        self.debug = debug
        try:
            self.client = Client(_address(url), timeout=CONNECT_TIMEOUT, set_as_default=False)
        except OSError as exc:
            raise EdgepipeError(f"Cannot reach the Dask scheduler at {url} ({exc}); start one "
                                "with `dask scheduler` and workers with `dask worker "
                                "tcp://HOST:8786 --resources tf=1` (README \"Running on a "
                                "cluster\")") from None
        try:
            self._check_workers()
        except BaseException:
            self.client.close()
            raise
        self._blobs: dict = {}  # sha256 -> its scattered bytes (each file travels once)
        self._chunks = self.client.get_executor(pure=False)
        # What crossed the network: bytes scattered (each distinct file once) and returned.
        self.moved = {"model_jobs": 0, "chunks": 0, "files_sent": 0, "bytes_sent": 0,
                      "bytes_received": 0}

    def _check_workers(self) -> None:
        mine = worker_identity()
        theirs = self.client.run(worker_identity)
        for address, identity in sorted(theirs.items()):
            if identity != mine:
                raise EdgepipeError(f"The Dask worker {address} runs {describe(identity)}, "
                                    f"this driver {describe(mine)}; install the same edgepipe "
                                    "and TensorFlow on every worker")
        if not self.slots():
            raise EdgepipeError(f"No worker of {self.url} offers the resource {RESOURCE!r} "
                                "that bounds TensorFlow jobs; start workers with `dask worker "
                                f"... --resources {RESOURCE}=1`")

    def slots(self) -> int:
        """The cluster's `tf` slots now: how many model jobs may run at once."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return int(sum(w.get("resources", {}).get(RESOURCE, 0) for w in workers))

    def remote_threads(self) -> int:
        """The cluster's worker threads: parity chunks at once there."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(1, sum(w.get("nthreads", 1) for w in workers))

    def remote(self, target) -> bool:
        return target.portable

    def close(self) -> None:
        self.client.close()

    def _ship(self, data: bytes) -> tuple[str, object]:
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self._blobs:
            self.moved["files_sent"] += 1
            self.moved["bytes_sent"] += len(data)
            key = f"edgepipe-file-{sha}"
            self._blobs[sha] = self.client.scatter({key: data}, hash=False)[key]
        return sha, self._blobs[sha]

    def shipped(self, out: Path, run_files, user_files) -> tuple[Shipped, dict]:
        """What a job reads (run-folder paths and the user's paths), scattered by content."""
        blobs, run, user = {}, {}, {}
        for rel in run_files:
            sha, blobs_ref = self._ship((Path(out) / rel).read_bytes())
            run[rel], blobs[sha] = sha, blobs_ref
        for path in user_files:
            sha, blobs_ref = self._ship(pack_user_path(Path(path)))
            user[str(path)], blobs[sha] = sha, blobs_ref
        return Shipped(run, user), blobs

    def map_jobs(self, fn, jobs: list, config, out: Path, inputs=None):
        """Yield (job, fn(job)) as each finishes, or (job, JobFailed) when its worker died;
        `inputs(job)`: the run-folder paths it reads (the user's paths come from `config`).
        Every file a job wrote is written here before it is yielded."""
        from distributed import KilledWorker

        pending = list(jobs)
        executor = self.client.get_executor(resources={RESOURCE: 1}, pure=False)
        running: dict = {}
        try:
            while pending or running:
                free = max(1, self.slots()) - len(running)
                while pending and free > 0:
                    job = pending.pop(0)
                    shipped, blobs = self.shipped(out, inputs(job) if inputs else [],
                                                  user_paths(config, job.name))
                    running[executor.submit(run_sandboxed, fn, job, shipped, blobs,
                                            self.debug)] = job
                    free -= 1
                done, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    try:
                        result, files = future.result()
                    except KilledWorker as exc:
                        result, files = JobFailed(self._death(exc)), {}
                    if isinstance(result, JobFailed):  # its process or its worker died
                        yield job, result
                        continue
                    self.moved["model_jobs"] += 1
                    self.moved["bytes_received"] += sum(map(len, files.values()))
                    write_returned(out, files)
                    yield job, result
        finally:
            for future in running:
                future.cancel()

    def run_remote(self, fn, *args, out: Path, run_files=()):
        """fn(folder, *args) on a worker, in a fresh folder holding `run_files` (run-folder
        paths); blocks; returns its result, or JobFailed when its worker died (a parity chunk:
        not a TensorFlow job, so no `tf` slot)."""
        from distributed import KilledWorker

        shipped, blobs = self.shipped(out, run_files, ())
        future = self._chunks.submit(run_in_folder, fn, shipped, blobs, *args)
        try:
            result = future.result()
        except KilledWorker as exc:
            return JobFailed(self._death(exc))
        self.moved["chunks"] += 1
        return result

    def summary(self) -> str:
        """One line: the jobs sent and the bytes that crossed the network."""
        m = self.moved
        return (f"on {self.url}: {m['model_jobs']} model job(s), {m['chunks']} parity "
                f"chunk(s); sent {m['bytes_sent'] / 1e6:.2f} MB ({m['files_sent']} distinct "
                f"files, each once), received {m['bytes_received'] / 1e6:.2f} MB of model "
                "job outputs")

    def _death(self, exc) -> str:
        """The worker's death as its nanny logged it (the nanny outlives the worker and logs
        its pid): the signal, else the exit status."""
        worker = getattr(exc, "last_worker", None)
        pid, nanny = getattr(worker, "pid", None), getattr(worker, "nanny", None)
        how = "its worker process died"
        deadline = time.monotonic() + DEATH_WAIT
        while pid and how.endswith("died") and time.monotonic() < deadline:
            # the scheduler may hear of the death before the nanny has logged it
            for line in self._nanny_lines(nanny):
                found = _KILLED.search(line)
                if found and found.group(1) == str(pid):
                    how = f"its worker process {_death_phrase(found)}"
                    break
            else:
                time.sleep(0.2)
        where = getattr(worker, "address", None) or "a worker"
        tries = getattr(exc, "allowed_failures", None)
        retried = (f" ({tries + 1} worker(s) tried; the last was {where})"
                   if tries is not None else f" (on {where})")
        return f"{how}{retried}: out of memory or a crash in native code; Dask's KilledWorker"

    def _nanny_lines(self, nanny: str | None) -> list:
        """The log lines of the dead worker's nanny, asked directly: until the nanny's new
        worker registers, the scheduler does not list it."""
        try:
            logs = self.client.sync(self.client.rpc(nanny).get_logs, n=500) if nanny else []
        except Exception:  # the nanny is gone too (its machine): say what is known
            logs = []
        return [line for _, line in logs]


def user_paths(config, name: str) -> list:
    """The user's files a model job reads: the model (with its training record, when it has
    one), the data, the custom objects and the .tflite files given for it."""
    if not config.keras:
        return list(config.custom_objects)
    return [config.user_models[name], config.data, *config.custom_objects,
            *config.given_tflite.get(name, ())]


def _death_phrase(found: re.Match) -> str:
    """The nanny's line about a worker's end, as job_process.death says it."""
    if found.group(2):
        return death(-int(found.group(2)))
    if found.group(3):
        return death(int(found.group(3)))
    return "was killed by an unknown signal"
