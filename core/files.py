"""Write files so that a reader never sees half of one, and never reach outside the folder.

A file is written aside, in a `.partial/` subfolder of its destination's folder, then renamed
over the destination. Run folders travel (rsync to a board and back, CI artifacts, a colleague's
folder), so nothing here trusts what it finds in them: a `.partial` that is a symbolic link is
refused, a file is created with O_EXCL | O_NOFOLLOW, and a clean-up removes only files whose name
proves that edgepipe made them: `edgepipe-<pid>-<start>-<random>.<name>`, where pid and the
process's start time name the writer exactly (a reused pid has another start time), so a
killed writer's leftover can be told from a live writer's file and from anybody else's.
"""

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .errors import EdgepipeError

# Half-written files live in this subfolder of their destination's folder, never beside it: a
# process killed mid-write (SIGKILL) leaves them where no `*.keras` or `*.tflite` glob looks.
PARTIAL = ".partial"
OWN_NAME = re.compile(r"^edgepipe-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]{16}\.")


def _started(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks after boot, /proc/PID/stat field 22); None
    when there is no such process or no /proc."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data.rsplit(b")", 1)[1].split()[19].decode()


def _alive(pid: int, start: str) -> bool:
    if Path("/proc/self/stat").exists():
        return _started(pid) == start
    try:  # no /proc (macOS): the pid alone, which errs on the side of keeping the file
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_name(name: str) -> str:
    """A name for a scratch file of this process that its clean-up can prove is edgepipe's."""
    return f"edgepipe-{os.getpid()}-{_started(os.getpid()) or 0}-{secrets.token_hex(8)}.{name}"


# What a path can name besides a regular file, as a message says it.
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def file_kind(mode: int) -> str | None:
    """None for a regular file, else what it is ("a FIFO (named pipe)"): opening a FIFO blocks
    for ever and /dev/zero never ends, so readers refuse them from a stat first."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _link_error(path: Path) -> EdgepipeError:
    return EdgepipeError(
        f"{path} is a symbolic link (to {os.readlink(path)}); edgepipe keeps its own files "
        "there and will not follow a link out of the folder: remove the link, or copy the "
        "folder with its links resolved (cp -rL).")


def _open_folder(folder: Path, create: bool) -> int | None:
    """A file descriptor of `folder`, opened without following a link (None when absent)."""
    if create:
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        if folder.is_symlink():
            raise _link_error(folder) from None
        if e.errno == errno.ENOTDIR:
            raise EdgepipeError(f"{folder} is a file where edgepipe keeps a folder of its own; "
                                "remove it, or use another folder.") from None
        raise


def _remove_files(folder: Path, chosen) -> None:
    """Remove the regular files in `folder` whose names `chosen(name)` picks, the folder opened
    without following a link; links and anything else are left alone."""
    fd = _open_folder(Path(folder), create=False)
    if fd is None:
        return
    try:
        for name in os.listdir(fd):
            try:
                if chosen(name) and stat.S_ISREG(os.lstat(name, dir_fd=fd).st_mode):
                    os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass  # another clean-up was first
    finally:
        os.close(fd)


def remove_leftovers(folder: Path) -> None:
    """Remove the files that killed edgepipe writers left in `folder`: own names of writers
    that are no longer running."""

    def dead_writers(name: str) -> bool:
        match = OWN_NAME.match(name)
        return bool(match) and not _alive(int(match["pid"]), match["start"])

    _remove_files(folder, dead_writers)


def prune(folder: Path, names: re.Pattern, keep: set[str]) -> None:
    """Remove the files in `folder` whose whole name matches `names` (a shape only edgepipe
    gives its files there) and is not in `keep`."""
    _remove_files(folder, lambda name: bool(names.fullmatch(name)) and name not in keep)


def check_run_folder(folder: Path) -> None:
    """Refuse a run folder that holds anything but folders and regular files: edgepipe writes
    and cleans up inside it, and a received folder could point a symbolic link anywhere, or
    hold a FIFO that blocks whoever reads it (edgepipe makes neither)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise _link_error(path)
            if not stat.S_ISDIR(mode) and file_kind(mode):
                raise EdgepipeError(f"{path} is not a regular file or folder but "
                                    f"{file_kind(mode)}; a run folder holds none: remove it.")


