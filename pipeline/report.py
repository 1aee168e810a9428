"""`DIR/report.html`: one self-contained page for a run folder (docs/bundle.md).

Reads `manifest.json`, the merged `results.json` and the `.npy` files they name (Keras reference
outputs, labels, each variant's saved outputs) and writes a page that opens from disk with no
network: inline CSS, plots as base64 PNG data URIs. Data in, page out: nothing here decides pass
or fail, it shows what the runner decided and recomputes from the saved outputs what it can.
"""

import base64
import contextlib
import hashlib
import html
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np

from ..converters.modes import QuantMode
from ..core.errors import EdgepipeError
from ..core.files import atomic_path, prune, write_json
from .junit import (
    STATUSES,
    TOLERANCE,
    check_results,
    check_shape,
    targets_of,
    write_junit,
    xml_text,
)
from .stages import code_version

MODES = [m.value for m in QuantMode]
INT_MODES = {m.value for m in QuantMode if m.integer_only}
FIGSIZE = (3.2, 2.4)
DPI = 100
# Fixed margins, not tight_layout(): it measured every tick label and took 60% of the plot time.
MARGINS = {"left": 0.2, "right": 0.95, "bottom": 0.18, "top": 0.9}
MAX_PLOTTED = 60          # variants with plots; the rest say why they have none
MAX_SCATTER = 20_000      # points per scatter, beyond that a fixed subsample (worst kept)
N_WORST = 5
PLOT_NAME = re.compile(r"[0-9a-f]{64}\.json")  # a plot's file in .edgepipe/plots: its sha256
PLOT_STYLE = {"font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "legend.fontsize": 6.5}
# The manifest fields the report reads, with their types (junit.check_shape): a manifest.json of
# another shape is one line naming the field, not a crash halfway through the page.
MANIFEST = {
    "versions": "object",
    "datasets": {"*": {"task": "string", "labels": "string", "y_std": "number"}},
    "models": {"*": {"dataset": "string", "reference": "string",
                     "boundary": {"layers": "strings", "input_steps": "object"}}},
    "entries": [{"id": "!string", "model": "string", "mode": "string", "status": "string",
                 "reason": "string", "tflite": "string", "bytes": "integer",
                 "dataset": "string", "reference": "string", "expected_ops": "strings",
                 "tolerance": TOLERANCE}],
}


def e(value) -> str:
    """Text for HTML: escaped, and the control characters HTML forbids made visible."""
    return html.escape(xml_text(value), quote=True)


def fmt(value) -> str:
    """A number as a short string; `–` for absent."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(fmt(v) for v in value[:10])
        return f"[{shown}{', …' if len(value) > 10 else ''}]"
    return str(value)


def anchor(entry_id: str) -> str:
    return "v-" + re.sub(r"[^A-Za-z0-9_.-]", "_", entry_id)


# ---------------------------------------------------------------- reading the run folder


class Files:
    """The `.npy` files of a run folder, read once, never from outside it."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.root = run_dir.resolve()
        self.cache: dict[str, np.ndarray | None] = {}
        self.problems: dict[str, str] = {}

    def array(self, rel: str | None) -> np.ndarray | None:
        if not rel:
            return None
        if rel not in self.cache:
            self.cache[rel] = self._load(rel)
        return self.cache[rel]

    def exists(self, rel: str) -> bool:
        path = self._inside(rel)
        return isinstance(path, Path) and path.is_file()

    def _inside(self, rel: str) -> Path | str:
        """The file `rel` names, or why it is not read."""
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts:
            return "path leaves the run folder; not read"
        try:
            path = (self.run_dir / parts).resolve()
        except (OSError, RuntimeError, ValueError) as err:  # a NUL, a symlink loop
            return f"not a usable path ({err}); not read"
        return path if path.is_relative_to(self.root) else "path leaves the run folder; not read"

    def _load(self, rel: str) -> np.ndarray | None:
        path = self._inside(rel)
        if isinstance(path, str):
            self.problems[rel] = path
            return None
        if not path.is_file():
            self.problems[rel] = "not a regular file" if path.exists() else "file missing"
            return None
        try:
            # Mapped, then copied: a header that declares more data than the file holds is
            # refused, where np.load would first allocate all of it.
            loaded = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            self.problems[rel] = f"unreadable: {err}"
            return None
        if not isinstance(loaded, np.ndarray):
            loaded.close()
            self.problems[rel] = "an .npz archive, not one .npy array"
            return None
        array = np.array(loaded)
        if not any(np.issubdtype(array.dtype, kind) for kind in (np.integer, np.floating,
                                                                  np.bool_)):
            self.problems[rel] = f"not real numbers: dtype {array.dtype}"
            return None
        return array


def _read_json(path: Path, what: str, fix: str) -> dict:
    if not path.is_file():
        received = "not a regular file" if path.exists() else "no such file"
        raise EdgepipeError(f"Expected {what} at {path}. Received: {received}. Run "
                            "`edgepipe run --out DIR` first, then report on DIR.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, too deep, a huge number
        raise EdgepipeError(f"Expected {what} at {path} to be JSON. Received: "
                            f"{type(err).__name__}: {err}. {fix}") from None


def read_manifest(run_dir: Path) -> dict:
    """The run folder's manifest.json, with the shape the report reads (else one line)."""
    path = run_dir / "manifest.json"
    fix = f"Rebuild the bundle with `edgepipe run --out {run_dir}`."
    manifest = _read_json(path, "the bundle's manifest.json", fix)
    check_shape(manifest, MANIFEST, path, fix)
    return manifest


def read_results(run_dir: Path) -> dict:
    """The run folder's merged results.json, with the shape docs/bundle.md gives it (else one
    line naming the field)."""
    path = run_dir / "results.json"
    fix = f"Rerun `edgepipe parity {run_dir}` to write it again."
    return check_results(_read_json(path, "the merged results.json", fix), path)


@dataclass
class Variant:
    """One manifest entry (model x mode) and its result record on each target."""

    id: str
    model: str
    mode: str
    entry: dict
    records: dict[str, dict] = field(default_factory=dict)

    @property
    def statuses(self) -> list[str]:
        return [r["status"] for r in self.records.values()]

    @property
    def failing(self) -> bool:
        """Any status but pass and unsupported: an unknown one counts as an error."""
        return any(s not in ("pass", "unsupported") for s in self.statuses)


@dataclass
class Run:
    run_dir: Path
    manifest: dict
    results: dict
    files: Files
    targets: list[str]
    variants: list[Variant]
    warnings: list[str]

    def model(self, v: Variant) -> dict:
        return (self.manifest.get("models") or {}).get(v.model) or {}

    def dataset(self, v: Variant) -> tuple[str | None, dict]:
        name = v.entry.get("dataset") or self.model(v).get("dataset")
        return name, (self.manifest.get("datasets") or {}).get(name) or {}

    def task(self, v: Variant) -> str:
        return self.dataset(v)[1].get("task") or "regression"

    def reference_path(self, v: Variant) -> str | None:
        return v.entry.get("reference") or self.model(v).get("reference")

    def reference(self, v: Variant) -> np.ndarray | None:
        return self.files.array(self.reference_path(v))

    def labels(self, v: Variant) -> np.ndarray | None:
        return self.files.array(self.dataset(v)[1].get("labels"))

    def outputs_path(self, v: Variant, target: str) -> str | None:
        record = v.records.get(target)
        if record is None:
            return None
        if record.get("outputs"):
            return record["outputs"]
        conventional = f"outputs/{target}/{v.id}.npy"
        return conventional if self.files.exists(conventional) else None

    def outputs(self, v: Variant, target: str) -> np.ndarray | None:
        return self.files.array(self.outputs_path(v, target))

    def not_finite(self, v: Variant, target: str | None = None) -> dict | None:
        """Where the saved outputs on `target` (the Keras reference: None) hold NaN or
        infinities (`not_finite`); None when they do not, or are not there."""
        array = self.reference(v) if target is None else self.outputs(v, target)
        return None if array is None else not_finite(array)

    def where_not_finite(self, v: Variant) -> list[str]:
        """["the Keras reference", "host", ...]: the outputs of `v` with NaN or infinities."""
        return [name or "the Keras reference" for name in [None, *self.targets]
                if self.not_finite(v, name)]


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    return build_run(run_dir, read_manifest(run_dir), read_results(run_dir))


def build_run(run_dir: Path, manifest: dict, results: dict) -> Run:
    targets = targets_of(results)
    variants: dict[str, Variant] = {}
    warnings = []
    for entry in manifest.get("entries") or []:
        if entry["id"] in variants:
            warnings.append(f"manifest.json lists {entry['id']} more than once; the last entry "
                            "is shown.")
        variants[entry["id"]] = Variant(entry["id"], entry.get("model") or "?",
                                        entry.get("mode") or "?", entry)
    for i, record in enumerate(results.get("results") or []):
        rid, target = record["id"], record["target"]
        if rid not in variants:
            variants[rid] = Variant(rid, record.get("model") or "?", record.get("mode") or "?",
                                    {})
            warnings.append(f"{rid} has results but no manifest entry.")
        if record["status"] not in STATUSES:
            warnings.append(f"results.json results[{i}] ({rid} on {target}) has status "
                            f"{record['status']!r}, none of {', '.join(STATUSES)}: counted as "
                            "an error.")
        v = variants[rid]
        if target in v.records:
            warnings.append(f"{rid} has more than one result on {target}; the last one is "
                            "shown.")
        v.records[target] = record
    model_order = {}
    for v in variants.values():
        model_order.setdefault(v.model, len(model_order))
    ordered = sorted(variants.values(), key=lambda v: (
        model_order[v.model], MODES.index(v.mode) if v.mode in MODES else len(MODES)))
    return Run(run_dir, manifest, results, Files(run_dir), targets, ordered, warnings)


# ---------------------------------------------------------------- numbers from saved outputs


def _as_samples(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a.reshape(1, 1)
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


def not_finite(a: np.ndarray) -> dict | None:
    """How many values of `a` (samples first) are NaN, +inf and -inf, in which samples and at
    which outputs (the flat index within a sample); None when every value is finite."""
    if not np.issubdtype(a.dtype, np.floating):
        return None
    s = _as_samples(a)
    bad = ~np.isfinite(s)
    if not bad.any():
        return None
    return {"NaN": int(np.isnan(s).sum()), "+inf": int(np.isposinf(s).sum()),
            "-inf": int(np.isneginf(s).sum()), "samples": np.flatnonzero(bad.any(axis=1)).tolist(),
            "outputs": np.flatnonzero(bad.any(axis=0)).tolist(), "of": len(s)}


def not_finite_text(info: dict) -> str:
    """`3 values are not finite (1 NaN, 2 +inf), in 2 of 48 samples: 3, 17; at outputs: 0`"""
    kinds = [(k, info[k]) for k in ("NaN", "+inf", "-inf") if info[k]]
    total = sum(n for _, n in kinds)
    return (f"{total} value{'s are' if total > 1 else ' is'} not finite ("
            + ", ".join(f"{n} {k}" for k, n in kinds) + f"), in {len(info['samples'])} of "
            f"{info['of']} samples: {_indices(info['samples'])}; at outputs: "
            f"{_indices(info['outputs'])}")


def _indices(indices: list[int], shown: int = 10) -> str:
    more = len(indices) - shown
    return ", ".join(map(str, indices[:shown])) + (f", … ({more} more)" if more > 0 else "")


def compare_outputs(a: np.ndarray | None, b: np.ndarray | None) -> dict | None:
    """max/mean |a - b| over the elements whose difference is finite, how many elements differ,
    and how many of them by NaN or an infinity (`not_finite`: one side not finite, or opposite
    infinities; `max_abs` None when every element does); None when either is absent or shapes
    disagree (then `shape` says so)."""
    if a is None or b is None:
        return None
    if a.shape != b.shape:
        return {"shape": f"{a.shape} vs {b.shape}"}
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0  # the same infinity or NaN: no difference
    finite = diff[np.isfinite(diff)]
    return {"max_abs": float(finite.max()) if finite.size else (None if diff.size else 0.0),
            "mean_abs": float(finite.mean()) if finite.size else (None if diff.size else 0.0),
            "differing": int(np.count_nonzero(diff)), "elements": int(diff.size),
            "not_finite": int(diff.size - finite.size)}


def target_differences(run_dir: Path, results: dict | None = None, a: str = "host",
                       b: str = "host-ref") -> dict[str, dict]:
    """For every entry with a result on both targets: each side's status and the comparison of
    their saved outputs (`max_abs`, `mean_abs`, `differing`, `elements`, `steps` = max_abs in
    output quantization steps); `None` values and a `note` where outputs are absent."""
    run_dir = Path(run_dir)
    if results is None:
        return _differences(load_run(run_dir), a, b)
    results = check_results(results, run_dir / "results.json")
    return _differences(build_run(run_dir, read_manifest(run_dir), results), a, b)


def _differences(run: Run, a: str, b: str) -> dict[str, dict]:
    out = {}
    for v in run.variants:
        if a not in v.records or b not in v.records:
            continue
        cmp = compare_outputs(run.outputs(v, a), run.outputs(v, b))
        row = {"status": {a: v.records[a].get("status"), b: v.records[b].get("status")},
               "max_abs": None, "mean_abs": None, "differing": None, "elements": None,
               "steps": None, "note": ""}
        if cmp is None:
            missing = [t for t in (a, b) if run.outputs(v, t) is None]
            row["note"] = "no saved outputs on " + " and ".join(missing)
        elif "shape" in cmp:
            row["note"] = f"output shapes differ: {cmp['shape']}"
        else:
            row.update(cmp)
            step = (v.entry.get("tolerance") or {}).get("output_step")
            if step and cmp["max_abs"] is not None:
                row["steps"] = cmp["max_abs"] / step
            if cmp["not_finite"]:
                row["note"] = (f"{cmp['not_finite']:,} elements differ by NaN or an infinity "
                               "(left out of max and mean)")
        out[v.id] = row
    return out


def _errors(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|variant − keras| (samples × values) and where it is finite: the plots and numbers use
    only those positions; a NaN or an infinity on either side is counted and shown apart."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(_as_samples(out) - _as_samples(ref))
    return err, np.isfinite(err)


# ---------------------------------------------------------------- plots


def _png(fig, plt) -> str:
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():  # a target name the font lacks glyphs for: boxes drawn
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _histogram(plt, err: np.ndarray, bound, target: str) -> str:
    """`err`: the finite absolute errors."""
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    try:
        flat = err.ravel()
        top = float(flat.max()) if flat.size else 0.0
        if top == 0.0:
            ax.text(0.5, 0.5, "identical outputs:\nevery error is 0" if flat.size else
                    "no finite error to plot", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            counts, _, _ = ax.hist(flat, bins=40, range=(0.0, top), color="#4c72b0",
                                    histtype="stepfilled")
            nonzero = counts[counts > 0]
            if nonzero.size and nonzero.max() / nonzero.min() >= 20:
                ax.set_yscale("log")
                ax.minorticks_off()
            if bound is not None and bound <= 3 * top:
                ax.axvline(bound, color="#cf222e", ls="--", lw=1, label=f"tol {fmt(bound)}")
                ax.legend(loc="upper right", frameon=False)
            ax.locator_params(axis="x", nbins=5)
            off_scale = bound is not None and bound > 3 * top
            ax.set_xlabel("|variant − keras|"
                          + (f"   (tol {fmt(bound)}: off scale)" if off_scale else ""))
            ax.set_ylabel("count")
        ax.set_title(f"absolute error ({target})", y=1.0)  # y: skips a costly auto-placement
        fig.subplots_adjust(**MARGINS)
    except Exception:
        plt.close(fig)
        raise
    return _png(fig, plt)


def _scatter(plt, ref: np.ndarray, out: np.ndarray, worst: list[int], target: str,
             classifier: bool) -> str:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    try:
        r, o = _as_samples(ref), _as_samples(out)
        shown = _errors(ref, out)[1]  # the finite part: NaN and infinities cannot be placed
        x, y = r[shown], o[shown]
        if x.size > MAX_SCATTER:
            keep = np.random.default_rng(0).choice(x.size, MAX_SCATTER, replace=False)
            x, y = x[keep], y[keep]
        ax.scatter(x, y, s=4, alpha=0.5, color="#4c72b0", linewidths=0,
                   label="all classes" if classifier else "samples")
        if worst:
            ax.scatter(r[worst][shown[worst]], o[worst][shown[worst]], s=22, marker="x",
                       color="#cf222e", linewidths=1, label="worst samples")
        if x.size:
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            ax.plot([lo, hi], [lo, hi], color="#6e7781", lw=0.8, ls="-", zorder=0)
        else:
            ax.text(0.5, 0.5, "no finite value to plot", ha="center", va="center",
                    transform=ax.transAxes)
        ax.locator_params(nbins=5)
        ax.set_xlabel("keras probability" if classifier else "keras output")
        ax.set_ylabel(f"variant ({target})")
        ax.set_title("keras vs variant" + (" (all classes)" if classifier else ""), y=1.0)
        ax.legend(loc="upper left", frameon=False, markerscale=1.5)
        fig.subplots_adjust(**MARGINS)
    except Exception:
        plt.close(fig)
        raise
    return _png(fig, plt)


# ---------------------------------------------------------------- the page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:20px 28px;
 color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 8px} h2{font-size:18px;margin:28px 0 8px;
 border-bottom:1px solid #d0d7de;padding-bottom:4px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:4px 0 10px} th,td{border:1px solid #d0d7de;
 padding:3px 7px;vertical-align:top;text-align:left}
thead th{position:sticky;top:0;background:#f6f8fa;z-index:1}
.scroll{max-height:80vh;overflow:auto;display:inline-block;max-width:100%}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{font-size:18px;font-weight:700;padding:8px 12px;border-radius:6px;display:inline-block}
.verdict.ok{background:#dafbe1;color:#116329} .verdict.bad{background:#ffebe9;color:#a40e26}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-weight:600;font-size:12px}
.st-pass{background:#dafbe1;color:#116329} .st-fail{background:#ffebe9;color:#cf222e}
.st-unsupported{background:#f4efd9;color:#6f5d00} .st-error{background:#82071e;color:#fff}
.st-missing{background:#f0f0f0;color:#6e7781}
td.cell a{color:inherit;text-decoration:none} td.cell{min-width:120px}
td.cell .m{display:block;font-size:12px;opacity:.9;white-space:nowrap}
td.cell .why{display:block;font-size:12px;max-width:240px}
tr.first td{border-top:2px solid #8c959f}
.meta{color:#57606a} .warn{color:#9a6700} .small{font-size:12px;color:#57606a}
details{border:1px solid #d0d7de;border-radius:6px;margin:6px 0;padding:4px 10px}
details[open]{padding-bottom:10px} summary{cursor:pointer;padding:2px 0}
details.failing{border-color:#cf222e}
.plots img{margin:4px 10px 4px 0;border:1px solid #eaeef2}
.row{display:flex;flex-wrap:wrap;gap:0 36px;align-items:flex-start}
.row>div:first-child{flex:0 1 720px;min-width:0}
code{font-size:12px;background:#f6f8fa;padding:0 3px;border-radius:3px}
.legend span{margin-right:10px}
"""


def _badge(status: str | None) -> str:
    status = status or "missing"
    return f'<span class="badge st-{e(status)}">{e(status)}</span>'


def _counts(records: list[dict]) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for r in records:
        s = r.get("status")
        counts[s if s in counts else "error"] += 1
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
    no_failure = counts["fail"] == 0 and counts["error"] == 0
    # Every manifest entry is expected on every target that ran (as pass, fail, unsupported or
    # error); a missing record is a check that did not run, so the page cannot say "all passed".
    missing = [f"{v.id} on {t}" for v in run.variants if v.entry for t in run.targets
               if t not in v.records]
    ok = bool(records) and no_failure and not missing
    verdict = ("PASS — all expected checks passed" if ok else
               "NO RESULTS" if not records else
               f"FAIL — {counts['fail']} failed, {counts['error']} errors" if not no_failure else
               f"INCOMPLETE — no check failed, but {len(missing)} expected result(s) are missing")
    chips = " ".join(f'{_badge(s)} {counts[s]}' for s in STATUSES)
    out = ['<h1>edgepipe run report</h1>',
           f'<div class="verdict {"ok" if ok else "bad"}" id="verdict">{e(verdict)}</div>',
           f'<p>{chips}</p>']

    warnings = list(run.warnings)
    summary = run.results.get("summary") or {}
    if any(s in summary and summary[s] != counts[s] for s in STATUSES) or (
            "ok" in summary and bool(summary["ok"]) != no_failure):
        warnings.append(f"results.json summary {json.dumps(summary)} disagrees with its records "
                        f"({json.dumps(counts)}, ok={no_failure}).")
    manifest_path = run.run_dir / "manifest.json"
    sha = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    ran = run.results.get("manifest_sha256")
    if ran and ran != sha:
        warnings.append(f"results.json was produced from another manifest (sha256 {ran[:12]}…, "
                        f"this manifest.json is {sha[:12]}…).")
    if missing:
        warnings.append(f"{len(missing)} expected result(s) missing: " + ", ".join(missing[:8])
                        + (", …" if len(missing) > 8 else ""))
    not_finite = [f"{v.id} ({', '.join(where)})" for v in run.variants
                  for where in [run.where_not_finite(v)] if where]
    if not_finite:
        warnings.append(f"{len(not_finite)} variant(s) have NaN or infinite values in their "
                        "outputs (saved, or the Keras reference's); their plots and recomputed "
                        "errors use the finite values only: "
                        + ", ".join(not_finite[:8]) + (", …" if len(not_finite) > 8 else ""))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    written = datetime.fromtimestamp((run.run_dir / "results.json").stat().st_mtime,
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
    for w in warnings:
        out.append(f'<p class="warn">⚠ {e(w)}</p>')

    out.append('<h3>Targets</h3><table><thead><tr><th>target</th><th>runtime</th>'
               '<th>version</th><th>kernels</th><th>machine</th><th>system</th><th>python</th>'
               '<th>numpy</th><th>seconds</th>'
               + "".join(f"<th>{e(s)}</th>" for s in STATUSES) + "</tr></thead><tbody>")
    for t in run.targets:
        info = (run.results.get("targets") or {}).get(t) or {}
        rt, pf = info.get("runtime") or {}, info.get("platform") or {}
        c = _counts([r for r in records if r.get("target") == t])
        out.append(f"<tr><td><b>{e(t)}</b></td><td>{e(rt.get('name', '–'))}</td>"
                   f"<td>{e(rt.get('version', '–'))}</td><td>{e(rt.get('kernels', '–'))}</td>"
                   f"<td>{e(pf.get('machine', '–'))}</td><td>{e(pf.get('system', '–'))}</td>"
                   f"<td>{e(pf.get('python', '–'))}</td><td>{e(pf.get('numpy', '–'))}</td>"
                   f'<td class="num">{e(fmt(info.get("seconds")))}</td>'
                   + "".join(f'<td class="num">{c[s]}</td>' for s in STATUSES) + "</tr>")
    if not run.targets:
        out.append(f'<tr><td colspan="{9 + len(STATUSES)}">no target ran</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _cell(run: Run, v: Variant, target: str) -> str:
    record = v.records.get(target)
    if record is None:
        return '<td class="cell st-missing">not run</td>'
    status = record["status"]
    metrics = record.get("metrics") or {}
    lines = []
    if metrics.get("max_abs_error") is not None:
        lines.append(f"max|Δ| {fmt(metrics['max_abs_error'])}")
    elif "max_abs_error" in metrics:  # the runner writes what JSON cannot hold as null
        lines.append("max|Δ| not finite")
    bad = run.not_finite(v, target)
    if bad:
        lines.append(f"⚠ {sum(bad[k] for k in ('NaN', '+inf', '-inf'))} not finite")
    if metrics.get("steps") is not None and v.mode in INT_MODES:
        lines.append(f"{fmt(metrics['steps'])} steps")
    delta = _task_delta(metrics.get("task"))
    if delta:
        lines.append(delta)
    body = "".join(f'<span class="m">{e(x)}</span>' for x in lines)
    reason = record.get("reason") or ""
    if status in ("unsupported", "error") and reason:
        short = reason if len(reason) <= 70 else reason[:67] + "…"
        body += f'<span class="why">{e(short)}</span>'
    return (f'<td class="cell st-{e(status)}" title="{e(reason)}">'
            f'<a href="#{anchor(v.id)}"><b>{e(status)}</b>{body}</a></td>')


def _host_latency(v: Variant) -> float | None:
    """Median single-sample invoke on `host` (XNNPACK), in ms, when it ran there."""
    record = v.records.get("host") or {}
    if record.get("status") not in ("pass", "fail"):
        return None
    return (record.get("metrics") or {}).get("latency_ms")


def _ratio(value, base) -> str:
    return f"{value / base:.2f}×" if value and base else "–"


def _matrix(run: Run) -> str:
    float32 = {v.model: v for v in run.variants if v.mode == "float32"}
    out = ['<h2>Parity matrix</h2>',
           '<p class="small legend">'
           + "".join(f"<span>{_badge(s)}</span>" for s in (*STATUSES, "missing"))
           + ' max|Δ| = max |variant − keras| in output units · steps = max|Δ| / output '
           'quantization step (int modes) · Δ = task metric of Keras − variant (positive: '
           'variant worse; pt = percentage points) · ms = median single-sample invoke on host '
           'after a warm-up; × = against the float32 variant. Click a cell for details.</p>',
           '<div class="scroll"><table class="matrix"><thead><tr><th>model</th><th>mode</th>'
           '<th>bytes</th><th>×</th><th>host ms</th><th>×</th>'
           + "".join(f"<th>{e(t)}</th>" for t in run.targets) + "</tr></thead><tbody>"]
    previous = None
    for v in run.variants:
        size = v.entry.get("bytes")
        base = float32.get(v.model)
        size_ratio = _ratio(size, base.entry.get("bytes") if base else None)
        size_text = f"{size:,}" if isinstance(size, int) else "–"
        latency = _host_latency(v)
        latency_text = f"{latency:.3g}" if latency else "–"
        latency_ratio = _ratio(latency, _host_latency(base) if base else None)
        entry_status = v.entry.get("status")
        mode_note = ("" if entry_status in (None, "converted") else
                     f' <span class="small">({e(entry_status)})</span>')
        first = ' class="first"' if previous is not None and v.model != previous else ""
        previous = v.model
        out.append(f"<tr{first}><td>{e(v.model)}</td><td>{e(v.mode)}{mode_note}</td>"
                   f'<td class="num">{size_text}</td><td class="num">{size_ratio}</td>'
                   f'<td class="num">{latency_text}</td><td class="num">{latency_ratio}</td>'
                   + "".join(_cell(run, v, t) for t in run.targets) + "</tr>")
    if not run.variants:
        out.append(f'<tr><td colspan="{6 + len(run.targets)}">no entries</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _host_vs_ref(run: Run, a: str = "host", b: str = "host-ref") -> str:
    out = [f"<h2>{e(a)} vs {e(b)}</h2>"]
    missing = [t for t in (a, b) if t not in run.targets]
    if missing:
        out.append(f'<p class="meta">No comparison: {e(" and ".join(missing))} did not run.</p>')
        return "\n".join(out)
    rows = _differences(run, a, b)
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
                   f'<td>{_badge(r["status"][a])}</td><td>{_badge(r["status"][b])}</td>'
                   f'<td class="num" id="diff-{anchor(vid)[2:]}"{value}>{fmt(r["max_abs"])}</td>'
                   f'<td class="num">{fmt(r["steps"])}</td><td class="num">{fmt(r["mean_abs"])}'
                   f'</td><td class="num">{differing}</td><td>{e(r["note"])}</td></tr>')
    if not rows:
        out.append('<tr><td colspan="8">no entry has results on both targets</td></tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _flatten(metrics: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in metrics.items():
        if key == "boundary" and not prefix:
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(rows: list[tuple[str, list[str]]], columns: list[str], first: str) -> str:
    head = f"<th>{e(first)}</th>" + "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "".join(f"<tr><td>{e(name)}</td>" + "".join(cells) + "</tr>" for name, cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _value_cell(value) -> str:
    return f'<td class="num">{e(fmt(value))}</td>'


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


def _variant(run: Run, v: Variant, plots: "Plots", budget: list[int]) -> str:
    dataset_name, dataset = run.dataset(v)
    task = run.task(v)
    classifier = task == "classification"
    tol = v.entry.get("tolerance") or next(
        (r.get("tolerance") for r in v.records.values() if r.get("tolerance")), {}) or {}
    targets = [t for t in run.targets if t in v.records]
    badges = " ".join(f'{e(t)} {_badge(v.records[t].get("status"))}' for t in targets)
    worst_err = [(v.records[t].get("metrics") or {}).get("max_abs_error") for t in targets]
    worst_err = [x for x in worst_err if isinstance(x, (int, float))]
    not_finite = run.where_not_finite(v)
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
        facts.append(f"manifest status {_badge_plain(entry.get('status'))}")
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
            f"<li><b>{e(t)}</b> {_badge(r.get('status'))} {e(r['reason'])}</li>"
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


def _checks_and_metrics(v: Variant, targets: list[str]) -> str:
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
                cells.append(f'<td class="num st-{"pass" if good else "fail"}">'
                             f'{e(fmt(c.get("value")))} / {e(fmt(c.get("bound")))} '
                             f'{"✓" if good else "✗"}</td>')
            rows.append((name, cells))
        out.append("<h3>Checks (value / bound)</h3>" + _table(rows, targets, "check"))
    flat = {t: {"invoke": v.records[t].get("invoke"), "seconds": v.records[t].get("seconds"),
                **_flatten(v.records[t].get("metrics") or {})} for t in targets}
    keys = list(dict.fromkeys(k for t in targets for k in flat[t]))
    keys = [k for k in keys if any(flat[t].get(k) is not None for t in targets)]
    if keys:
        out.append("<h3>Metrics</h3>" + _table(
            [(k, [_value_cell(flat[t].get(k)) for t in targets]) for k in keys],
            targets, "metric"))
    return "\n".join(out)


def _boundary(run: Run, v: Variant, targets: list[str]) -> str:
    boundary = {t: (v.records[t].get("metrics") or {}).get("boundary") for t in targets}
    boundary = {t: b for t, b in boundary.items() if b}
    model_boundary = run.model(v).get("boundary")
    if not (boundary or model_boundary):
        return ""
    out = ["<h3>Boundary analysis</h3>"]
    if model_boundary:
        steps = (model_boundary.get("input_steps") or {}).get(v.mode)
        out.append(f'<p class="small">kink {e(fmt(model_boundary.get("kink")))} · layers '
                   f'{e(", ".join(model_boundary.get("layers") or []))}'
                   + (f" · input steps for {e(v.mode)}: {e(fmt(steps))}" if steps else "")
                   + "</p>")
    if boundary:
        keys = ["kink", "input_step", "near_samples", "near_error_share"]
        keys += [k for b in boundary.values() for k in b if k not in keys]
        out.append(_table([(k, [_value_cell(boundary[t].get(k)) for t in boundary])
                           for k in keys], list(boundary), "boundary"))
        out.append('<p class="small">near_samples: samples with a pre-activation within one '
                   "input quantization step of the kink;<br>near_error_share: the share of the "
                   "total squared error they carry.</p>")
    else:
        out.append('<p class="small">no boundary metrics in the results</p>')
    return "\n".join(out)


def _badge_plain(status: str | None) -> str:
    cls = {"converted": "pass", "failed": "error"}.get(status or "", "unsupported")
    return f'<span class="badge st-{cls}">{e(status or "?")}</span>'


def _plots_and_worst(run: Run, v: Variant, plots: "Plots", budget: list[int], tol: dict,
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
        bad = run.not_finite(v, target)
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

    err, finite = _errors(ref, outputs)
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
        hist, scatter = plots.get(
            (ref, outputs, worst, tol.get("max_abs"), plot_target, classifier),
            lambda plt: (_histogram(plt, err[finite], tol.get("max_abs"), plot_target),
                         _scatter(plt, ref, outputs, worst, plot_target, classifier)))
        out.append(f'<div class="plots"><img alt="histogram of absolute errors" src="{hist}">'
                   f'<img alt="keras vs variant scatter" src="{scatter}"></div>')
    else:
        out.append(f'<p class="meta">Plots omitted: only {MAX_PLOTTED} variants get plots '
                   "(failing ones first).</p>")

    labels = run.labels(v)
    r, o = _as_samples(ref), _as_samples(outputs)
    y_std = dataset.get("y_std") if not classifier else None
    columns = ["sample", "label", "keras", "variant", "max |Δ|"]
    if y_std:
        columns.append("max |Δ| (original units)")
    rows = []
    for i in worst:
        cells = [f"<td>{e(_label_text(labels, i))}</td>",
                 f"<td>{e(_sample_text(r[i], classifier))}</td>",
                 f"<td>{e(_sample_text(o[i], classifier))}</td>"]
        errors = [float(per_sample[i])] + ([float(per_sample[i]) * float(y_std)] if y_std else [])
        cells += [_value_cell(x) if whole[i] else '<td class="num warn">not finite</td>'
                  for x in errors]
        rows.append((str(i), cells))
    out.append(f"<h3>Worst samples ({e(plot_target)})</h3>" + _table(rows, columns[1:], "sample"))
    if y_std:
        out.append(f'<p class="small">Values in the model\'s output units (standardised); '
                   f"original units = value × y_std ({fmt(float(y_std))}) + y_mean.</p>")
    return "\n".join(out)


class Plots:
    """The variants' plots. Drawing one takes matplotlib about 0.1 s, so each is kept in
    `.edgepipe/plots/` under the sha256 of what it shows (and of this file): a report of
    unchanged results draws nothing and does not import matplotlib."""

    def __init__(self, run_dir: Path):
        self.folder = run_dir / ".edgepipe" / "plots"
        self.used: set[Path] = set()
        self._plt = None

    def get(self, shown: tuple, draw) -> tuple:
        """The data URIs for `shown` (arrays and values), from the cache or from draw(plt)."""
        h = hashlib.sha256(code_version("pipeline/report.py").encode())
        for part in shown:
            h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray)
                     else json.dumps(part, default=str).encode())
            h.update(b"\0")
        path = self.folder / f"{h.hexdigest()}.json"
        self.used.add(path)
        try:
            return tuple(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
        with self.plt.rc_context(PLOT_STYLE):
            images = draw(self.plt)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, list(images))
        except OSError:  # a read-only cache only costs the redraw
            pass
        return images

    @property
    def plt(self):
        if self._plt is None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            self._plt = plt
        return self._plt

    def prune(self) -> None:
        """Forget the plots this report no longer shows (files named as `get` names them)."""
        prune(self.folder, PLOT_NAME, {path.name for path in self.used})


def render(run: Run) -> str:
    budget = [MAX_PLOTTED]
    # Failing variants get plots first when the budget is short; the page keeps matrix order.
    order = sorted(run.variants, key=lambda v: not v.failing)
    plots = Plots(run.run_dir)
    sections = {v.id: _variant(run, v, plots, budget) for v in order}
    plots.prune()
    title = f"edgepipe report: {run.run_dir.name}"
    body = [_header(run), _matrix(run), _host_vs_ref(run),
            '<h2>Variants</h2><p class="small">Failing variants are open; click a title to open '
            "or close it.</p>", *(sections[v.id] for v in run.variants)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: Path, junit: bool = False) -> Path:
    """Write `run_dir/report.html` from the run folder's manifest and results (with `junit`,
    junit.xml first); return its path. When they cannot be written, the ones already there are
    removed: a page of earlier results must not stay looking current."""
    run_dir = Path(run_dir)
    dest = run_dir / "report.html"
    try:
        run = load_run(run_dir)
        if junit:
            write_junit(run_dir, run.results)
        page = render(run)
        with atomic_path(dest) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except Exception:
        for stale in [dest, run_dir / "junit.xml"] if junit else [dest]:
            with contextlib.suppress(OSError):  # a link is removed, never what it points to
                if stale.is_symlink() or stale.is_file():
                    stale.unlink()
        raise
    return dest
