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

The worker's fd 2 (C's stderr, where a runtime writes before it aborts, not only Python's
sys.stderr) is a pipe to the parent, which passes it on to its own stderr (less the runtime's
"INFO: " notices) and keeps the last few KB written since the entry began. A worker that dies
leaves its last words there: the entry's reason quotes them, names the op when the runtime says
which failed, and, from faulthandler's dump of the worker's Python stack (kept out of the
user's stderr unless `fault_dumps`), says which step the runtime was in (allocate_tensors:
preparing the ops; invoke).
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import re
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
TAIL_BYTES = 4096  # of the worker's stderr kept per entry: its last words, not a log
_FAULT = b"Fatal Python error: "  # faulthandler's first line; its dump follows
_INFO = b"INFO: "  # TFLite's notices (the XNNPACK delegate's creation): never shown
# Written by the worker on fd 2 as each entry begins: what follows in that stream is the entry's
# (its "begin" message comes on another pipe, which the parent may read before or after).
_BEGIN = b"\x1eedgepipe-entry\x1e\n"
_FRAME = re.compile(r'File "([^"]*)", line \d+ in (\S+)')
# The runtime's Python call that was in native code when it died (faulthandler's innermost
# frame): what the runtime was doing.
_DOING = {"allocate_tensors": "the runtime was preparing the model's ops",
          "invoke": "the runtime was running the model",
          "resize_tensor_input": "the runtime was resizing the model's input"}
_LOADING = ("interpreter.py", "runtime.py")  # LiteRT's and TFLite Micro's Interpreter modules
# Where the runtime names the op that failed: TFLite ("Node number 12 (SOFTMAX) failed to
# prepare.") and TFLite Micro ("Node SOFTMAX (number 12f) failed to prepare with status 1"),
# else a kernel source file in an assertion ("tensorflow/lite/kernels/softmax.cc:123 ...").
_NODE_SAID = (re.compile(r"Node number (\d+) \(([A-Z0-9_]+)\) failed to (prepare|invoke)"),
              re.compile(r"Node ([A-Z0-9_]+) \(number (\d+)f?\) failed to (prepare|invoke)"))
_KERNEL_FILE = re.compile(r"kernels/(?:[\w.-]+/)*(\w+\.(?:cc|h)):\d+")
_SAID_LINES = 3
_SAID_CHARS = 300
_captured = False  # True in a worker: its fd 2 goes to the parent


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


def stderr_captured() -> bool:
    """True in a worker, whose fd 2 goes to the parent: the runtime's writes must stay on it
    (interpreters.without_native_info then leaves it alone; the parent drops the INFO lines)."""
    return _captured


def failing_op(text: str) -> str | None:
    """The op the runtime says failed, from what it printed, or None."""
    found = _NODE_SAID[0].search(text)
    if found:
        return f"{found.group(2)} (node {found.group(1)}) failed to {found.group(3)}"
    found = _NODE_SAID[1].search(text)
    if found:
        return f"{found.group(1)} (node {found.group(2)}) failed to {found.group(3)}"
    found = _KERNEL_FILE.search(text)
    return f"the runtime names kernels/{found.group(1)}" if found else None


