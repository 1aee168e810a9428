"""The plots of an entry's section (an error histogram, Keras vs variant), drawn with
matplotlib and kept in the run folder's plot cache."""

import base64
import hashlib
import io
import json
import multiprocessing
import re
import secrets
import warnings
from pathlib import Path

import numpy as np

from ...core.files import prune, write_json
from ...device_tests.schema import RunFolder
from ..stages import code_key
from .compare import as_samples, errors
from .text import fmt

FIGSIZE = (3.2, 2.4)
DPI = 100
# Fixed margins, not tight_layout(): it measured every tick label and took 60% of the plot time.
MARGINS = {"left": 0.2, "right": 0.95, "bottom": 0.18, "top": 0.9}
MAX_SCATTER = 20_000      # points per scatter, beyond that a fixed subsample (worst kept)
PLOT_NAME = re.compile(r"[0-9a-f]{64}\.json")  # a plot's file in the cache: its sha256
PLOT_STYLE = {"font.size": 7, "axes.titlesize": 8, "axes.labelsize": 7, "legend.fontsize": 6.5}


# A page with fewer plots to draw than this draws them here: starting a process and importing
# matplotlib there costs about as much as drawing this many.
MIN_PARALLEL = 16


class Painter:
    """Draws the plots a page found nowhere in its cache, once the page is rendered: until then
    each stands in the page as a placeholder, and `finish` puts the images in. Matplotlib's
    tick layout is most of a cold report's time, so with `workers` > 1 and enough plots to
    draw they are drawn in that many processes."""

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.asked: dict = {}  # cache path -> (placeholders, draw, args)
        self._nonce = secrets.token_hex(8)  # no text in a results file can pose as one

    def ask(self, path: Path, draw, args: tuple, images: int) -> tuple:
        if path not in self.asked:
            marks = tuple(f"edgepipe-plot-{self._nonce}-{len(self.asked)}-{i}"
                          for i in range(images))
            self.asked[path] = (marks, draw, args)
        return self.asked[path][0]

    def finish(self, page: str) -> str:
        """`page` with every placeholder replaced by its image, each also kept in its cache."""
        asked = list(self.asked.items())
        work = [(draw, args) for _, (_, draw, args) in asked]
        if self.workers > 1 and len(work) >= MIN_PARALLEL:
            context = multiprocessing.get_context("spawn")  # TensorFlow may be loaded here
            with context.Pool(min(self.workers, len(work))) as pool:
                drawn = pool.map(_paint, work, chunksize=1)
        else:
            drawn = [_paint(item) for item in work]
        for (path, (marks, _, _)), images in zip(asked, drawn, strict=True):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, list(images))
            except OSError:  # a read-only cache only costs the redraw
                pass
            for mark, image in zip(marks, images, strict=True):
                page = page.replace(mark, image)
        self.asked = {}
        return page


def _paint(item: tuple) -> tuple:
    """draw(plt, *args) in PLOT_STYLE: here, or in a worker process of `Painter.finish`."""
    draw, args = item
    plt = _pyplot()
    with plt.rc_context(PLOT_STYLE):
        return tuple(draw(plt, *args))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Plots:
    """A section's plots. Drawing one takes matplotlib about 0.1 s, so each is kept in the run
    folder's plot cache under the sha256 of what it shows (and of the code that draws it): a
    report of unchanged results draws nothing and does not import matplotlib. `painter`
    draws those the cache lacks (one per page, shared by its sections)."""

    def __init__(self, run_dir: Path, painter: Painter, folder: Path | None = None):
        self.folder = folder or RunFolder(run_dir).plots_dir
        self.painter = painter
        self.used: set[Path] = set()

    def get(self, shown: tuple, draw, *args, images: int = 1) -> tuple:
        """The data URIs (`images` of them) for `shown` (arrays and values): from the cache, or
        placeholders that the painter replaces with draw(plt, *args). `draw` is a module-level
        function and `args` plain data: they may be sent to another process."""
        # The code that draws, derived (its import closure): any edit to it draws again.
        h = hashlib.sha256(code_key(__name__).encode())
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
        return self.painter.ask(path, draw, args, images)

    def prune(self) -> None:
        """Forget the plots this report no longer shows (files named as `get` names them)."""
        prune(self.folder, PLOT_NAME, {path.name for path in self.used})


def _png(fig, plt) -> str:
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():  # a target name the font lacks glyphs for: boxes drawn
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def log_y(ax) -> None:
    """A log-scale y axis, its ticks labelled as plain numbers (1e-05): matplotlib's default
    labels are mathtext, whose parser and the minor ticks took a third of a report's plotting
    time."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def histogram(plt, err: np.ndarray, bound, target: str) -> str:
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
                log_y(ax)
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


def scatter(plt, ref: np.ndarray, out: np.ndarray, worst: list[int], target: str,
            classifier: bool) -> str:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    try:
        r, o = as_samples(ref), as_samples(out)
        shown = errors(ref, out)[1]  # the finite part: NaN and infinities cannot be placed
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
