"""`edgepipe check PATH`: the op audit of a `.tflite` (no TensorFlow) or of a `.keras` model.

A `.tflite` is read and verified by the stdlib reader, then, where LiteRT (ai-edge-litert) is
installed, also loaded by it: the reader proves the structure, but only the runtime knows which
kernels exist and what their Prepare accepts, and `check` must never say "pass" for a file the
runtime refuses to load. The load runs in a child process: a malformed model can crash the
interpreter (SIGSEGV) or keep it busy, and that must end the child, not `check`; the child has a
time limit and may allocate 2 GiB for the model's tensors (a model that needs more is refused).
"""

import faulthandler
import hashlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import resource
import tempfile
import warnings
from pathlib import Path

from ..converters.modes import QuantMode
from ..converters.op_audit import OP_SETS, audit
from ..converters.tflite_file import mapped_file, read_tflite
from ..core.errors import unknown_name
from ..device_tests.isolation import signal_name
from ..device_tests.schema import ConversionStatus

# Creating the interpreter and allocating its tensors takes well under a second for edge models
# and seconds for a 2 GB one; a child still busy after this long is stuck.
LOAD_TIMEOUT = 60.0
REASON_CHARS = 300  # LiteRT joins every message of its error reporter into one exception
# The memory LiteRT may allocate for a model's tensors in check: edge models need megabytes.
ARENA_BYTES = 2 << 30


def parse_targets(target: str | None) -> tuple[str, ...]:
    """The op sets `check --target` names (all when None); the option predates the name."""
    if target is None:
        return OP_SETS
    if target not in OP_SETS:
        raise unknown_name("target", target, OP_SETS)
    return (target,)


def mode_from_filename(path: Path) -> QuantMode | None:
    """`mlp_swish.int8.tflite` -> int8: what `edgepipe convert` meant the file to be."""
    suffix = Path(path.stem).suffix.lstrip(".")
    return QuantMode(suffix) if suffix in {m.value for m in QuantMode} else None


def check_tflite(path: Path, op_sets: tuple[str, ...]) -> dict:
    # One open of the file for everything (a path is never opened twice, so it cannot be swapped
    # for a FIFO in between); memory-mapped: reading a 2 GB model does not copy it (LiteRT's
    # child does, as the parity runner does).
    with mapped_file(path) as data:
        model = read_tflite(data, str(path))
        sha256 = hashlib.sha256(data).hexdigest()
        # A custom or Flex op already fails the audit, and no stock LiteRT has its kernel:
        # loading would only add LiteRT's long "unresolved custom op" to the reason.
        custom = sorted({op.name for op in model.operators if op.kind != "builtin"})
        litert = load_in_litert(data) if not custom else _not_loaded(custom)
    mode = mode_from_filename(path)
    report = audit(model, mode, op_sets, source=str(path))
    problems = list(report.problems)
    if litert and litert["loads"] is False:
        problems.append(f"the structure is valid, but LiteRT refuses it (ai-edge-litert "
                        f"{litert['version']}): {litert['reason']}")
    return {"file": str(path), "bytes": model.size, "sha256": sha256,
            "mode": mode.value if mode else None,
            "status": ConversionStatus.FAILED if problems else ConversionStatus.CONVERTED,
            "reason": "; ".join(problems), "audit": report.as_dict(),
            "findings": [f.as_dict() for f in report.findings], "litert": litert}


def _not_loaded(custom: list) -> dict | None:
    if importlib.util.find_spec("ai_edge_litert") is None:
        return None
    return {"version": importlib.metadata.version("ai-edge-litert"), "loads": None,
            "reason": f"it has custom or Flex ops ({', '.join(custom)}), which stock LiteRT has "
                      "no kernels for"}


