"""report.html's page: the verdict and the targets, the parity matrix, host vs host-ref, then
one section per entry (entries.py)."""

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from ...converters.modes import QuantMode
from ...device_tests.schema import ConversionStatus, ResultStatus, count_statuses
from ..deployable import deployable
from .compare import differences, outputs_not_finite, where_not_finite
from .entries import sections
from .html import CSS, MISSING, anchor, badge, e
from .layer_plots import section as layer_section
from .plots import Painter
from .read import ReportEntry, Run, boards_of
from .text import fmt

INT_MODES = {m.value for m in QuantMode if m.integer_only}


def render(run: Run, workers: int = 1) -> str:
    """The page; the plots its cache lacks are drawn last, in `workers` processes."""
    title = f"edgepipe report: {run.run_dir.name}"
    painter = Painter(workers)
    shown = sections(run, painter)
    body = [_header(run), _matrix(run), _host_vs_ref(run), layer_section(run, painter),
            '<h2>Variants</h2><p class="small">Failing variants are open; click a title to open '
            "or close it.</p>", *(shown[v.id] for v in run.entries)]
    return painter.finish("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                          f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n"
                          + "\n".join(body) + "\n</body></html>\n")


def _counts(records: list[dict]) -> dict[str, int]:
    """{status: how many}, an unknown status counted as an error."""
    counts = count_statuses(records)
    counts[ResultStatus.ERROR] += len(records) - sum(counts.values())
    return counts


def _task_delta(task: dict | None) -> str | None:
    if not task or task.get("delta") is None:
        return None
    if task.get("metric") == "accuracy":
        return f"Δacc {task['delta'] * 100:.1f} pt"
    name = {"r2": "R²"}.get(task.get("metric"), task.get("metric") or "task")
    return f"Δ{name} {fmt(task['delta'])}"