def _create(folder: Path, name: str) -> tuple[int, int]:
    """(folder's fd, new file's fd) for `name`, made in `folder` (created when missing). Another
    writer's clean-up removes the folder when it finds it empty (atomic_path), possibly between
    our mkdir and our create: the create then finds the folder gone, and is tried again; once
    our file is in it, the folder is not empty and stays."""
    for _ in range(100):
        fd = _open_folder(folder, create=True)
        if fd is None:  # removed between our mkdir and our open
            continue
        try:
            return fd, os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                               0o644, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
        except BaseException:
            os.close(fd)
            raise
    raise EdgepipeError(f"{folder} keeps disappearing while edgepipe writes in it; is another "
                        "program removing it?")


@contextmanager
def scratch_file(folder: Path, name: str):
    """Yield the path of a new, empty regular file of this process in `folder` (made there, not
    through a link), and its identity (os.stat_result); the file is removed on exit unless it
    was renamed away. Leftovers of killed writers in `folder` are removed first."""
    folder = Path(folder)
    remove_leftovers(folder)
    mine = own_name(name)
    fd, handle = _create(folder, mine)
    try:
        made = os.fstat(handle)
        os.close(handle)
        try:
            yield folder / mine, made
        finally:
            try:
                if stat.S_ISREG(os.lstat(mine, dir_fd=fd).st_mode):
                    os.unlink(mine, dir_fd=fd)
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(dest: Path):
    """Yield a temporary path for `dest` (in `.partial/` beside it, its name ending in dest's
    name); on success it is renamed over `dest`, so `dest` is always whole or absent."""
    dest = Path(dest)
    partial = dest.parent / PARTIAL
    try:
        with scratch_file(partial, dest.name) as (tmp, made):
            yield tmp
            now = os.lstat(tmp)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (made.st_dev,
                                                                              made.st_ino):
                raise EdgepipeError(f"{tmp} was replaced by something else while edgepipe "
                                    "wrote it; is another program writing in this folder?")
            os.replace(tmp, dest)
    finally:
        try:
            os.rmdir(partial)  # only when empty: another writer may be using it
        except OSError:
            pass


def write_json(dest: Path, data) -> None:
    """Unchanged content is not rewritten: an incremental run leaves a file's mtime alone."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    try:
        if stat.S_ISREG(os.lstat(dest).st_mode) and Path(dest).read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_bytes(dest: Path, data: bytes) -> None:
    """`data` as the file `dest` (its folders made), whole or not at all."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def inside(root: Path, rel: str) -> Path:
    """`root / rel` for a name another process sent (a cluster's driver or worker): a relative
    path that stays in `root`, else EdgepipeError."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise EdgepipeError(f"A file named {rel!r} was sent, outside the run folder; refused "
                            "it. Check that the driver and the workers run this edgepipe")
    return Path(root).joinpath(*parts)


def write_returned(root: Path, files: dict) -> None:
    """Files a cluster's worker returned ({path relative to `root`: bytes}), each written whole
    into `root`; a name that would leave it is refused."""
    for rel, data in sorted(files.items()):
        write_bytes(inside(root, rel), data)


def sha256_file(path: Path) -> str:
    """Hash in 1 MiB blocks: a model may be larger than memory should hold."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_model(path: Path) -> str:
    """A model's content hash: its file's, or for a folder (a SavedModel) the hash of every
    regular file's relative path and hash, in order (links are not followed out of it)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            member = Path(folder) / name
            if member.is_file() and not member.is_symlink():
                h.update(f"{member.relative_to(path).as_posix()}\0{sha256_file(member)}\n"
                         .encode())
    return h.hexdigest()


def writable_folder(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written, or is full, before any work;
    a disk that fills up later is caught by the CLI (files are written whole or not at all)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgepipeError(f"Cannot create output folder {folder}: {e.strerror}. "
                            "Choose another --out.") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".edgepipe-probe-"):
            pass
    except OSError as e:
        raise EdgepipeError(f"Output folder {folder} is not writable: {e.strerror}. "
                            "Choose another --out.") from None
    if shutil.disk_usage(folder).free == 0:
        raise EdgepipeError(f"Output folder {folder} is on a full file system (0 bytes free). "
                            "Free some space or choose another --out.")