def load_in_litert(data, timeout: float = LOAD_TIMEOUT) -> dict | None:
    """Whether LiteRT loads these model bytes (creates the interpreter and allocates its
    tensors, as the parity runner does), asked in a forked child under a time limit:
    {"version", "loads", "reason"}, the reason one line. None when LiteRT is not installed."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        return None
    version = importlib.metadata.version("ai-edge-litert")
    context = multiprocessing.get_context("fork")  # the child shares the mapped bytes
    receive, send = context.Pipe(duplex=False)
    with tempfile.TemporaryFile() as log:
        child = context.Process(target=_load, args=(data, send, log.fileno()), daemon=True)
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork() in a process with threads (TensorFlow's, in a test
            # process); the child takes none of their locks.
            warnings.simplefilter("ignore", DeprecationWarning)
            child.start()
        send.close()
        answer = None
        try:
            if not receive.poll(timeout):
                child.kill()
                child.join()
                return {"version": version, "loads": False,
                        "reason": f"the interpreter did not finish loading it within {timeout:g} s "
                                  "(stopped)"}
            answer = receive.recv()
        except EOFError:  # it died without answering
            pass
        finally:
            receive.close()
        child.join()
        if answer is None:
            return {"version": version, "loads": False,
                    "reason": _death(child.exitcode) + _last_line(log)}
    loads, reason = answer
    return {"version": version, "loads": loads, "reason": reason}


def _load(data, send, log_fd: int) -> None:
    """The child: load the model and send (loads, one-line reason) back."""
    # LiteRT writes INFO lines and its errors on the C streams: keep them off the user's
    # terminal (a crash's last words are read back from this log).
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    faulthandler.disable()  # on (pytest turns it on) it dumps the stack of a crash on its own fd
    _limit_memory(len(data))
    try:
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_content=bytes(data)).allocate_tensors()
    except Exception as e:  # whatever the runtime raises is its refusal, said in one line
        text = " ".join(str(e).split()) or type(e).__name__
        if len(text) > REASON_CHARS:
            text = text[:REASON_CHARS - 1] + "…"
        send.send((False, text))
    else:
        send.send((True, ""))


def _limit_memory(model_bytes: int) -> None:
    """Cap the child's address space at what it uses now, plus the model twice (its copy and
    the packed weights) and ARENA_BYTES for its tensors. A corrupt shape asks for gigabytes:
    LiteRT then fails to allocate them at once, instead of zeroing them for many seconds and
    taking the machine's memory, and the verdict does not depend on how much RAM it has."""
    try:
        with open("/proc/self/statm") as f:  # Linux; elsewhere RLIMIT_AS is not enforced anyway
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return
    cap = used + 2 * model_bytes + ARENA_BYTES
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _death(exitcode: int) -> str:
    if exitcode < 0:
        return (f"the interpreter crashed while loading it (killed by signal {-exitcode}, "
                f"{signal_name(-exitcode)})")
    return f"the interpreter's process ended with exit code {exitcode} while loading it"


def _last_line(log) -> str:
    """": " + the last line the child printed (e.g. "std::bad_alloc"), or ""; LiteRT's INFO
    lines ("Created TensorFlow Lite XNNPACK delegate") say nothing about a crash."""
    log.seek(0)
    lines = [line.strip() for line in log.read()[-4096:].decode(errors="replace").splitlines()
             if line.strip() and not line.startswith("INFO: ")]
    return f": {lines[-1][:REASON_CHARS]}" if lines else ""


def check_keras(path: Path, modes: list[QuantMode], rep_data, rep_samples: int,
                debug: bool) -> list[dict]:
    """Convert in a scratch folder and return the conversion records (audit included)."""
    from .conversion import convert_files

    with tempfile.TemporaryDirectory(prefix="edgepipe-check-") as tmp:
        variants, _ = convert_files([path], modes, Path(tmp), rep_data, rep_samples, debug)
    return [v.record for v in variants]


def failed(record: dict, op_sets: tuple[str, ...], strict_target: bool) -> bool:
    """A check fails on a failed conversion or audit, on a finding (a float op inside a model
    meant to be fully integer: the file is not what its mode promises, though LiteRT runs it),
    and, when one op set was named (--target), on any op that op set cannot run."""
    if record["status"] == ConversionStatus.FAILED or record.get("findings"):
        return True
    audit_ = record.get("audit")
    return bool(strict_target and audit_ and any(
        audit_["targets"][t]["unsupported_ops"] for t in op_sets))
