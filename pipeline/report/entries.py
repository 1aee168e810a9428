"""One section of the page per entry: its facts and tolerance, the checks and metrics on each
target, the boundary analysis, its plots and its worst samples."""

import math

import numpy as np

from ...device_tests.schema import ResultStatus
from ..boundary import JUMP
from .compare import as_samples, errors, not_finite_text, outputs_not_finite, where_not_finite
from .html import anchor, badge, conversion_badge, e, table, value_cell
from .plots import Painter, Plots, histogram, scatter
from .read import ReportEntry, Run
from .text import fmt

MAX_PLOTTED = 60          # entries with plots; the rest say why they have none
N_WORST = 5


def sections(run: Run, painter: Painter) -> dict[str, str]:
    """{entry id: its section}. Failing entries get plots first when the budget is short; the
    page keeps matrix order."""
    budget = [MAX_PLOTTED]
    order = sorted(run.entries, key=lambda v: not v.failing)
    plots = Plots(run.run_dir, painter)
    shown = {v.id: _section(run, v, plots, budget) for v in order}
    plots.prune()
    return shown


def _section(run: Run, v: ReportEntry, plots: Plots, budget: list[int]) -> str:
    dataset_name, dataset = run.dataset(v)
    task = run.task(v)
    classifier = task == "classification"
    tol = v.entry.get("tolerance") or next(
        (r.get("tolerance") for r in v.records.values() if r.get("tolerance")), {}) or {}
    targets = [t for t in run.targets if t in v.records]
    badges = " ".join(f'{e(t)} {badge(v.records[t].get("status"))}' for t in targets)
    worst_err = [(v.records[t].get("metrics") or {}).get("max_abs_error") for t in targets]
    worst_err = [x for x in worst_err if isinstance(x, (int, float))]
    not_finite = where_not_finite(run, v)
    opened = ' open class="failing"' if v.failing else " open" if not_finite else ""
    out = [f'<details id="{anchor(v.id)}"{opened}><summary><b>{e(v.id)}</b> · '
           f'{badges or "no results"}'
           + (f" · max|Δ| {fmt(max(worst_err))}" if worst_err else "")
           + (f' · <span class="warn">⚠ NaN or inf in the outputs of '
              f'{e(", ".join(not_finite))}</span>' if not_finite else "") + "</summary>"]

    entry = v.entry
    facts = [f"model <b>{e(v.model)}</b>", f"mode <b>{e(v.mode)}</b>",
             f"dataset {e(dataset_name or '–')} ({e(task)})"]
    if entry:
        facts.append(f"manifest status {conversion_badge(entry.get('status'))}")
        if entry.get("tflite"):
            facts.append(f"<code>{e(entry['tflite'])}</code>")
        if entry.get("bytes") is not None:
            size = entry["bytes"]
            facts.append(f"{size:,} bytes" if isinstance(size, int) else f"{e(size)} bytes")
        if entry.get("expected_ops"):
            facts.append("ops " + ", ".join(e(op) for op in entry["expected_ops"]))
    else:
        facts.append('<span class="warn">no manifest entry</span>')
    out.append("<p>" + " · ".join(facts) + "</p>")
    if entry.get("reason"):
        out.append(f"<p><b>manifest reason:</b> {e(entry['reason'])}</p>")
    reasons = [(t, v.records[t]) for t in targets if v.records[t].get("reason")]
    if reasons:
        out.append("<ul>" + "".join(
            f"<li><b>{e(t)}</b> {badge(r.get('status'))} {e(r['reason'])}</li>"
            for t, r in reasons) + "</ul>")

    bounds = [(k, tol.get(k)) for k in ("max_abs", "max_rel", "output_step", "steps",
                                        "task_delta", "min_top1_agreement")
              if tol.get(k) is not None]
    out.append("<h3>Tolerance</h3><p>" + (" · ".join(
        f"{e(k)} <b>{e(fmt(x))}</b>" for k, x in bounds) or "no bounds")
        + (f'<br><span class="small">derivation: {e(tol["derivation"])}</span>'
           if tol.get("derivation") else "") + "</p>")

    side = _checks_and_metrics(v, targets) + _boundary(run, v, targets)
    main = _plots_and_worst(run, v, plots, budget, tol, classifier, dataset)
    out.append(f'<div class="row"><div>{main}</div><div>{side}</div></div>')
    out.append("</details>")
    return "\n".join(out)


