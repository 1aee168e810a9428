"""What is deployable: per model and target, the smallest variant that passes, and whether every
requested mode the target supports has a passing variant (plain, given or repaired).

Read from the manifest's entries and the merged result records: the merge writes it into
results.json (`deployable`, docs/bundle.md), the console and the report show it, and it sets the
exit code of `run` and `parity` (`ok`; `strict_ok` with --strict).
"""

from ..device_tests.schema import ResultStatus

SHORT = 80  # characters of a reason shown in `why`: results.json has every reason in full


def label(entry: dict) -> str:
    """What the reports call a variant: its repair's label, a given file's or a batch-1
    export's tag, else its mode."""
    repair = entry.get("repair")
    if isinstance(repair, dict) and isinstance(repair.get("label"), str):
        return repair["label"]
    mode = entry.get("mode") or "?"
    if (entry.get("given") or entry.get("fixed_batch")) and isinstance(entry.get("id"), str):
        return entry["id"].removeprefix(f"{entry.get('model')}-")  # int8.mine, int8.batch1
    return mode


def repaired(entry: dict) -> bool:
    return isinstance(entry.get("repair"), dict)


def deployable(manifest: dict, results: list, targets) -> dict:
    """The `deployable` block of results.json from the manifest, every result record and the
    targets that ran (in their order)."""
    entries = [e for e in manifest.get("entries") or [] if isinstance(e, dict)]
    records = {(r.get("id"), r.get("target")): r for r in results if isinstance(r, dict)}
    models = list(dict.fromkeys(e.get("model") for e in entries))
    rows, coverage = [], []
    for model in models:
        mine = [e for e in entries if e.get("model") == model]
        plain = [e for e in mine if not repaired(e)]
        for target in targets:
            status = {e["id"]: _status(records, e, target) for e in mine}
            rows.append(_row(model, target, mine, plain, records, status))
            # Requested modes: those of the variants not made by a repair (converted or given).
            for mode in dict.fromkeys(e.get("mode") for e in plain):
                variants = [e for e in plain if e.get("mode") == mode]
                own = [e for e in variants if not e.get("given")] or variants
                passing = [e["id"] for e in mine if e.get("mode") == mode
                           and status[e["id"]] == ResultStatus.PASS]
                # A mode the target cannot run (a documented limit) is not held against it.
                refused = all(status[e["id"]] == ResultStatus.UNSUPPORTED for e in variants)
                coverage.append({"model": model, "target": target, "mode": mode,
                                 "plain": status[own[0]["id"]], "passing": passing,
                                 "ok": bool(passing) or refused})
    # A model that could not be built (its cluster worker died) has nothing to deploy.
    ok = all(c["ok"] for c in coverage) and not manifest.get("failed_models")
    clean = all(status_ok_strict(_status(records, e, t)) for e in entries if not repaired(e)
                for t in targets)
    return {"rows": rows, "coverage": coverage, "ok": ok, "strict_ok": ok and clean}


def status_ok_strict(status) -> bool:
    """A plain variant's result that --strict accepts: pass or unsupported (not fail, error or
    missing)."""
    return status in (ResultStatus.PASS, ResultStatus.UNSUPPORTED)


def _status(records: dict, entry: dict, target: str):
    """The entry's status on `target`; None when it has no result there (missing)."""
    return (records.get((entry["id"], target)) or {}).get("status")


def _row(model: str, target: str, mine: list, plain: list, records: dict,
         status: dict) -> dict:
    """The smallest passing variant of `model` on `target` (`status`: by entry id), or why
    there is none."""
    passing = [(i, e) for i, e in enumerate(mine) if status[e["id"]] == ResultStatus.PASS]
    row = {"model": model, "target": target, "id": None, "label": None, "mode": None,
           "bytes": None, "latency_ms": None, "arena_bytes": None, "arena_recorded_bytes": None,
           "compressed_bytes": None, "repaired": False, "why": ""}
    if not passing:
        row["why"] = "; ".join(_why(e, records.get((e["id"], target))) for e in plain)
        return row

    def size(pair):
        i, e = pair
        n = e.get("bytes")
        known = isinstance(n, int) and not isinstance(n, bool)
        return (not known, n if known else 0, repaired(e), i)  # a plain variant wins a tie

    _, best = min(passing, key=size)
    metrics = (records.get((best["id"], target)) or {}).get("metrics") or {}
    n = best.get("bytes")
    row.update(id=best["id"], label=label(best), mode=best.get("mode"),
               bytes=n if isinstance(n, int) and not isinstance(n, bool) else None,
               latency_ms=_number(metrics.get("latency_ms")),
               arena_bytes=_number(metrics.get("arena_bytes")),
               arena_recorded_bytes=_number(metrics.get("arena_recorded_bytes")),
               compressed_bytes=_compressed(metrics), repaired=repaired(best))
    return row


def _compressed(metrics: dict):
    """The flash size after TFLite Micro's compression tool, when it applied and the
    compressed model gave the same outputs (device_tests/tflm_compression.py)."""
    block = metrics.get("compressed")
    if isinstance(block, dict) and block.get("applies") and \
            block.get("max_abs_vs_uncompressed") == 0.0:
        return _number(block.get("bytes"))
    return None


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _why(entry: dict, record: dict | None) -> str:
    """`<label>: <status> (<first clause of the reason>)`."""
    if record is None:
        return f"{label(entry)}: missing (no result)"
    reason = str(record.get("reason") or "").split("; ")[0].split(" (")[0].strip()
    if len(reason) > SHORT:
        reason = reason[:SHORT - 1] + "…"
    return f"{label(entry)}: {record.get('status')}" + (f" ({reason})" if reason else "")
