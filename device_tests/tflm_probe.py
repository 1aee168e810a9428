"""Load a model in TFLite Micro with one arena size and invoke it once on zeros.

    python tflm_probe.py MODEL.tflite ARENA_BYTES [--allocations]
    python tflm_probe.py --serve

A script (numpy, tflite-micro and isolation.py beside it; no package imports) that
device_tests/tflm.py runs: a too-small arena can kill TFLM's process with SIGSEGV instead of
raising, and TFLM prints why it refuses a model on C's stderr, not in the exception. So every
probe runs in a process of its own. Exit 0 when the model ran; `--allocations` prints TFLM's
allocation summary on stderr. Before each step it prints `stage: <what it does>` on stdout: a
probe that a signal kills prints nothing else when the kernel's check is a bare abort(), and
tflm.py then says in which step.

`--serve` is how tflm.py runs its probes: a new Python per probe paid ~0.3 s of start-up and
imports (numpy, tflite-micro) for a few milliseconds of TFLM work. The server imports them
once and forks one child per probe, which is the process of a probe above (its own stdout and
stderr, its exit status; a crash kills only it). On stdin, one request a line, JSON:
    {"bytes": N}                                   the next N bytes are the model to probe
    {"arena": BYTES, "allocations": BOOL, "timeout": SECONDS}
and, for each probe, one answer a line on stdout:
    {"returncode": R, "stdout": "...", "stderr": "...", "timed_out": BOOL}
R as subprocess gives it (-N: killed by signal N). A child still running after `timeout`
seconds is killed (SIGKILL; timed_out true). The server ends at the end of its stdin, and
(Linux) when the process that started it dies.
"""

import json
import os
import select
import signal
import sys
import tempfile
import traceback

import numpy as np

# isolation.py is beside this script: a script's folder is first on sys.path.
from isolation import die_with_parent, flush_streams


def stage(what: str) -> None:
    print(f"stage: {what}", flush=True)


def probe(runtime, data: bytes, arena: int, allocations: bool) -> int:
    stage("loading the model and preparing its ops")
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=arena)
    stage("setting the inputs")
    index = 0
    while True:
        try:
            details = interpreter.get_input_details(index)
        except (IndexError, RuntimeError):  # past the last input
            break
        shape = [max(1, int(d)) for d in details["shape"]]
        interpreter.set_input(np.zeros(shape, dtype=details["dtype"]), index)
        index += 1
    stage("invoking the model")
    interpreter.invoke()
    stage("done")
    if allocations:
        interpreter.print_allocations()
    return 0


def main(argv) -> int:
    if argv[:1] == ["--serve"]:
        return serve()
    from tflite_micro.python.tflite_micro import runtime

    with open(argv[0], "rb") as stream:
        data = stream.read()
    return probe(runtime, data, int(argv[1]), "--allocations" in argv)


def _flush_c_stdio() -> None:
    """What a process's normal exit does for C's buffered streams; os._exit does not."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # best effort
        pass


def _count_once(runtime, count, data: bytes) -> None:
    """Count the model's resource variables here, once, for all its probes: Interpreter()
    counts them (`count`, tflite-micro's count_resource_variables) by unpacking the whole
    flatbuffer in Python, which took most of a probe's time (~12 ms on the zoo's small
    models, more on large ones). The count is the same."""
    if count is None:  # another tflite-micro: leave it as it is
        return
    runtime.count_resource_variables = count
    try:
        counted = count(data)
    except Exception:  # a malformed model: each probe's Interpreter() raises it, as before
        return
    runtime.count_resource_variables = (
        lambda model: counted if model is data else count(model))


def _read_exactly(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"expected {size} bytes of model, got {len(data)}")
    return data


def serve() -> int:
    from tflite_micro.python.tflite_micro import runtime  # once: every child inherits it

    die_with_parent(os.getppid())
    requests = sys.stdin.buffer
    answers = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing but an answer may reach the client's pipe
    os.close(devnull)
    # The children's stdout and stderr: unnamed files (a pipe could fill up and block a child).
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    count = getattr(runtime, "count_resource_variables", None)
    data = b""
    while True:
        line = requests.readline()
        if not line:
            return 0
        request = json.loads(line)
        if "bytes" in request:
            data = _read_exactly(requests, int(request["bytes"]))
            _count_once(runtime, count, data)
            continue
        answer = _fork_probe(runtime, data, request, out.fileno(), err.fileno(), answers)
        payload = (json.dumps(answer) + "\n").encode()
        while payload:
            payload = payload[os.write(answers, payload):]


def _take(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _fork_probe(runtime, data: bytes, request: dict, out: int, err: int, answers: int) -> dict:
    """One probe in a forked child: its exit status, stdout and stderr; killed at the timeout."""
    done_read, done_write = os.pipe()  # the child holds the write end: EOF when it ends
    server = os.getpid()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the probe: never returns
        code = 1
        try:
            os.close(done_read)
            os.close(answers)
            with open(os.devnull, "rb") as nothing:
                os.dup2(nothing.fileno(), 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            die_with_parent(server)
            code = probe(runtime, data, int(request["arena"]), bool(request.get("allocations")))
        except BaseException:  # as Python reports an uncaught exception: traceback, exit 1
            traceback.print_exc()
        finally:
            flush_streams()
            _flush_c_stdio()
            os._exit(code)
    os.close(done_write)
    timed_out = False
    try:
        if not select.select([done_read], [], [], float(request["timeout"]))[0]:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(done_read)
        _, status = os.waitpid(pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(status), "stdout": _take(out),
            "stderr": _take(err), "timed_out": timed_out}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
