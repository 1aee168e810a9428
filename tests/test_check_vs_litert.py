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
import os
import resource
import time

import pytest
from conftest import needs
from test_fuzz import _case_file, _cases, _originals

from edgepipe.converters.op_audit import TARGETS
from edgepipe.converters.tflite_file import read_tflite_file
from edgepipe.device_tests.isolation import run_isolated
from edgepipe.models.errors import EdgepipeError
from edgepipe.pipeline.check import check_tflite

HAVE_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
MEMORY_LIMIT = 4 << 30  # as tests/test_fuzz.py gives the runner: a mutated shape can ask for TBs
LOAD_TIMEOUT = 20


def _litert_verdicts(data: list) -> list:
    """"loads", "refuses" or "crashes" for each model's bytes, each loaded in a worker."""
    from ai_edge_litert.interpreter import Interpreter

    def load(i):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
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
    the file loads: it passed the reader and LiteRT did not refuse it in check's child)."""
    try:
        record = check_tflite(path, TARGETS)
    except EdgepipeError:
        return "refused", False
    verdict = "pass" if record["status"] == "converted" else "fail"
    return verdict, record["litert"]["loads"]


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
