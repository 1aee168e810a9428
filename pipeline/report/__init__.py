"""The reports of a run folder (docs/bundle.md): `DIR/report.html`, `DIR/junit.xml` and the
console tables.

report.html is one self-contained page: it reads manifest.json, the merged results.json and the
`.npy` files they name (Keras reference outputs, labels, each variant's saved outputs) and opens
from disk with no network: inline CSS, plots as base64 PNG data URIs. Data in, page out: nothing
here decides pass or fail, it shows what the runner decided and recomputes from the saved
outputs what it can.

    shape.py    the shape of manifest.json and results.json, checked before anything reads them
    read.py     reading a run folder: Run, ReportEntry, the .npy files
    compare.py  numbers from saved outputs: NaN and infinities, host vs host-ref
    plots.py    matplotlib, and the plot cache
    html.py     the page's building blocks; page.py the page; entries.py one section per entry
    junit.py    junit.xml
    console.py  rich tables for the CLI
"""

import contextlib
from pathlib import Path

from ...core.files import atomic_path
from ...device_tests.schema import RunFolder
from .compare import target_differences
from .junit import write_junit
from .page import render
from .read import load_run

__all__ = ["load_run", "render", "target_differences", "write_junit", "write_report"]


def write_report(run_dir: Path, junit: bool = False, workers: int = 1) -> Path:
    """Write `run_dir/report.html` from the run folder's manifest and results (with `junit`,
    junit.xml first), drawing its new plots in `workers` processes; return its path. When
    they cannot be written, the ones already there are removed: a page of earlier results must
    not stay looking current."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    dest = folder.report
    try:
        run = load_run(run_dir)
        if junit:
            write_junit(run_dir, run.results)
        page = render(run, workers)
        with atomic_path(dest) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except Exception:
        for stale in [dest, folder.junit] if junit else [dest]:
            with contextlib.suppress(OSError):  # a link is removed, never what it points to
                if stale.is_symlink() or stale.is_file():
                    stale.unlink()
        raise
    return dest
