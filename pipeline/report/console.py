"""Rich tables for the terminal. Data in, tables out: no logic that decides pass or fail."""

from rich.markup import escape
from rich.table import Table

from ...device_tests.schema import ConversionStatus, ResultStatus
from .read import boards_of

STATUS_STYLE = {ConversionStatus.CONVERTED: "green", ConversionStatus.UNSUPPORTED: "yellow",
                ConversionStatus.FAILED: "red"}
RESULT_STYLE = {ResultStatus.PASS: "green", ResultStatus.FAIL: "red",
                ResultStatus.UNSUPPORTED: "yellow", ResultStatus.ERROR: "bold red"}


def trained_table(records: list[dict], out_dir) -> Table:
    table = Table(title=f"Trained models in {out_dir}")
    for col in ("model", "data", "epochs (best)", "test metric", "test loss", "seconds"):
        table.add_column(col)
    for r in records:
        test = r["metrics"]["test"]
        shown = (f"accuracy {test['accuracy']:.3f}" if "accuracy" in test
                 else f"R² {test['r2']:.3f}, MAE {test['mae']:.1f}")
        table.add_row(r["model"], r["dataset"]["name"],
                      f"{r['training']['epochs_run']} ({r['training']['best_epoch']})",
                      shown, f"{test['loss']:.3f}", f"{r['training']['seconds']:.1f}")
    return table


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def variants_table(records: list[dict], out_dir) -> Table:
    table = Table(title=f"Conversions in {out_dir}")
    for col in ("model", "mode", "status", "bytes", "ops", "reason"):
        table.add_column(col)
    for r in records:
        ops = sorted({op["op"] for op in r["audit"]["ops"]}) if "audit" in r else r.get("ops", [])
        table.add_row(r["model"], r["mode"], _status(r["status"]),
                      str(r.get("bytes", "-")), ", ".join(ops), r.get("reason", ""))
    return table


def ops_table(record: dict) -> Table:
    audit = record["audit"]
    targets = list(audit["targets"])
    title = record.get("file") or f"{record['model']}.{record['mode']}"
    table = Table(title=f"{title}: {len(audit['ops'])} ops, {audit['subgraphs']} subgraph(s)"
                        + (", fully integer" if audit["integer_only"] else ""))
    for col in ("#", "op", "kind", "input types", "output types", *targets):
        table.add_column(col)
    for op in audit["ops"]:
        cells = [f"[red]{op['targets'][t]}[/]" if op["targets"][t] is not None
                 else "[yellow]not measured[/]" if (op.get("unknown") or {}).get(t)
                 else "[green]ok[/]" for t in targets]
        table.add_row(str(op["index"]), op["op"], op["kind"], ", ".join(op["input_types"]),
                      ", ".join(op["output_types"]), *cells)
    return table


def _cell(r: dict) -> str:
    style = RESULT_STYLE.get(r["status"], "white")
    m = r.get("metrics") or {}
    bits = []
    if "max_abs_error" in m:
        bits.append(f"{m['max_abs_error']:.1e}")
    if m.get("steps") is not None:
        bits.append(f"{m['steps']:.0f}st")
    task = m.get("task") or {}
    if task.get("delta") is not None:
        bits.append(f"Δ{task['delta']:+.3f}")
    return f"[{style}]{r['status']}[/] " + " ".join(bits)


def parity_table(merged: dict) -> Table:
    targets = list(merged["targets"])
    table = Table(title="Parity vs Keras: max abs error, output steps (st), task-metric drop (Δ)")
    for col in ("model", "mode", *targets, "reason"):
        table.add_column(col)
    rows: dict = {}
    for r in merged["results"]:  # by id: a .tflite the user gave is a row beside its mode's
        rows.setdefault((r["model"], r["id"].removeprefix(f"{r['model']}-")), {})[
            r["target"]] = r
    for (model, mode), by_target in rows.items():
        # Why a check failed, first clause; unsupported cells say so themselves, and every
        # reason in full is in results.json and the report.
        where: dict = {}  # one reason, every target that gave it
        for t, r in by_target.items():
            if r.get("reason") and r["status"] in (ResultStatus.FAIL, ResultStatus.ERROR):
                where.setdefault(r["reason"].split(" (")[0], []).append(t)
        reasons = [f"{', '.join(ts)}: {why}" for why, ts in where.items()]
        table.add_row(model, mode, *[_cell(by_target[t]) if t in by_target else "-"
                                     for t in targets], "; ".join(reasons)[:120])
    s = merged["summary"]
    table.caption = (", ".join(f"{s[status]} {status}" for status in ResultStatus)
                     + (f", {s['missing']} missing" if s.get("missing") else "")
                     + (f", {s['failed_models']} model(s) not built (failed_models in "
                        "results.json)" if s.get("failed_models") else ""))
    for t in targets:  # a pool: which of its boards ran how many entries
        boards = ", ".join(f"{b} ({n})" for b, n in boards_of(merged["results"], t).items())
        if boards:
            table.caption += escape(f"; {t} ran on {boards}")
    return table


def _size(row: dict) -> str:
    if row["bytes"] is None:
        return "-"
    packed = row.get("compressed_bytes")
    return f"{row['bytes']:,}" + (f" (LUT {packed:,})" if packed is not None else "")


def deployable_table(block: dict) -> Table:
    """Per model and target, the smallest variant that passes (results.json `deployable`)."""
    table = Table(title="Deployable: the smallest passing variant per model and target")
    for col in ("model", "target", "variant", "bytes", "latency ms", "arena bytes", "repaired",
                "why none"):
        table.add_column(col)
    for r in block["rows"]:
        if r["id"] is None:
            table.add_row(r["model"], r["target"], "[red]none[/]", "-", "-", "-", "-",
                          escape(r["why"][:160]))
            continue
        table.add_row(r["model"], r["target"], f"[green]{escape(r['label'])}[/]",
                      _size(r),
                      f"{r['latency_ms']:.3g}" if r["latency_ms"] is not None else "-",
                      f"{r['arena_bytes']:,}" if r["arena_bytes"] is not None else "-",
                      "yes" if r["repaired"] else "no", "")
    short = [f"{c['model']} {c['mode']} on {c['target']}" for c in block["coverage"]
             if not c["ok"]]
    table.caption = ("every requested mode the targets support has a passing variant"
                     if block["ok"] else f"no passing variant: {', '.join(short[:6])}"
                     + (", ..." if len(short) > 6 else ""))
    return table
