"""Budget gates: per target, the most model bytes, tensor-arena bytes and latency a variant may
use. A variant over budget fails, with the figure and the budget in its checks and reason.

    [budgets.tflm]
    max_model_bytes = 100_000     # the .tflite file (ethos-u: Vela's flash use)
    max_arena_bytes = 65_536      # tflm: the smallest arena that ran; ethos-u: Vela's SRAM use
    max_latency_ms = 5.0          # median single-sample invoke (ethos-u: Vela's estimate)
"""

from ..core.errors import EdgepipeError
from ..device_tests.schema import ResultStatus
from .values import check_table, number

# [budgets.<target>] key -> what it must be (a budget of inf or nan would pass or fail all)
BUDGET_RULES = {"max_model_bytes": number(1, whole=True), "max_arena_bytes": number(1, whole=True),
                "max_latency_ms": number(0, above=True)}
BUDGET_KEYS = tuple(BUDGET_RULES)
# Only these targets measure an arena.
ARENA_TARGETS = ("tflm", "ethos-u")


def check_budget(target: str, budget: dict, where: str) -> None:
    """Validate one [budgets.<target>] table (keys checked by the config loader)."""
    check_table(BUDGET_RULES, budget, where)
    if "max_arena_bytes" in budget and target not in ARENA_TARGETS:
        raise EdgepipeError(f"max_arena_bytes in {where}: target {target} has no tensor arena "
                            f"to measure; set it for {' or '.join(ARENA_TARGETS)}.")


def _figures(record: dict, entry: dict) -> dict:
    metrics = record.get("metrics") or {}
    npu = metrics.get("npu")
    if npu:
        return {"max_model_bytes": npu.get("flash_bytes"), "max_arena_bytes": npu.get("sram_bytes"),
                "max_latency_ms": npu.get("inference_ms")}
    return {"max_model_bytes": entry.get("bytes"), "max_arena_bytes": metrics.get("arena_bytes"),
            "max_latency_ms": metrics.get("latency_ms")}


def apply_budgets(document: dict, manifest: dict, budget: dict) -> int:
    """Add a check per budget to every record that ran; fail the records over budget.
    Returns how many records went over."""
    if not budget:
        return 0
    entries = {e["id"]: e for e in manifest.get("entries", [])}
    over = 0
    for record in document.get("results", []):
        if record.get("status") not in (ResultStatus.PASS, ResultStatus.FAIL):  # did not run
            continue
        figures = _figures(record, entries.get(record.get("id"), {}))
        failed = []
        for key in BUDGET_KEYS:
            if key not in budget:
                continue
            value = figures[key]
            ok = value is not None and value <= budget[key]
            record.setdefault("checks", []).append(
                {"name": f"budget {key}", "value": value, "bound": budget[key], "ok": ok})
            if not ok:
                name = key.removeprefix("max_")
                failed.append(f"{name} not measured (budget {budget[key]:,.6g})" if value is None
                              else f"{name} {value:,.6g} > budget {budget[key]:,.6g}")
        if failed:
            over += 1
            record["status"] = ResultStatus.FAIL
            record["reason"] = "; ".join(filter(None, [record.get("reason"),
                                                       "over budget: " + ", ".join(failed)]))
    return over
