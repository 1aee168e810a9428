"""`edgepipe check` against LiteRT: on mutated `.tflite` files, does check pass exactly the files
that the runtime loads?

The files are tests/test_fuzz.py's cases (the tiny bundle's six converted variants, mutated by
tests/mutations.py with a seeded RNG), under seeds of their own. Each is judged three ways:
- LiteRT, the oracle: `Interpreter(model_content=...)` and `allocate_tensors()`, as the parity
  runner loads an entry, in worker processes that a crash only ends (device_tests/isolation.py);
- the reader alone (`read_tflite_file`): the flatbuffers verifier's rules and the interpreter
  builder's checks, with no runtime;
- `check` itself (`check_tflite`, all the command does with a .tflite before printing): the
  reader, the op audit and, LiteRT being installed here, its own load in a child process.

The figures: how many files check passes that LiteRT refuses (target 0, asserted) and how many
check refuses that LiteRT loads (asserted 0 too: the LiteRT load in check is the same load),
and the same two for the reader alone. The reader alone passes files that only a kernel's
Prepare or the XNNPACK delegate refuses (a wrong input count, a zero point XNNPACK rejects, an op
version it lacks): that figure is printed, not asserted; check's own load covers them.
The slow test's figures are kept as test properties (junit), as tests/test_fuzz.py does.
"""

import collections
import importlib.util
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time

import pytest
from conftest import needs
from mutations import recursive_while
from test_fuzz import _case_file, _cases, _originals
from test_tflite_file import _built

from edgepipe.converters.op_audit import OP_SETS
from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.core.errors import EdgepipeError
from edgepipe.device_tests.isolation import run_isolated
from edgepipe.pipeline.check import ARENA_BYTES, check_tflite, load_in_litert

HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
LOAD_TIMEOUT = 20


def _litert_verdicts(data: list) -> list:
    """"loads", "refuses" or "crashes" for each model's bytes, each loaded in a worker with
    the memory check gives LiteRT for a model's tensors (a mutated shape can ask for TBs)."""
    from ai_edge_litert.interpreter import Interpreter

    def load(i):
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = used + 2 * len(data[i]) + ARENA_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
        quiet = os.open(os.devnull, os.O_WRONLY)  # LiteRT's INFO and error lines
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        try:
            Interpreter(model_content=data[i]).allocate_tensors()
        except Exception:
            return "refuses"
        return "loads"

    return run_isolated(len(data), load, lambda i, reason, seconds: "crashes",
                        entry_timeout=LOAD_TIMEOUT)


def _check_verdict(path) -> tuple[str, bool]:
    """(check's verdict: "pass" exit 0, "fail" exit 1, "refused" exit 2; whether check said
    the file loads: it passed the reader and LiteRT loaded it in check's child; a file with
    custom ops, which check does not load, is not said to load)."""
    try:
        record = check_tflite(path, OP_SETS)
    except EdgepipeError:
        return "refused", False
    verdict = "pass" if record["status"] == "converted" else "fail"
    return verdict, record["litert"]["loads"] is True


def _reader_verdict(path) -> bool:
    try:
        read_tflite_file(path)
    except EdgepipeError:
        return False
    return True


def _differential(tiny_bundle, tmp_path, seed: str, count: int) -> tuple[dict, list]:
    # check's LiteRT child is a fork of this process: importing LiteRT here once makes each of
    # those loads cost milliseconds instead of a fresh import (~0.3 s).
    importlib.import_module("ai_edge_litert.interpreter")
    started = time.monotonic()
    cases = _cases(_originals(tiny_bundle[0]), seed, count)
    paths = [_case_file(tmp_path, case) for case in cases]
    litert = _litert_verdicts([case[3] for case in cases])
    checks = [_check_verdict(path) for path in paths]
    reader = [_reader_verdict(path) for path in paths]
    worst = collections.defaultdict(list)  # disagreement -> the case files, to look at
    for path, oracle, (verdict, loads), valid in zip(paths, litert, checks, reader, strict=True):
        if verdict == "pass" and oracle != "loads":
            worst["check_passes_litert_refuses"].append(path.name)
        if not loads and oracle == "loads":
            worst["check_refuses_litert_loads"].append(path.name)
        if valid and oracle != "loads":
            worst["reader_passes_litert_refuses"].append(path.name)
        if not valid and oracle == "loads":
            worst["reader_refuses_litert_loads"].append(path.name)
    figures = {
        "cases": count,
        "litert": dict(collections.Counter(litert)),
        "check": dict(collections.Counter(verdict for verdict, _ in checks)),
        **{key: len(worst[key]) for key in (
            "check_passes_litert_refuses", "check_refuses_litert_loads",
            "reader_passes_litert_refuses", "reader_refuses_litert_loads")},
        "seconds": round(time.monotonic() - started, 1),
    }
    return figures, worst


def _assert_agreement(figures: dict, worst: dict) -> None:
    assert figures["litert"].get("loads", 0) > 0 and figures["litert"].get("refuses", 0) > 0, (
        "the mutations must give both verdicts, or the comparison shows nothing")
    for key in ("check_passes_litert_refuses", "check_refuses_litert_loads",
                "reader_refuses_litert_loads"):
        assert figures[key] == 0, (key, worst[key][:20])