def last_words(text: str, nothing: str = "") -> str:
    """What a dead runtime printed, as a suffix for a one-line reason: the op it names, then
    its last few lines quoted; `nothing` when it printed nothing."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(_INFO.decode())]
    if not lines:
        return nothing
    op = failing_op(text)
    quoted = " | ".join(lines[-_SAID_LINES:])
    if len(quoted) > _SAID_CHARS:
        quoted = "..." + quoted[-_SAID_CHARS:]
    return (f"; {op}" if op else "") + f'; it printed on stderr: "{quoted}"'


def _doing(dump: str) -> str:
    """What the runtime was doing, from faulthandler's dump of the dead worker's stack."""
    found = _FRAME.search(dump)
    if not found:
        return ""
    path, function = found.groups()
    what = _DOING.get(function)
    if what is None and function == "__init__" and os.path.basename(path) in _LOADING:
        what = "the runtime was loading the model"
    return f" (in {function}: {what})" if what else ""


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
    entry's record is `failed(i, reason, seconds)` and a new worker runs the entries after it;
    the reason carries what the worker printed on stderr during that entry (its last lines, the
    op the runtime names) and the runtime's step it died in. The worker's faulthandler dump of
    its Python stack, which gives that step, reaches the user's stderr only with `fault_dumps`.
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
            reason = timeout_reason(entry_timeout) if timed_out else (
                crash_reason(status) + worker.said())
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
        err_read, err_write = os.pipe()
        parent = os.getpid()
        pid = fork_flushed()
        if pid == 0:  # the worker: never returns
            os.close(read_fd)
            os.close(err_read)
            os.dup2(err_write, 2)
            os.close(err_write)
            _worker_main(write_fd, indices, run_one, parent)
        os.close(write_fd)
        os.close(err_write)
        self.pid, self.fd, self.buffer, self.status = pid, read_fd, b"", None
        self.err, self.partial, self.faulted = err_read, b"", False
        self.fault_dumps = fault_dumps
        self.tail, self.dump = bytearray(), bytearray()  # this entry's last words; the dump

    def _line(self, line: bytes) -> None:
        """One line the worker wrote on fd 2: passed on, and kept in the tail or the dump."""
        if line.endswith(_BEGIN):
            if len(line) > len(_BEGIN):  # the end of a line the worker left unfinished
                self._line(line[:-len(_BEGIN)])
            self.tail.clear()
            return
        if not self.faulted and line.startswith(_FAULT):
            self.faulted = True  # the worker is dying: the rest is faulthandler's dump
        if self.faulted:
            if len(self.dump) < TAIL_BYTES:
                self.dump += line
            if self.fault_dumps:
                _write_stderr(line)
            return
        if line.startswith(_INFO):
            return
        _write_stderr(line)
        self.tail += line
        del self.tail[:-TAIL_BYTES]

    def _take(self, chunk: bytes) -> None:
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            self._line(line + b"\n")
        if len(self.partial) > 16 * TAIL_BYTES:  # no newline for long: pass it on anyway
            self._line(self.partial)
            self.partial = b""

    def _read_stderr(self) -> None:
        chunk = os.read(self.err, 1 << 16)
        if chunk:
            self._take(chunk)
        else:  # every writer is gone
            self._close_stderr()

    def _drain(self) -> None:
        """Read what the worker has already written on fd 2, without waiting for more."""
        while self.err is not None and select.select([self.err], [], [], 0)[0]:
            self._read_stderr()

    def _close_stderr(self) -> None:
        if self.err is not None:
            os.close(self.err)
            self.err = None
        if self.partial:
            self._line(self.partial)
            self.partial = b""

    def said(self) -> str:
        """The reason's suffix for the entry that was running when the worker died."""
        dump = self.dump.decode("utf-8", errors="replace")
        return _doing(dump) + last_words(self.tail.decode("utf-8", errors="replace"))

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
            watched = [self.fd] if self.err is None else [self.fd, self.err]
            try:
                ready, _, _ = select.select(watched, [], [], left)
            except InterruptedError:  # pragma: no cover - retried by Python since 3.5
                continue
            if self.err in ready:
                self._read_stderr()
            if self.fd not in ready:
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
            if self.err is not None:  # the worker is gone: all it wrote is in the pipe
                self._drain()
                self._close_stderr()
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


def _write_stderr(data: bytes) -> None:
    """Pass the worker's bytes on to this process's fd 2, where the worker wrote before."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(2, view):]
    except OSError:  # no stderr any more: the tail is still kept
        pass


def _send(fd: int, message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def flush_streams() -> None:
    """Flush sys.stdout and sys.stderr: before a fork (their buffered text would be written
    twice) and before a child's os._exit (which flushes nothing)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or odd stream: nothing to flush
            pass


def fork_flushed() -> int:
    """os.fork(), stdout and stderr flushed first. Python 3.12+ warns on fork() in a process
    with threads (numpy's BLAS pool, or TensorFlow's in a test process); the children here
    touch none of their locks, so it is silenced."""
    flush_streams()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except Exception:  # best effort: no ctypes, or a libc without prctl
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(fd: int, indices: list, run_one, parent: int) -> None:
    global _captured
    code = 0
    try:
        _captured = True
        for number in (signal.SIGINT, signal.SIGTERM):  # the parent's handlers are not ours
            signal.signal(number, signal.SIG_DFL)
        # On fd 2 (the pipe), whatever sys.stderr is here (pytest replaces it): the parent
        # reads the runtime's step from it and shows it only when asked (fault_dumps).
        faulthandler.enable(open(2, "w", closefd=False), all_threads=False)
        die_with_parent(parent)
        for index in indices:
            os.write(2, _BEGIN)
            _send(fd, ("begin", index))
            record = run_one(index)
            _send(fd, ("done", index, record))
    except BrokenPipeError:  # the parent is gone
        code = 1
    except BaseException:  # a bug in the worker itself: the parent names the exit code
        traceback.print_exc()
        code = 70
    finally:
        flush_streams()
        os._exit(code)