def _checks_and_metrics(v: ReportEntry, targets: list[str]) -> str:
    out = []
    names = list(dict.fromkeys(c.get("name") for t in targets
                               for c in v.records[t].get("checks") or []))
    if names:
        rows = []
        for name in names:
            cells = []
            for t in targets:
                c = next((c for c in v.records[t].get("checks") or []
                          if c.get("name") == name), None)
                if c is None:
                    cells.append("<td>–</td>")
                    continue
                good = c.get("ok")
                status = ResultStatus.PASS if good else ResultStatus.FAIL
                cells.append(f'<td class="num st-{status}">'
                             f'{e(fmt(c.get("value")))} / {e(fmt(c.get("bound")))} '
                             f'{"✓" if good else "✗"}</td>')
            rows.append((name, cells))
        out.append("<h3>Checks (value / bound)</h3>" + table(rows, targets, "check"))
    flat = {t: {"invoke": v.records[t].get("invoke"), "seconds": v.records[t].get("seconds"),
                **_flatten(v.records[t].get("metrics") or {})} for t in targets}
    keys = list(dict.fromkeys(k for t in targets for k in flat[t]))
    keys = [k for k in keys if any(flat[t].get(k) is not None for t in targets)]
    if keys:
        out.append("<h3>Metrics</h3>" + table(
            [(k, [value_cell(flat[t].get(k)) for t in targets]) for k in keys],
            targets, "metric"))
    return "\n".join(out)


