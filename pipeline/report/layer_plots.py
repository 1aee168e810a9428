"""The page's per-layer section: for each model and target, one plot of how the error grows
through the layers (the runner's `layers` field of each result record, docs/bundle.md).

x: the layers in the order the ops run (their names); y: max|Δ| / the layer's Keras range, log
scale; one line per variant (repaired ones dashed, under their repair label); each variant's
bound (bound / range per layer) as a band of its colour; the layer where its error is born
marked and named in the legend and the caption. A variant with no per-layer data draws nothing,
and the page says why."""

import math
from dataclasses import dataclass, field

from ...device_tests.schema import RunFolder
from ..stages import code_key
from .html import anchor, e
from .plots import DPI, Painter, Plots, _png, log_y
from .read import ReportEntry, Run
from .text import fmt

FIGSIZE = (6.4, 3.2)
MARGINS = {"left": 0.1, "right": 0.74, "bottom": 0.3, "top": 0.9}
FLOOR = 1e-9          # an exact layer (a float32 variant's often are) is drawn at this floor
MAX_TICKS = 40        # layer names on the x axis; beyond that every k-th one is named
MAX_NAME = 22         # characters of a layer name on the axis
MAX_PLOTS = 40        # model x target plots; the rest say why they have none
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
          "#8c8c8c", "#ccb974", "#64b5cd"]


@dataclass
class Line:
    """One variant's per-layer error on one target: what a line of the plot shows."""

    id: str
    label: str                    # the mode, or a repaired variant's repair label
    repaired: bool
    layers: list[str]             # in op order
    rel: list[float | None]       # max|Δ| / range per layer (None: not finite)
    band: list[float | None]      # bound / range per layer (None: no bound)
    born: dict | None = None      # the runner's `born` block
    text: str = ""                # the runner's sentence about it
    shown: list = field(default_factory=list)  # what the plot cache is keyed on

    def __post_init__(self):
        self.shown = [self.id, self.label, self.repaired, self.layers, self.rel, self.band,
                      (self.born or {}).get("layer")]


def label_of(v: ReportEntry) -> str:
    """How the page names a variant among its model's: a repaired one by its repair label
    (never as the plain variant it repairs), the others by their mode."""
    repair = v.entry.get("repair")
    if isinstance(repair, dict) and isinstance(repair.get("label"), str):
        return repair["label"]
    return v.mode


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def line_of(v: ReportEntry, target: str) -> tuple[Line | None, str]:
    """(v's line on `target`, "") or (None, why it has none)."""
    record = v.records.get(target)
    if record is None:
        return None, "no result on this target"
    layers = record.get("layers")
    if not isinstance(layers, dict):
        return None, (f"{record.get('status')}: {record.get('reason') or 'no reason given'}"
                      if record.get("reason") else "no per-layer data in its result")
    if layers.get("unavailable") or layers.get("error"):  # the runtime cannot, or it failed
        return None, str(layers.get("unavailable") or layers["error"])
    rows = [r for r in layers.get("rows") or [] if isinstance(r, dict)
            and isinstance(r.get("layer"), str)]
    if not rows:
        return None, "its per-layer data has no layer"
    rel, band = [], []
    for r in rows:
        value = _number(r.get("rel"))
        if value is None and _number(r.get("max_abs")) is not None and _number(r.get("range")):
            value = _number(r["max_abs"]) / _number(r["range"])
        rel.append(value)
        bound, span = _number(r.get("bound")), _number(r.get("range"))
        band.append(bound / span if bound is not None and span else None)
    born = layers.get("born") if isinstance(layers.get("born"), dict) else None
    return Line(v.id, label_of(v), isinstance(v.entry.get("repair"), dict),
                [r["layer"] for r in rows], rel, band, born,
                str(layers.get("text") or "")), ""


def layer_order(lines: list[Line]) -> list[str]:
    """Every line's layers in op order: one variant may have a layer another fused away, so
    each unseen layer goes right after the layer that precedes it in its own line."""
    order: list[str] = []
    for line in lines:
        after = -1
        for name in line.layers:
            if name in order:
                after = order.index(name)
            else:
                after += 1
                order.insert(after, name)
    return order


