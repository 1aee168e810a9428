"""A job on a cluster worker, in a folder of its own: the driver stays the only writer.

The driver ships what a job reads by content: each file of the run folder and each of the
user's files (a model, its data, custom objects, .tflite files) as bytes named by their sha256.
Here they are laid out as they were on the driver: the run folder's files in a fresh folder that
stands for it, the user's files in a store kept for the worker's life (one folder per sha256,
under their own names, so that `--custom-objects` modules import once per worker). The job runs
there as it would locally; every file it wrote comes back as bytes, beside its result. Nothing
is written where the driver would see it, and no file system is shared.
"""

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import JobFailed
from ..core.files import inside, sha256_file

_store: Path | None = None  # this worker's folder of the user's files, by sha256


@dataclass(frozen=True)
class Shipped:
    """What a job reads, by content: {run-folder path: sha256} and {the user's path (as the
    config names it): sha256 of its archive}. The bytes travel beside it, keyed by sha256."""

    run_files: dict
    user_files: dict


def pack_user_path(path: Path) -> bytes:
    """A user's file or folder (a SavedModel), and the training record a `.keras` file may
    have beside it, as one tar archive: members under their own names, in a fixed order and
    with fixed times, so the same files always make the same bytes (and sha256)."""
    path = Path(path)
    members = [path]
    if path.is_dir():
        members = [path, *sorted(p for p in path.rglob("*") if not p.is_symlink())]
    elif path.with_suffix(".json").is_file() and path.suffix != ".json":
        members.append(path.with_suffix(".json"))
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            name = (Path(path.name) / member.relative_to(path) if path.is_dir()
                    and member != path else Path(member.name)).as_posix()
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, 0o755 if member.is_dir() else 0o644
            if member.is_dir():
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = member.read_bytes()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return stream.getvalue()


def run_sandboxed(fn, job, shipped: Shipped, blobs: dict, debug: bool):
    """fn(job), in this worker's job process (pipeline/job_process.py), with the job's run
    folder and user's files laid out on this worker; returns (its result, {run-folder path:
    bytes} of every file it wrote or changed), or (JobFailed, {}) when the process died."""
    from .job_process import run_in_job_process

    user = {given: _unpacked(sha, blobs[sha], Path(given).name)
            for given, sha in shipped.user_files.items()}
    config = _remapped(job.config, user)
    with tempfile.TemporaryDirectory(prefix="run-", dir=_worker_store()) as folder:
        root = _laid_out(Path(folder), shipped, blobs)
        result = run_in_job_process(fn, replace(job, config=config, out=root),
                                    config.custom_objects, config.unsafe, debug)
        if isinstance(result, JobFailed):
            return result, {}
        return result, _written(root, shipped.run_files)


def run_in_folder(fn, shipped: Shipped, blobs: dict, *args):
    """fn(folder, *args) in a fresh folder holding the shipped run-folder files (a parity
    chunk: its runner reads them there, and fn returns what it wrote)."""
    with tempfile.TemporaryDirectory(prefix="chunk-", dir=_worker_store()) as folder:
        return fn(_laid_out(Path(folder), shipped, blobs), *args)


def _laid_out(root: Path, shipped: Shipped, blobs: dict) -> Path:
    for rel, sha in shipped.run_files.items():
        dest = inside(root, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blobs[sha])
    return root


def _worker_store() -> Path:
    global _store
    if _store is None:
        _store = Path(tempfile.mkdtemp(prefix=f"edgepipe-worker-{os.getpid()}-"))
    return _store


def _unpacked(sha: str, data: bytes, name: str) -> str:
    """The user's file (or folder) `name` from its archive, in the store's folder for `sha`."""
    folder = _worker_store() / sha
    if not folder.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=f".{sha}.", dir=_worker_store()))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(partial, filter="data")  # no member may leave the folder
        os.replace(partial, folder)
    return str(folder / name)


def _remapped(config, user: dict):
    """The run config with the user's paths replaced by their copies on this worker."""
    def moved(paths):
        return tuple(user.get(str(p), p) for p in paths)

    return replace(config, keras=moved(config.keras), custom_objects=moved(config.custom_objects),
                   tflite=moved(config.tflite),
                   data=user.get(str(config.data), config.data) if config.data else None)


def _written(root: Path, shipped: dict) -> dict:
    """{run-folder path: bytes} of the files under `root` that were not shipped as they are."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .partial/ of an atomic write
        for name in files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not path.is_symlink() and shipped.get(rel) != sha256_file(path):
                out[rel] = path.read_bytes()
    return out