def _flatten(metrics: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in metrics.items():
        if (key == "boundary" and not prefix) or key == "flips":  # shown in tables of their own
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _boundary(run: Run, v: ReportEntry, targets: list[str]) -> str:
    boundary = {t: (v.records[t].get("metrics") or {}).get("boundary") for t in targets}
    boundary = {t: b for t, b in boundary.items() if b}
    model_boundary = run.model(v).get("boundary")
    flips = [(t, key[3:], f) for t in targets
             for key, block in (v.records[t].get("metrics") or {}).items()
             if key.startswith("vs_") and isinstance(block, dict)
             for f in block.get("flips") or [] if isinstance(f, dict)]
    if not (boundary or model_boundary or flips):
        return ""
    out = ["<h3>Boundary analysis</h3>"]
    if model_boundary:
        steps = (model_boundary.get("input_steps") or {}).get(v.mode)
        out.append(f'<p class="small">{_kinks_text(model_boundary)}'
                   + (f" · input steps for {e(v.mode)}: {e(fmt(steps))}" if steps else "")
                   + "</p>")
    if boundary:
        keys = ["kinks", "input_step", "near_samples", "near_error_share"]
        keys += [k for b in boundary.values() for k in b if k not in keys]
        out.append(table([(k, [value_cell(boundary[t].get(k)) for t in boundary])
                          for k in keys], list(boundary), "boundary"))
        out.append('<p class="small">near_samples: samples with a pre-activation within one '
                   "input quantization step of a kink;<br>near_error_share: the share of the "
                   "total squared error they carry.</p>")
    else:
        out.append('<p class="small">no boundary metrics in the results</p>')
    if flips:
        columns = ["vs", "output steps", "layer", "unit", "threshold", "input steps away",
                   "closer to Keras"]
        rows = [(f"{t}: sample {f.get('sample')}",
                 [f"<td>{e(baseline)}</td>", value_cell(f.get("output_steps")),
                  f"<td>{e(str(f.get('layer')))}</td>", value_cell(f.get("unit")),
                  value_cell(f.get("threshold")), value_cell(f.get("distance_steps")),
                  f"<td>{e(str(f.get('closer') or 'neither'))}</td>"])
                for t, baseline, f in flips]
        out.append("<h4>Threshold flips between targets</h4>" + table(rows, columns, "flip"))
    return "\n".join(out)


def _kinks_text(boundary: dict) -> str:
    """Each layer with its kinks ("step_1: jump 1 at 0.3"); a manifest written before kinks
    were probed has one kink for every layer."""
    layers = [str(x) for x in boundary.get("layers") or []]
    kinks = boundary.get("kinks")
    if not isinstance(kinks, list):
        return f"kink {e(fmt(boundary.get('kink')))} · layers {e(', '.join(layers))}"
    parts = []
    for layer, layer_kinks in zip(layers, kinks, strict=False):  # a hand-edited file
        shown = []
        for k in layer_kinks if isinstance(layer_kinks, list) else []:
            if not isinstance(k, dict):
                continue
            slopes = k.get("slopes") if isinstance(k.get("slopes"), list) else []
            what = (f"jump {fmt(k.get('height'))}" if k.get("kind") == JUMP else
                    f"slope {' → '.join(fmt(x) for x in slopes)}" if slopes else "kink")
            shown.append(f"{what} at {fmt(k.get('at'))}")
        parts.append(f"{e(layer)}: {e(', '.join(shown) or '–')}")
    return "kinks · " + " · ".join(parts)


def _plots_and_worst(run: Run, v: ReportEntry, plots: Plots, budget: list[int], tol: dict,
                     classifier: bool, dataset: dict) -> str:
    out = []
    ref = run.reference(v)
    problems = []
    plot_target, outputs = None, None
    for t in run.targets:
        rel = run.outputs_path(v, t)
        if rel is None:
            continue
        arr = run.outputs(v, t)
        if arr is None:
            problems.append(f"{t}: {rel}: {run.files.problems.get(rel, 'unreadable')}")
        elif ref is not None and arr.shape != ref.shape:
            problems.append(f"{t}: {rel}: shape {arr.shape}, reference {ref.shape}")
        elif plot_target is None:
            plot_target, outputs = t, arr
    for msg in problems:
        out.append(f'<p class="warn">⚠ saved outputs {e(msg)}</p>')
    for target in [None, *run.targets]:
        bad = outputs_not_finite(run, v, target)
        if bad:
            where = f"saved outputs on {target}" if target else "Keras reference outputs"
            out.append(f'<p class="warn">⚠ {e(where)}: {e(not_finite_text(bad))}.</p>')

    record = v.records.get(plot_target) if plot_target else None
    worst = list(((record or {}).get("metrics") or {}).get("worst_samples") or [])
    if plot_target is None or ref is None:
        why = ("no saved outputs on any target" if plot_target is None and not problems
               else "no usable saved outputs (above)" if plot_target is None
               else "reference outputs unavailable: "
               + run.files.problems.get(run.reference_path(v) or "", "not in the manifest"))
        out.append(f'<p class="meta">No plots: {e(why)}.</p>')
        any_worst = next(((r.get("metrics") or {}).get("worst_samples") for r in v.records.values()
                          if (r.get("metrics") or {}).get("worst_samples")), None)
        if any_worst:
            out.append(f'<p>Worst samples (indices only): {e(fmt(any_worst))}</p>')
        return "\n".join(out)

    err, finite = errors(ref, outputs)
    per_sample = np.where(finite, err, 0.0).max(axis=1, initial=0.0)
    whole = finite.all(axis=1)  # the samples with no NaN or infinity on either side
    worst = [int(i) for i in worst if isinstance(i, int) and 0 <= i < len(err)]
    if not worst:
        worst = [int(i) for i in np.argsort(-per_sample, kind="stable")[:N_WORST]]
    # Samples with NaN or an infinity come first: the metrics may not rank them (they can only
    # place finite errors), and they are the ones to look at.
    worst = list(dict.fromkeys(np.flatnonzero(~whole)[:N_WORST].tolist() + worst))
    others = [t for t in run.targets if t != plot_target and run.outputs(v, t) is not None]
    left_out = int(finite.size - np.count_nonzero(finite))
    recomputed = float(per_sample.max(initial=0.0)) if left_out < finite.size else None
    reported = ((record or {}).get("metrics") or {}).get("max_abs_error")
    check = ""
    if (isinstance(reported, (int, float)) and recomputed is not None
            and not math.isclose(recomputed, reported, rel_tol=1e-4, abs_tol=1e-7)):
        check = (f' <span class="warn">⚠ the runner reported {fmt(reported)}: the saved '
                 "outputs do not match the metrics</span>")
    if left_out:
        check += (f' <span class="warn">⚠ over the finite values only: {left_out:,} of '
                  f"{finite.size:,} positions hold NaN or an infinity (above) and are left out "
                  "of it and of the plots</span>")
    out.append(f"<h3>Outputs on {e(plot_target)}</h3><p>Plots and worst samples use the saved "
               f"outputs of <b>{e(plot_target)}</b> (the first target that saved them"
               + (f"; also saved on {e(', '.join(others))}" if others else "")
               + f"). max |variant − keras| from them: <b>{fmt(recomputed)}</b>{check}</p>")

    if budget[0] > 0:
        budget[0] -= 1
        hist, points = plots.get(
            (ref, outputs, worst, tol.get("max_abs"), plot_target, classifier), _draw,
            err[finite], tol.get("max_abs"), plot_target, ref, outputs, worst, classifier,
            images=2)
        out.append(f'<div class="plots"><img alt="histogram of absolute errors" src="{hist}">'
                   f'<img alt="keras vs variant scatter" src="{points}"></div>')
    else:
        out.append(f'<p class="meta">Plots omitted: only {MAX_PLOTTED} variants get plots '
                   "(failing ones first).</p>")

    labels = run.labels(v)
    r, o = as_samples(ref), as_samples(outputs)
    y_std = dataset.get("y_std") if not classifier else None
    columns = ["sample", "label", "keras", "variant", "max |Δ|"]
    if y_std:
        columns.append("max |Δ| (original units)")
    rows = []
    for i in worst:
        cells = [f"<td>{e(_label_text(labels, i))}</td>",
                 f"<td>{e(_sample_text(r[i], classifier))}</td>",
                 f"<td>{e(_sample_text(o[i], classifier))}</td>"]
        sample_errors = [float(per_sample[i])] + (
            [float(per_sample[i]) * float(y_std)] if y_std else [])
        cells += [value_cell(x) if whole[i] else '<td class="num warn">not finite</td>'
                  for x in sample_errors]
        rows.append((str(i), cells))
    out.append(f"<h3>Worst samples ({e(plot_target)})</h3>" + table(rows, columns[1:], "sample"))
    if y_std:
        out.append(f'<p class="small">Values in the model\'s output units (standardised); '
                   f"original units = value × y_std ({fmt(float(y_std))}) + y_mean.</p>")
    return "\n".join(out)


def _sample_text(row: np.ndarray, classifier: bool) -> str:
    if classifier and row.size > 1:
        k = int(np.argmax(row))
        return f"class {k} (p {row[k]:.3f})"
    if row.size == 1:
        return f"{row[0]:.4g}"
    shown = ", ".join(f"{x:.3g}" for x in row[:6])
    return f"[{shown}{', …' if row.size > 6 else ''}]"


def _label_text(labels: np.ndarray | None, i: int) -> str:
    if labels is None or labels.ndim == 0 or i >= len(labels):
        return "–"
    value = np.asarray(labels[i]).ravel()
    if value.size == 1:
        x = value[0]
        return str(int(x)) if np.issubdtype(value.dtype, np.integer) else f"{float(x):.4g}"
    return _sample_text(value.astype(np.float64), False)


def _draw(plt, err, bound, target: str, ref, outputs, worst: list, classifier: bool) -> tuple:
    """An entry's two plots: its error histogram and Keras vs variant."""
    return (histogram(plt, err, bound, target),
            scatter(plt, ref, outputs, worst, target, classifier))