def _header(run: Run) -> str:
    records = run.results.get("results") or []
    counts = _counts(records)
    # Models whose job died on a cluster worker: no entries, and the run cannot pass.
    unbuilt = run.manifest.get("failed_models") or {}
    no_failure = (counts[ResultStatus.FAIL] == 0 and counts[ResultStatus.ERROR] == 0
                  and not unbuilt)
    # Every manifest entry is expected on every target that ran (as pass, fail, unsupported or
    # error); a missing record is a check that did not run, so the page cannot say "all passed".
    missing = [f"{v.id} on {t}" for v in run.entries if v.entry for t in run.targets
               if t not in v.records]
    ok = bool(records) and no_failure and not missing
    # A failing plain variant with a repaired one passing in its place is deployable (the
    # exit code's rule): said so, with what failed, never as a plain pass.
    block = deployable(run.manifest, records, run.targets)
    repaired = not ok and not missing and bool(records) and block["ok"]
    verdict = ("PASS — all expected checks passed" if ok else
               "NO RESULTS" if not records else
               f"DEPLOYABLE — {counts[ResultStatus.FAIL]} failed, {counts[ResultStatus.ERROR]} "
               "errors, and a variant that passes stands in for each (see Deployable)"
               if repaired else
               f"FAIL — {counts[ResultStatus.FAIL]} failed, {counts[ResultStatus.ERROR]} errors"
               + (f", {len(unbuilt)} model(s) not built" if unbuilt else "")
               if not no_failure else
               f"INCOMPLETE — no check failed, but {len(missing)} expected result(s) are missing")
    ok = ok or repaired
    chips = " ".join(f'{badge(s)} {counts[s]}' for s in ResultStatus)
    out = ['<h1>edgepipe run report</h1>',
           f'<div class="verdict {"ok" if ok else "bad"}" id="verdict">{e(verdict)}</div>',
           f'<p>{chips}</p>', _deployable(block)]

    folder = run.folder
    warnings = list(run.warnings)
    summary = run.results.get("summary") or {}
    if any(s in summary and summary[s] != counts[s] for s in ResultStatus) or (
            "ok" in summary and bool(summary["ok"]) != no_failure):
        warnings.append(f"{folder.results.name} summary {json.dumps(summary)} disagrees with its "
                        f"records ({json.dumps(counts)}, ok={no_failure}).")
    sha = hashlib.sha256(folder.manifest.read_bytes()).hexdigest()
    ran = run.results.get("manifest_sha256")
    if ran and ran != sha:
        warnings.append(f"{folder.results.name} was produced from another manifest (sha256 "
                        f"{ran[:12]}…, this {folder.manifest.name} is {sha[:12]}…).")
    if missing:
        warnings.append(f"{len(missing)} expected result(s) missing: " + ", ".join(missing[:8])
                        + (", …" if len(missing) > 8 else ""))
    not_finite = [f"{v.id} ({', '.join(where)})" for v in run.entries
                  for where in [where_not_finite(run, v)] if where]
    if not_finite:
        warnings.append(f"{len(not_finite)} variant(s) have NaN or infinite values in their "
                        "outputs (saved, or the Keras reference's); their plots and recomputed "
                        "errors use the finite values only: "
                        + ", ".join(not_finite[:8]) + (", …" if len(not_finite) > 8 else ""))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    written = datetime.fromtimestamp(folder.results.stat().st_mtime,
                                     timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    m = run.manifest
    out.append(f'<p class="meta">Results written {e(written)} · report generated {e(now)} · '
               f'run folder <code>{e(run.run_dir)}</code><br>'
               f'{e(m.get("created_by", "?"))} · manifest schema {e(m.get("schema_version"))} · '
               f'seed {e(m.get("seed"))} · manifest sha256 <code>{e(sha[:16])}…</code>'
               f'{" (matches the results)" if ran == sha else ""}</p>')
    versions = m.get("versions") or {}
    if versions:
        out.append('<p class="meta">Versions: ' + " · ".join(
            f"{e(k)} <b>{e(v)}</b>" for k, v in versions.items()) + "</p>")
    warnings += [f"{name} was not built: {why}" for name, why in unbuilt.items()]
    for w in warnings:
        out.append(f'<p class="warn">⚠ {e(w)}</p>')

    out.append('<h3>Targets</h3><table><thead><tr><th>target</th><th>runtime</th>'
               '<th>version</th><th>kernels</th><th>machine</th><th>system</th><th>python</th>'
               '<th>numpy</th><th>seconds</th>'
               + "".join(f"<th>{e(s)}</th>" for s in ResultStatus) + "</tr></thead><tbody>")
    for t in run.targets:
        info = (run.results.get("targets") or {}).get(t) or {}
        rt, pf = info.get("runtime") or {}, info.get("platform") or {}
        c = _counts([r for r in records if r.get("target") == t])
        boards = ", ".join(f"{b} ({n})" for b, n in boards_of(records, t).items())
        listed = f'<br><span class="small">boards: {e(boards)}</span>' if boards else ""
        out.append(f"<tr><td><b>{e(t)}</b>{listed}</td><td>{e(rt.get('name', '–'))}</td>"
                   f"<td>{e(rt.get('version', '–'))}</td><td>{e(rt.get('kernels', '–'))}</td>"
                   f"<td>{e(pf.get('machine', '–'))}</td><td>{e(pf.get('system', '–'))}</td>"
                   f"<td>{e(pf.get('python', '–'))}</td><td>{e(pf.get('numpy', '–'))}</td>"
                   f'<td class="num">{e(fmt(info.get("seconds")))}</td>'
                   + "".join(f'<td class="num">{c[s]}</td>' for s in ResultStatus) + "</tr>")
    if not run.targets:
        out.append(f'<tr><td colspan="{9 + len(ResultStatus)}">no target ran</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _deployable(block: dict) -> str:
    """Per model and target, the smallest variant that passes: the answer a user wants first."""
    bad = [f"{c['model']} {c['mode']} on {c['target']}" for c in block["coverage"]
           if not c["ok"]]
    said = ("Every requested mode the targets support has a passing variant (plain or repaired)."
            if block["ok"] else f"No passing variant for {len(bad)}: " + ", ".join(bad[:8])
            + (", …" if len(bad) > 8 else "") + ".")
    out = ['<h2 id="deployable">Deployable</h2>',
           f'<p class="small">The smallest variant that passes, per model and target. {e(said)}'
           '</p><div class="scroll"><table><thead><tr><th>model</th><th>target</th>'
           '<th>variant</th><th>bytes</th><th>latency ms</th><th>arena bytes</th>'
           '<th>repaired</th><th>why none passes</th></tr></thead><tbody>']
    for r in block["rows"]:
        if r["id"] is None:
            variant, why = f'<span class="badge st-{e(ResultStatus.FAIL)}">none</span>', r["why"]
        else:
            variant, why = f'<a href="#{anchor(r["id"])}">{e(r["label"])}</a>', ""
        size = "–" if r["bytes"] is None else f"{r['bytes']:,}"
        if r.get("compressed_bytes") is not None:
            size += f' <span class="small">(LUT-compressed {r["compressed_bytes"]:,})</span>'
        out.append(f'<tr><td>{e(r["model"])}</td><td>{e(r["target"])}</td><td>{variant}</td>'
                   f'<td class="num">{size}</td>'
                   f'<td class="num">{e(fmt(r["latency_ms"]))}</td>'
                   f'<td class="num">{e(fmt(r["arena_bytes"]))}{_recorded(r)}</td>'
                   f'<td>{"yes" if r["repaired"] else "no" if r["id"] else "–"}</td>'
                   f'<td>{e(why)}</td></tr>')
    if not block["rows"]:
        out.append('<tr><td colspan="8">no results</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _recorded(row: dict) -> str:
    """TFLite Micro's recorded allocation total beside the smallest arena that ran."""
    recorded = row.get("arena_recorded_bytes")
    return "" if recorded is None else f' <span class="small">(recorded {e(fmt(recorded))})</span>'


def _cell(run: Run, v: ReportEntry, target: str) -> str:
    record = v.records.get(target)
    if record is None:
        return f'<td class="cell st-{MISSING}">not run</td>'
    status = record["status"]
    metrics = record.get("metrics") or {}
    lines = []
    if metrics.get("max_abs_error") is not None:
        lines.append(f"max|Δ| {fmt(metrics['max_abs_error'])}")
    elif "max_abs_error" in metrics:  # the runner writes what JSON cannot hold as null
        lines.append("max|Δ| not finite")
    bad = outputs_not_finite(run, v, target)
    if bad:
        lines.append(f"⚠ {sum(bad[k] for k in ('NaN', '+inf', '-inf'))} not finite")
    if metrics.get("steps") is not None and v.mode in INT_MODES:
        lines.append(f"{fmt(metrics['steps'])} steps")
    delta = _task_delta(metrics.get("task"))
    if delta:
        lines.append(delta)
    body = "".join(f'<span class="m">{e(x)}</span>' for x in lines)
    reason = record.get("reason") or ""
    if status in (ResultStatus.UNSUPPORTED, ResultStatus.ERROR) and reason:
        short = reason if len(reason) <= 70 else reason[:67] + "…"
        body += f'<span class="why">{e(short)}</span>'
    return (f'<td class="cell st-{e(status)}" title="{e(reason)}">'
            f'<a href="#{anchor(v.id)}"><b>{e(status)}</b>{body}</a></td>')


def _host_latency(v: ReportEntry) -> float | None:
    """Median single-sample invoke on `host` (XNNPACK), in ms, when it ran there."""
    record = v.records.get("host") or {}
    if record.get("status") not in (ResultStatus.PASS, ResultStatus.FAIL):
        return None
    return (record.get("metrics") or {}).get("latency_ms")


def _ratio(value, base) -> str:
    return f"{value / base:.2f}×" if value and base else "–"


def _matrix(run: Run) -> str:
    float32 = {v.model: v for v in run.entries
               if v.mode == QuantMode.FLOAT32 and not v.entry.get("given")}
    out = ['<h2>Parity matrix</h2>',
           '<p class="small legend">'
           + "".join(f"<span>{badge(s)}</span>" for s in (*ResultStatus, MISSING))
           + ' max|Δ| = max |variant − keras| in output units · steps = max|Δ| / output '
           'quantization step (int modes) · Δ = task metric of Keras − variant (positive: '
           'variant worse; pt = percentage points) · ms = median single-sample invoke on host '
           'after a warm-up; × = against the float32 variant. Click a cell for details.</p>',
           '<div class="scroll"><table class="matrix"><thead><tr><th>model</th><th>mode</th>'
           '<th>bytes</th><th>×</th><th>host ms</th><th>×</th>'
           + "".join(f"<th>{e(t)}</th>" for t in run.targets) + "</tr></thead><tbody>"]
    previous = None
    for v in run.entries:
        size = v.entry.get("bytes")
        base = float32.get(v.model)
        size_ratio = _ratio(size, base.entry.get("bytes") if base else None)
        size_text = f"{size:,}" if isinstance(size, int) else "–"
        latency = _host_latency(v)
        latency_text = f"{latency:.3g}" if latency else "–"
        latency_ratio = _ratio(latency, _host_latency(base) if base else None)
        entry_status = v.entry.get("status")
        mode_note = ("" if entry_status in (None, ConversionStatus.CONVERTED) else
                     f' <span class="small">({e(entry_status)})</span>')
        if isinstance(v.entry.get("given"), str):  # the user's own .tflite, not converted here
            mode_note += f' <span class="small">(given: {e(Path(v.entry["given"]).name)})</span>'
        if v.entry.get("fixed_batch"):  # made for TFLite Micro: static shapes
            mode_note += f' <span class="small">(batch {e(str(v.entry["fixed_batch"]))} ' \
                         'export)</span>'

        first = ' class="first"' if previous is not None and v.model != previous else ""
        previous = v.model
        out.append(f"<tr{first}><td>{e(v.model)}</td><td>{e(v.mode)}{mode_note}</td>"
                   f'<td class="num">{size_text}</td><td class="num">{size_ratio}</td>'
                   f'<td class="num">{latency_text}</td><td class="num">{latency_ratio}</td>'
                   + "".join(_cell(run, v, t) for t in run.targets) + "</tr>")
    if not run.entries:
        out.append(f'<tr><td colspan="{6 + len(run.targets)}">no entries</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _host_vs_ref(run: Run, a: str = "host", b: str = "host-ref") -> str:
    out = [f"<h2>{e(a)} vs {e(b)}</h2>"]
    missing = [t for t in (a, b) if t not in run.targets]
    if missing:
        out.append(f'<p class="meta">No comparison: {e(" and ".join(missing))} did not run.</p>')
        return "\n".join(out)
    rows = differences(run, a, b)
    compared = {k: r for k, r in rows.items() if r["max_abs"] is not None}
    if compared:
        worst_id = max(compared, key=lambda k: compared[k]["max_abs"])
        identical = sum(r["differing"] == 0 for r in compared.values())
        out.append(f'<p>Saved outputs of the default kernels ({e(a)}, XNNPACK) against the '
                   f'reference kernels ({e(b)}): {len(compared)} entries compared, {identical} '
                   f'identical; largest difference {fmt(compared[worst_id]["max_abs"])} on '
                   f'<a href="#{anchor(worst_id)}">{e(worst_id)}</a>.</p>')
    else:
        out.append('<p class="meta">No entry has saved outputs on both targets.</p>')
    out.append(f'<div class="scroll"><table><thead><tr><th>entry</th><th>{e(a)}</th>'
               f'<th>{e(b)}</th><th>max |{e(a)} − {e(b)}|</th><th>in output steps</th>'
               '<th>mean |diff|</th><th>elements differing</th><th>note</th></tr></thead><tbody>')
    for vid, r in rows.items():
        value = "" if r["max_abs"] is None else f' data-value="{r["max_abs"]!r}"'
        differing = ("–" if r["differing"] is None else f'{r["differing"]:,} / {r["elements"]:,}')
        out.append(f'<tr><td><a href="#{anchor(vid)}">{e(vid)}</a></td>'
                   f'<td>{badge(r["status"][a])}</td><td>{badge(r["status"][b])}</td>'
                   f'<td class="num" id="diff-{anchor(vid)[2:]}"{value}>{fmt(r["max_abs"])}</td>'
                   f'<td class="num">{fmt(r["steps"])}</td><td class="num">{fmt(r["mean_abs"])}'
                   f'</td><td class="num">{differing}</td><td>{e(r["note"])}</td></tr>')
    if not rows:
        out.append('<tr><td colspan="8">no entry has results on both targets</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)
