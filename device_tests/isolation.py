"""Run a bundle's entries in a worker process, so that an interpreter that crashes or hangs
fails one entry instead of the whole run.

The TFLite interpreter is native code: a malformed model can kill the process (a WHILE whose
body subgraph recurses into itself overflows the C stack: SIGSEGV; fuzzed files give SIGSEGV or
glibc's SIGABRT on a corrupted heap) or loop for ever (a WHILE whose condition is constant
true). So the runner (the parent) starts ONE worker that runs the entries one after the other and
reports on a pipe, for each entry, ("begin", i) and then ("done", i, record). When the worker
dies (a signal) or an entry passes its time limit (the parent kills the worker), the parent
writes that entry's record itself, status "error" with the signal or the limit named, and starts
a new worker for the entries left. When nothing crashes, one worker runs every entry: nothing is
paid per entry.

The worker is a fork of the parent, not a new `python -m device_tests.runner --worker`:
- on the emulated board (qemu-user without binfmt_misc) the guest cannot exec its own Python at
  all (`sys.executable` fails with "Exec format error"); fork works there;
- a fork costs milliseconds where a new Python costs ~0.3 s on the host and ~1.4 s under the
  emulator, and it inherits what the parent imported and loaded (the runtime, the manifest),
  however the package was imported (`edgepipe.device_tests` or top-level `device_tests`);
- the parent never creates an interpreter itself, so the fork copies no interpreter threads.
POSIX only (os.fork). The worker stays in the parent's process group, so Ctrl-C or a kill of
the group reaches it too; on Linux it also dies with the parent (PR_SET_PDEATHSIG). A worker
killed for a time limit is killed with its own children (TFLite Micro's arena probes).
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
import warnings

DEFAULT_ENTRY_TIMEOUT = 600.0
# Signals that mean the process itself faulted (native code), not that someone killed it.
CRASH_SIGNALS = tuple(getattr(signal, name) for name in
                      ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGSYS")
                      if hasattr(signal, name))
_HEADER = struct.Struct(">I")
_TIMEOUT = object()
_EOF = object()


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def describe_status(status: int) -> str:
    """A wait status as words: `killed by signal 11 (SIGSEGV)`, `exited with code 3`."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"killed by signal {number} ({signal_name(number)})"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


def crash_reason(status: int) -> str:
    """Why the entry that was running when the worker died has no result, one line."""
    what = describe_status(status)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASH_SIGNALS:
        return f"the interpreter crashed: {what} while running this entry"
    if os.WIFSIGNALED(status):
        hint = " (out of memory?)" if os.WTERMSIG(status) == signal.SIGKILL else ""
        return f"the process running this entry was {what}{hint}"
    return f"the process running this entry {what} before it finished the entry"


def timeout_reason(seconds: float) -> str:
    return (f"did not finish within {seconds:g} s (the runner's per-entry time limit, "
            f"--entry-timeout); the process running it was killed")


