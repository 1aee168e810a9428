"""Does the measured op table (`edgepipe check --target tflm`) agree with TFLite Micro itself?

For every `.tflite` given (files, or folders searched for them): the table's verdict, from each
operator's kernel type (converters/tflm_ops.py: it runs, it is refused, or it was not measured),
against what tflite-micro does with the file: the runner's own load (device_tests/tflm.py: a
forked probe loads and invokes it; a refusal names the op). A disagreement is a file the table
says runs that TFLM refuses, or one it says is refused that TFLM runs. An op the table has not
measured never disagrees: the runtime decides; the count of such files is reported beside.

    .venv/bin/python tools/tflm_agreement.py RUN_DIR/tflite [more paths] [--json OUT]

tests/test_tflm_agreement.py runs it on every variant of the zoo and of models built in tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgepipe.converters.tflite_file import read_tflite
from edgepipe.converters.tflm_ops import REFUSES, UNKNOWN, WRONG, tflm_verdict


def table_says(data: bytes, name: str) -> dict:
    """{"verdict": "runs" | "refuses" | "unknown", "refused": [...], "unknown": [...],
    "wrong": [...]}: the measured table's verdict on the model from every builtin op's (a
    refused op refuses it; else an unmeasured op leaves it to the runtime)."""
    model = read_tflite(data, name)
    said: dict = {REFUSES: [], UNKNOWN: [], WRONG: []}
    for sub in model.subgraphs:
        for op in sub.operators:
            ins, outs = ([t.dtype for t in sub.tensors_at(ids)] for ids in (op.inputs, op.outputs))
            verdict, why = tflm_verdict(op.name, ins, outs) if op.kind == "builtin" else (
                REFUSES, f"{op.kind} op")
            if verdict in said:
                said[verdict].append(f"{op.name}: {why}")
    verdict = REFUSES if said[REFUSES] else UNKNOWN if said[UNKNOWN] else "runs"
    return {"verdict": verdict, "refused": said[REFUSES], "unknown": said[UNKNOWN],
            "wrong": said[WRONG]}


def tflm_says(runtime, data: bytes) -> dict:
    """{"verdict": "runs" | "refuses" | "error", "why"}: what the runner's TFLite Micro load
    (a probe loads and invokes the model, then the smallest arena is searched) does."""
    from edgepipe.device_tests.interpreters import KernelMissing, ModelError

    try:
        arena, *_ = runtime.smallest_arena(data)
    except KernelMissing as exc:
        return {"verdict": REFUSES, "why": str(exc)}
    except ModelError as exc:
        return {"verdict": "error", "why": str(exc)}
    return {"verdict": "runs", "why": f"arena {arena} bytes"}


def compare(paths: list[Path]) -> list[dict]:
    """One row per `.tflite` file: both verdicts and whether they agree."""
    from edgepipe.device_tests.tflm import TflmRuntime, import_tflm

    runtime = TflmRuntime(*import_tflm())
    rows = []
    for path in paths:
        data = path.read_bytes()
        table, tflm = table_says(data, str(path)), tflm_says(runtime, data)
        runs = tflm["verdict"] == "runs"
        rows.append({"file": str(path), "table": table, "tflm": tflm,
                     "agree": table["verdict"] == UNKNOWN or runs == (table["verdict"] == "runs")})
    return rows


def summary(rows: list[dict]) -> dict:
    return {"variants": len(rows), "disagreements": sum(not r["agree"] for r in rows),
            "tflm_runs": sum(r["tflm"]["verdict"] == "runs" for r in rows),
            "tflm_refuses": sum(r["tflm"]["verdict"] != "runs" for r in rows),
            "with_unmeasured_ops": sum(bool(r["table"]["unknown"]) for r in rows)}


def tflite_files(paths) -> list[Path]:
    found = []
    for path in map(Path, paths):
        found += sorted(path.rglob("*.tflite")) if path.is_dir() else [path]
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help=".tflite files or folders holding them")
    parser.add_argument("--json", type=Path, help="write every row and the summary here")
    args = parser.parse_args(argv)
    rows = compare(tflite_files(args.paths))
    for r in rows:
        mark = "agree   " if r["agree"] else "DISAGREE"
        extra = f"; not measured: {'; '.join(r['table']['unknown'])}" if r["table"]["unknown"] \
            else ""
        print(f"{mark} {Path(r['file']).name}: table {r['table']['verdict']}, tflm "
              f"{r['tflm']['verdict']} ({r['tflm']['why'][:120]}){extra}")
    counts = summary(rows)
    print(json.dumps(counts))
    if args.json:
        args.json.write_text(json.dumps({"summary": counts, "rows": rows}, indent=1))
    return 1 if counts["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main())
