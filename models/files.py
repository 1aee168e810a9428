"""Write files so that a reader never sees half of one: write aside, then rename."""

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

# Half-written files live in this subfolder of their destination's folder, never beside it: a
# process killed mid-write (SIGKILL) leaves them where no `*.keras` or `*.tflite` glob looks.
PARTIAL = ".partial"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_partials(folder: Path) -> None:
    """Remove what killed writers left in `folder/.partial` (names start with their pid)."""
    partial = Path(folder) / PARTIAL
    try:
        names = os.listdir(partial)
    except FileNotFoundError:
        return
    for name in names:
        pid = name.split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(partial / name)
            except OSError:
                pass
    try:
        partial.rmdir()  # only when empty: another writer may be using it
    except OSError:
        pass


@contextmanager
def atomic_path(dest: Path):
    """Yield a temporary path for `dest` (same name and suffix, in `.partial/` beside it); on
    success it is renamed over `dest`, so `dest` is always whole or absent. Leftovers of killed
    writers in that folder are removed first."""
    dest = Path(dest)
    clean_partials(dest.parent)
    partial = dest.parent / PARTIAL
    partial.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{os.getpid()}.", suffix=f".{dest.name}", dir=partial)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary artifact
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        try:
            partial.rmdir()
        except OSError:
            pass


def write_json(dest: Path, data) -> None:
    """Unchanged content is not rewritten: an incremental run leaves a file's mtime alone."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    try:
        if Path(dest).read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def sha256_file(path: Path) -> str:
    """Hash in 1 MiB blocks: a model may be larger than memory should hold."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