def check_timeout(value) -> float:
    """A per-entry time limit in seconds: a finite number > 0; ValueError otherwise."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (seconds > 0 and seconds != float("inf")):
        raise ValueError(f"Expected an entry time limit in seconds > 0. Received: {value!r}")
    return seconds


def run_isolated(count: int, run_one, failed, entry_timeout: float = DEFAULT_ENTRY_TIMEOUT,
                 fault_dumps: bool = False) -> list:
    """[run_one(0), ..., run_one(count - 1)], each run in a worker process.

    `run_one(i)` must return a picklable record and handle its own exceptions. When the worker
    dies while running entry i, or entry i runs longer than `entry_timeout` seconds, that
    entry's record is `failed(i, reason, seconds)` and a new worker runs the entries after it.
    The worker turns faulthandler off (pytest turns it on: a crash would dump the worker's
    Python stack, which the record's reason makes noise) unless `fault_dumps`.
    """
    records: list = [None] * count
    todo = list(range(count))
    while todo:
        current, since, status, timed_out, progress = None, time.monotonic(), None, False, False
        worker = _Worker(todo, run_one, fault_dumps)
        try:
            while True:
                message = worker.receive(since + entry_timeout)
                if message is _TIMEOUT:
                    timed_out = True
                    break
                if message is _EOF:
                    break
                if message[0] == "begin":
                    current = message[1]
                else:
                    records[message[1]] = message[2]
                    current, progress = None, True
                since = time.monotonic()
        finally:
            status = worker.stop()
        if current is not None:
            reason = timeout_reason(entry_timeout) if timed_out else crash_reason(status)
            records[current] = failed(current, reason, time.monotonic() - since)
        todo = [i for i in todo if records[i] is None]
        if todo and current is None and not progress:
            # Died (or stalled) between entries without finishing one: never loop on that.
            first = todo.pop(0)
            reason = (timeout_reason(entry_timeout) if timed_out else
                      f"the worker process {describe_status(status)} before it began this entry")
            records[first] = failed(first, reason, 0.0)
    return records


class _Worker:
    """One forked worker running `run_one` over `indices`, read from its pipe by the parent."""

    def __init__(self, indices: list, run_one, fault_dumps: bool = False):
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # buffered text would be written twice
            try:
                stream.flush()
            except Exception:  # a closed or odd stream: nothing to flush
                pass
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork() in a process with threads (numpy's BLAS pool, or
            # TensorFlow's in a test process); the worker touches none of their locks.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(read_fd)
            _worker_main(write_fd, indices, run_one, parent, fault_dumps)
        os.close(write_fd)
        self.pid, self.fd, self.buffer, self.status = pid, read_fd, b"", None

    def _frame(self):
        if len(self.buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self.buffer)
        if len(self.buffer) < _HEADER.size + size:
            return None
        payload = self.buffer[_HEADER.size:_HEADER.size + size]
        self.buffer = self.buffer[_HEADER.size + size:]
        return pickle.loads(payload)  # our own child's bytes

    def receive(self, deadline: float):
        """The next message, _EOF when the worker closed its end, _TIMEOUT at `deadline`."""
        while True:
            message = self._frame()
            if message is not None:
                return message
            left = deadline - time.monotonic()
            if left <= 0:
                return _TIMEOUT
            try:
                ready, _, _ = select.select([self.fd], [], [], left)
            except InterruptedError:  # pragma: no cover - retried by Python since 3.5
                continue
            if not ready:
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return _EOF
            self.buffer += chunk

    def stop(self) -> int:
        """Reap the worker (killed first, with its children, if it still runs); wait status."""
        try:
            if self.status is None:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done == 0:
                    for pid in [self.pid, *_descendants(self.pid)]:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
                    _, status = os.waitpid(self.pid, 0)
                self.status = status
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
        return self.status


def _descendants(pid: int) -> list:
    """The processes below `pid` (Linux /proc; elsewhere none are found)."""
    children: dict = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stream:
                stat = stream.read()
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, stack = [], [pid]
    while stack:
        kids = children.get(stack.pop(), [])
        found.extend(kids)
        stack.extend(kids)
    return found


def _send(fd: int, message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except Exception:  # best effort: no ctypes, or a libc without prctl
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(fd: int, indices: list, run_one, parent: int, fault_dumps: bool) -> None:
    code = 0
    try:
        for number in (signal.SIGINT, signal.SIGTERM):  # the parent's handlers are not ours
            signal.signal(number, signal.SIG_DFL)
        if not fault_dumps:
            faulthandler.disable()
        _die_with_parent(parent)
        for index in indices:
            _send(fd, ("begin", index))
            record = run_one(index)
            _send(fd, ("done", index, record))
    except BrokenPipeError:  # the parent is gone
        code = 1
    except BaseException:  # a bug in the worker itself: the parent names the exit code
        traceback.print_exc()
        code = 70
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
