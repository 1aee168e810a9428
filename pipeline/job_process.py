"""A cluster worker's job process: its model jobs run here, one at a time, in a Python of their own.

A Dask worker runs a task in a thread beside its event loop, and the event loop draws from
Python's global `random` (retry jitter, the choice of a peer). Keras seeds a new layer's
weights from that same generator, so a model trained in the worker's thread could start from
other weights than on this machine, now and then. In this process no other thread draws from
it, as in a local worker process: the same seed gives the same bytes. It also keeps a crash in
native code (a converter's segfault) from taking the worker down: the job's error names the
signal, and the next job starts a new process.

The worker and this process speak over its stdin and stdout: length-prefixed pickles of
(fn, job, custom-object files, unsafe, debug) one way and (ok, result or exception) back.
What the job prints goes to stderr, which is the worker's.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import subprocess
import sys

from ..core.errors import EdgepipeError, JobFailed

_HEADER = struct.Struct("!Q")
_process: subprocess.Popen | None = None  # this worker's job process, started on first use


def run_in_job_process(fn, job, files, unsafe: bool, debug: bool):
    """fn(job) in this worker's job process; its result, its exception raised here, or
    JobFailed when the process died under it."""
    global _process
    if _process is None or _process.poll() is not None:
        _process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE)
    try:
        _send(_process.stdin, (fn, job, tuple(files), unsafe, debug))
        answer = _receive(_process.stdout)
    except (BrokenPipeError, OSError):
        answer = None
    if answer is None:  # it died: say how, and start a new one for the next job
        process, _process = _process, None
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        return JobFailed(f"its job process on {socket.gethostname()} {death(code)}: a crash "
                         "in native code or the out-of-memory killer")
    ok, value = answer
    if ok:
        return value
    raise value


def death(code: int) -> str:
    """How a process ended, from its exit code: "was killed by SIGKILL (signal 9)"."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "a signal"
        return f"was killed by {name} (signal {-code})"
    return f"exited with status {code}"


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream):
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    try:
        return pickle.loads(data)
    except Exception as exc:  # an exception of a user's module the worker has not imported
        return False, EdgepipeError(f"the job failed with an error this worker cannot read "
                                    f"({type(exc).__name__}: {exc}); run it with --debug")


def _serve() -> None:
    from .workers import in_context, prepare

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when this ends
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what a job prints must not mix with the answers
    requests = sys.stdin.buffer
    while (message := _receive(requests)) is not None:
        fn, job, files, unsafe, debug = message
        try:
            prepare(debug, files, unsafe)
            answer = (True, in_context(fn, job))
        except BaseException as exc:  # noqa: BLE001 (the worker raises it)
            answer = (False, exc)
        try:
            _send(answers, answer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # an exception from a user's module the worker cannot import: its text
            _send(answers, (False, EdgepipeError(f"{answer[1]!r} ({exc})")))


if __name__ == "__main__":
    _serve()
