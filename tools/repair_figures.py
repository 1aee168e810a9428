"""The figures of issue 15's Show, from one run folder: per target, the models with a passing
integer variant with plain variants only and with repairs; what each repair costs in bytes and
latency against its plain variant; and the per-layer comparison of chosen entries.

    .venv/bin/python tools/repair_figures.py RUN_DIR [--layers mlp_step-int8 cnn_step-int8]
        [--target host-ref]

Prints Markdown. Reads manifest.json and results.json only (no TensorFlow).
"""

import argparse
import json
import sys
from pathlib import Path

from edgepipe.device_tests.schema import ResultStatus, RunFolder

INTEGER = ("int8", "int16x8")


def _load(run: Path) -> tuple[dict, list]:
    folder = RunFolder(run)
    return (json.loads(folder.manifest.read_text()),
            json.loads(folder.results.read_text())["results"])


def deployable_counts(manifest: dict, results: list) -> list[str]:
    entries = {e["id"]: e for e in manifest["entries"]}
    targets = list(dict.fromkeys(r["target"] for r in results))
    models = list(manifest["models"])
    lines = ["| target | models | with a passing plain integer variant | with repairs too |",
             "|---|---|---|---|"]
    for target in targets:
        passing = [(entries[r["id"]], r) for r in results if r["target"] == target
                   and r["status"] == ResultStatus.PASS
                   and entries.get(r["id"], {}).get("mode") in INTEGER]
        plain = {e["model"] for e, _ in passing if not e.get("repair")}
        repaired = {e["model"] for e, _ in passing}
        lines.append(f"| {target} | {len(models)} | {len(plain)} | {len(repaired)} |")
    return lines


def repair_costs(manifest: dict, results: list) -> list[str]:
    entries = {e["id"]: e for e in manifest["entries"]}
    by = {(r["id"], r["target"]): r for r in results}
    targets = list(dict.fromkeys(r["target"] for r in results))
    lines = ["| repaired variant | of | bytes (plain) | tries | " + " | ".join(
        f"{t} status, latency ms (plain)" for t in targets) + " |",
             "|---|---|---|---|" + "---|" * len(targets)]
    for e in entries.values():
        repair = e.get("repair")
        if not repair:
            continue
        plain = entries.get(repair["of"], {})
        cells = []
        for t in targets:
            mine, theirs = by.get((e["id"], t), {}), by.get((repair["of"], t), {})
            lat = (mine.get("metrics") or {}).get("latency_ms")
            lat0 = (theirs.get("metrics") or {}).get("latency_ms")
            cells.append(f"{mine.get('status', '-')}, {_f(lat)} ({theirs.get('status', '-')}, "
                         f"{_f(lat0)})")
        lines.append(f"| `{repair['label']}` | {repair['of']} | {e.get('bytes')} "
                     f"({plain.get('bytes')}) | {len(repair.get('tries', []))} | "
                     + " | ".join(cells) + " |")
    for r in manifest.get("repairs", []):
        if not r["ok"]:
            lines.append(f"| not repaired | {r['of']} | | {len(r['tries'])} | {r['why'][:160]}"
                         + " |" * len(targets))
    return lines


def layer_table(results: list, entry_id: str, target: str) -> list[str]:
    record = next((r for r in results if r["id"] == entry_id and r["target"] == target), None)
    if record is None or not record.get("layers"):
        return [f"{entry_id} on {target}: no per-layer data"]
    layers = record["layers"]
    if "rows" not in layers:
        return [f"{entry_id} on {target}: {layers}"]
    lines = [f"**{entry_id} on {target}** ({layers['samples']} samples, {layers['kernels']}): "
             f"{layers['text']}", "",
             "| layer | op | max abs | rel | SQNR dB | steps | simulated | bound | bound steps "
             "| ok |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in layers["rows"]:
        lines.append("| " + " | ".join(_f(row.get(k)) for k in (
            "layer", "op", "max_abs", "rel", "sqnr_db", "steps", "simulated", "bound",
            "bound_steps", "ok")) + " |")
    return lines


def _f(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--layers", nargs="*", default=["mlp_step-int8", "cnn_step-int8"])
    parser.add_argument("--target", default="host-ref")
    args = parser.parse_args(argv)
    manifest, results = _load(args.run)
    out = ["## Models with a passing integer variant", *deployable_counts(manifest, results),
           "", "## Repairs: cost against the plain variant", *repair_costs(manifest, results)]
    for entry_id in args.layers:
        out += ["", *layer_table(results, entry_id, args.target)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