def test_check_agrees_with_litert_on_50_mutated_files(tiny_bundle, tmp_path):
    needs(HAVE_LITERT, "ai-edge-litert is not installed: no runtime to compare check with")
    figures, worst = _differential(tiny_bundle, tmp_path, "check-vs-litert-50", 50)
    print(f"\ncheck vs LiteRT: {json.dumps(figures)}")
    _assert_agreement(figures, worst)


@pytest.mark.slow
def test_check_agrees_with_litert_on_1000_mutated_files(tiny_bundle, tmp_path, record_property):
    needs(HAVE_LITERT, "ai-edge-litert is not installed: no runtime to compare check with")
    figures, worst = _differential(tiny_bundle, tmp_path, "check-vs-litert-1000", 1000)
    print(f"\ncheck vs LiteRT: {json.dumps(figures)}")
    record_property("figures", json.dumps(figures))
    _assert_agreement(figures, worst)


# ---------------------------------------------------------------- check's own load in LiteRT


def _abs_chain(length: int) -> bytes:
    """A valid float32 model: `length` ABS ops one after the other, (1, 4) -> (1, 4)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    subgraph = schema.SubGraphT()
    subgraph.tensors = [schema.TensorT() for _ in range(length + 1)]
    for i, tensor in enumerate(subgraph.tensors):
        tensor.name, tensor.shape = f"t{i}", [1, 4]
    subgraph.operators = [schema.OperatorT() for _ in range(length)]
    for i, op in enumerate(subgraph.operators):
        op.opcodeIndex, op.inputs, op.outputs = 0, [i], [i + 1]
    subgraph.inputs, subgraph.outputs = [0], [length]
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [subgraph], [schema.BufferT()]
    model.operatorCodes = [schema.OperatorCodeT(deprecatedBuiltinCode=101, builtinCode=101)]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_the_load_is_stopped_at_its_time_limit():
    needs(HAVE_LITERT, "ai-edge-litert is not installed: no load to time")
    data = _abs_chain(2000)
    assert load_in_litert(data)["loads"]  # in ~20 ms
    started = time.monotonic()
    # A limit of 0 s: the parent looks once, microseconds after the fork, and kills the child
    # long before it can have built 2,000 nodes.
    answer = load_in_litert(data, timeout=0)
    assert time.monotonic() - started < 5
    assert answer["loads"] is False
    assert answer["reason"] == "the interpreter did not finish loading it within 0 s (stopped)"
    assert multiprocessing.active_children() == []  # killed and reaped


def test_a_crash_of_litert_is_a_failed_check(tmp_path):
    needs(HAVE_LITERT, "ai-edge-litert is not installed: nothing to crash")
    path = tmp_path / "recursive.float32.tflite"
    path.write_bytes(recursive_while())
    record = check_tflite(path, OP_SETS)
    assert record["status"] == "failed"
    assert record["reason"].startswith("the structure is valid, but LiteRT refuses it "
                                       "(ai-edge-litert ")
    assert record["reason"].endswith("): the interpreter crashed while loading it (killed by "
                                     "signal 11, SIGSEGV)")


def test_without_litert_check_reads_and_says_it_did_not_load(tiny_bundle):
    """ai_edge_litert made unimportable in a fresh interpreter: the condition itself."""
    path = tiny_bundle[0] / "tflite" / "mlp.float32.tflite"
    code = ("import json, sys\n"
            "sys.modules['ai_edge_litert'] = None  # find_spec() then says: not installed\n"
            "from typer.testing import CliRunner\n"
            "from edgepipe.pipeline.cli import app\n"
            f"shown = CliRunner().invoke(app, ['check', {str(path)!r}], env={{'COLUMNS': '200'}})\n"
            "assert shown.exit_code == 0, shown.output\n"
            "assert 'LiteRT load: not tried (ai-edge-litert is not installed)' in shown.stdout\n"
            f"as_json = CliRunner().invoke(app, ['check', {str(path)!r}, '--json'])\n"
            "assert json.loads(as_json.stdout)['litert'] is None, as_json.stdout\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_custom_op_fails_the_audit_and_is_not_loaded(tmp_path):
    """No stock LiteRT has a custom op's kernel: the audit's reason is the whole reason."""
    path = tmp_path / "custom.tflite"
    path.write_bytes(_built(lambda schema, model, w: setattr(
        model, "operatorCodes", [schema.OperatorCodeT(deprecatedBuiltinCode=32, builtinCode=32,
                                                      customCode="MyOp")])))
    record = check_tflite(path, OP_SETS)
    assert record["status"] == "failed"
    assert record["reason"] == ("op 0 (MyOp) in subgraph 0 is a custom op: no target has a kernel "
                                "for it unless you register one")
    if HAVE_LITERT:
        assert record["litert"]["loads"] is None
        assert record["litert"]["reason"] == ("it has custom or Flex ops (MyOp), which stock "
                                              "LiteRT has no kernels for")