def figure(plt, order: list[str], lines: list[Line], title: str):
    """The figure (not yet saved: tests read its artists): a line per variant, its bound as a
    band of its colour, the layer where its error is born marked."""
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    try:
        at = {name: i for i, name in enumerate(order)}
        floored = False
        for k, line in enumerate(lines):
            color = COLORS[k % len(COLORS)]
            xs = [at[name] for name in line.layers]
            ys = [max(y, FLOOR) if y is not None else math.nan for y in line.rel]
            floored |= any(y is not None and y < FLOOR for y in line.rel)
            ax.plot(xs, ys, color=color, lw=1.3, marker="o", ms=3,
                    ls="--" if line.repaired else "-", label=line.label, gid=f"line:{line.id}")
            # The bound of each layer, as wide as its slot: under it, the error is allowed.
            # One band and one dotted line per variant, NaN between slots (an artist per slot
            # was most of a plot's drawing time).
            slots = [(x, max(b, FLOOR)) for x, b in zip(xs, line.band, strict=True)
                     if b is not None]
            if slots:
                bx = [v for x, _ in slots for v in (x - 0.5, x + 0.5, math.nan)]
                by = [v for _, b in slots for v in (b, b, math.nan)]
                ax.fill_between(bx, FLOOR, by, color=color, alpha=0.08, lw=0,
                                gid=f"band:{line.id}")
                ax.plot(bx, by, color=color, lw=0.8, ls=":", gid=f"bound:{line.id}")
            if line.born and line.born.get("layer") in at:
                x = at[line.born["layer"]]
                y = ys[line.layers.index(line.born["layer"])]
                ax.scatter([x], [y if not math.isnan(y) else FLOOR], s=70, marker="X",
                           color=color, edgecolors="#1f2328", linewidths=0.8, zorder=5,
                           label=f"born: {line.born['layer']} ({line.label})",
                           gid=f"born:{line.id}")
        log_y(ax)
        ax.set_xlim(-0.5, len(order) - 0.5)
        step = max(1, math.ceil(len(order) / MAX_TICKS))
        ticks = list(range(0, len(order), step))
        ax.set_xticks(ticks)
        ax.set_xticklabels([_short(order[i]) for i in ticks], rotation=55, ha="right",
                           fontsize=6)
        ax.set_ylabel("max|Δ| / layer range")
        ax.set_title(title + (f"  (an error of 0 drawn at {FLOOR:g})" if floored else ""),
                     y=1.0)
        ax.grid(axis="y", color="#eaeef2", lw=0.6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.subplots_adjust(**MARGINS)
    except Exception:
        plt.close(fig)
        raise
    return fig


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else "…" + name[-(MAX_NAME - 1):]


def section(run: Run, painter: Painter) -> str:
    """The page's per-layer section: per model, a plot per target, the variants' sentences
    about where their error is born, and why a variant draws nothing."""
    if not any(isinstance(r.get("layers"), dict) for v in run.entries
               for r in v.records.values()):
        return ('<h2>Per-layer error</h2><p class="meta">No per-layer data in these results '
                "(per-layer comparison off, or results written before it existed).</p>")
    out = ['<h2>Per-layer error</h2><p class="small">Per model and target: max|Δ| / the '
           "layer's Keras range after each layer, in the order the ops run (log scale); one "
           "line per variant, repaired variants dashed under their repair label; the shaded "
           "band of a variant's colour is its bound (the per-layer simulated error's bound / "
           "range); ✕ marks the layer where its error is born (the first that leaves its "
           "bound).</p>"]
    # Cached as the entries' plots are, in a folder of their own (each prunes only its own).
    plots = Plots(run.run_dir, painter, RunFolder(run.run_dir).plots_dir / "layers")
    budget = MAX_PLOTS
    models = list(dict.fromkeys(v.model for v in run.entries))
    for model in models:
        variants = [v for v in run.entries if v.model == model]
        out.append(f"<h3>{e(model)}</h3>")
        figures, notes = [], []
        for target in run.targets:
            found = [line_of(v, target) for v in variants]
            lines = [line for line, _ in found if line is not None]
            missing = [(v, why) for v, (line, why) in zip(variants, found, strict=True)
                       if line is None and why != "no result on this target"]
            if missing:
                notes.append(_missing_text(target, missing, drew=bool(lines)))
            if not lines:
                continue
            if budget <= 0:
                notes.append(f"<li>{e(target)}: plot omitted (only {MAX_PLOTS} per-layer plots "
                             "per page)</li>")
                continue
            budget -= 1
            order = layer_order(lines)
            title = f"{model} on {target}"
            (image,) = plots.get(
                (code_key(__name__), title, order, [line.shown for line in lines]), _draw,
                order, lines, title)
            figures.append(f'<figure style="display:inline-block;margin:4px 12px 4px 0">'
                           f'<img alt="per-layer error of {e(model)} on {e(target)}" '
                           f'src="{image}"><figcaption class="small">'
                           f"{_caption(lines)}</figcaption></figure>")
        if figures:
            out.append('<div class="plots">' + "".join(figures) + "</div>")
        if notes:
            out.append('<ul class="small">' + "".join(notes) + "</ul>")
        if not figures and not notes:
            out.append('<p class="meta">No per-layer data: no result on any target.</p>')
    plots.prune()
    return "\n".join(out)


def _caption(lines: list[Line]) -> str:
    """Each variant's sentence beside it: where its error is born, or that it stays within its
    bounds."""
    parts = []
    for line in lines:
        link = f'<a href="#{anchor(line.id)}">{e(line.label)}</a>'
        if line.born:
            b = line.born
            what = line.text or (f"error is born in layer {b.get('layer')} ({b.get('op')}): "
                                 f"{fmt(b.get('steps'))} steps against a simulated "
                                 f"{fmt(b.get('simulated_steps'))}")
            parts.append(f"<b>{link}</b>: {e(what)}")
        elif line.text:
            parts.append(f"{link}: {e(line.text)}")
        elif any(b is not None for b in line.band):
            parts.append(f"{link}: every layer within its bound")
        else:
            parts.append(f"{link}: no per-layer bound")
    return "<br>".join(parts)


def _missing_text(target: str, missing: list[tuple[ReportEntry, str]], drew: bool) -> str:
    """One line per target: the variants that draw nothing, grouped by why."""
    by_why: dict[str, list[str]] = {}
    for v, why in missing:
        by_why.setdefault(why, []).append(label_of(v))
    said = "; ".join(f"{', '.join(labels)}: {why}" for why, labels in by_why.items())
    lead = "not drawn" if drew else "no plot"
    return f"<li>{e(target)}: {lead} — {e(said)}</li>"


def _draw(plt, order: list[str], lines: list[Line], title: str) -> tuple:
    return (_png(figure(plt, order, lines, title), plt),)
