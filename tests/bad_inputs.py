"""Bad input as data: each `Case` is one input a careless user or an attacker gives one command,
with the exit code and the one line it must get.

`tests/test_bad_input_table.py` runs every case as the real command (a subprocess, as a user
types it) in a folder of its own, its working directory, beside a victim folder of files of every
name shape. Each case must end in its exit code, with no traceback, no "internal error", within a
time limit (a hang counts), and leave every file outside its folder as it was. Exit 2 (bad input)
means exactly one line on stderr. `tools/bad_inputs_table.py` renders docs/bad-inputs.md from the
same cases and the lines they really print.

The cases live in `tests/bad_inputs_<area>.py`, one module per area, each with a `CASES` list.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))
RUNNER = (sys.executable, "-m", "edgepipe.device_tests.runner")
TIME_LIMIT = 120.0  # seconds: no bad input may take longer to be refused (a hang)

# Files outside the run folder that a hostile run folder links to: every name shape that a
# clean-up by pattern could mistake for its own (digits and a dot, JSON, npy, tflite, tmp).
VICTIM_FILES = ("2023.jpg", "20231201.csv", "1.partial", "12345.tmp", "99999999.x.tflite",
                "4194305.json", "package.json", "tsconfig.json", "results.json", "manifest.json",
                "host.json", "host.0.partial", "a.npy", "model.keras", "report.html",
                "junit.xml", "stages.json", ".hidden", "notes.txt")


@dataclass(frozen=True)
class Case:
    """One bad input. `argv` follows `edgepipe` (or `python -m edgepipe.device_tests.runner`
    when `tool` is "runner"); its paths are relative to the case's folder, which `setup` fills."""

    id: str          # unique, readable: "config-seed-negative"
    input: str       # what is wrong, as the table says it: "seed = -1 in [run]"
    argv: tuple[str, ...]
    exit: int        # 2 bad input, 1 a check that ran and failed (or an entry error), 0 fine
    expect: str      # a fragment of the line it must print (stderr)
    setup: Callable[[Folder], None] | None = None
    tool: str = "edgepipe"  # or "runner"
    slow: bool = False      # imports TensorFlow or trains: the slow tier

    @property
    def command(self) -> str:
        prefix = "edgepipe" if self.tool == "edgepipe" else "python -m device_tests.runner"
        return " ".join((prefix, *self.argv))


@dataclass
class Folder:
    """A case's folder (its working directory) and what the tests' session has made once."""

    path: Path
    fixtures: Callable[[str], object] = field(repr=False)  # pytest's request.getfixturevalue

    def write(self, rel: str, content: str | bytes) -> Path:
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def npz(self, rel: str = "d.npz", **change) -> Path:
        """A small valid regression .npz (10 features), with `change`d arrays."""
        rng = np.random.default_rng(0)
        arrays = {"x_train": rng.normal(size=(40, 10)), "y_train": rng.normal(size=40),
                  "x_test": rng.normal(size=(8, 10)), "y_test": rng.normal(size=8), **change}
        path = self.path / rel
        np.savez(path, **arrays)
        return path

    def bundle(self, rel: str = "bundle") -> Path:
        """A copy of the tiny bundle (tests/tiny_bundle.py)."""
        root = self.fixtures("tiny_bundle")[0]
        return Path(shutil.copytree(root, self.path / rel))

    def run_folder(self, rel: str = "run") -> Path:
        """A copy of a finished run folder: the tiny bundle after `edgepipe parity --target
        host` (results/, results.json, junit.xml, report.html, .edgepipe/)."""
        return Path(shutil.copytree(self.fixtures("finished_run"), self.path / rel,
                                    symlinks=True))

    def link(self, rel: str, target: Path) -> Path:
        """`rel` (inside the folder) made a symlink to `target`, replacing what was there."""
        path = self.path / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target, target_is_directory=Path(target).is_dir())
        return path

    @property
    def victim(self) -> Path:
        """A folder outside the case's folder, full of files that must survive."""
        return self.path.parent / "victim"


def all_cases() -> list[Case]:
    modules = sorted(p.stem for p in HERE.glob("bad_inputs_*.py"))
    cases = [case for name in modules for case in importlib.import_module(name).CASES]
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"bad-input case ids used twice: {duplicates}"
    return cases


def make_victim(folder: Path) -> None:
    folder.mkdir()
    for name in VICTIM_FILES:
        (folder / name).write_text(f"{name}: not edgepipe's\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "2024.png").write_text("nested\n")


def snapshot(root: Path, skip: Path) -> dict:
    """{path: (kind, size, mtime, sha256)} of everything under `root` except `skip`."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if here / d != skip]
        for name in dirnames + filenames:
            path = here / name
            st = path.lstat()
            digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                      if path.is_file() and not path.is_symlink() else None)
            seen[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return seen


@dataclass
class Outcome:
    case: Case
    exit: int | None       # None: it hung
    stdout: str
    stderr: str
    seconds: float
    outside_touched: list[str]

    @property
    def hung(self) -> bool:
        return self.exit is None

    @property
    def internal_error(self) -> bool:
        return "internal error" in self.stderr

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stdout + self.stderr

    @property
    def line(self) -> str:
        """The line that holds the expected fragment (on stderr; for a case that exits 0 also on
        stdout, where a command says what it wrote), else the last stderr line."""
        lines = self.stderr.strip().splitlines()
        out = self.stdout.strip().splitlines() if self.case.exit == 0 else []
        for text in lines + out:
            if self.case.expect in text:
                return text
        return lines[-1] if lines else ""


def run_case(case: Case, root: Path, fixtures: Callable[[str], object]) -> Outcome:
    """Set the case up in `root/work` beside `root/victim`, run it, and see what it touched."""
    work = root / "work"
    work.mkdir()
    make_victim(root / "victim")
    folder = Folder(work, fixtures)
    if case.setup is not None:
        case.setup(folder)
    before = snapshot(root, skip=work)
    argv = [EDGEPIPE, *case.argv] if case.tool == "edgepipe" else [*RUNNER, *case.argv]
    env = {**os.environ, "COLUMNS": "200", "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, env=env,
                              timeout=TIME_LIMIT, stdin=subprocess.DEVNULL)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = None, _text(e.stdout), _text(e.stderr)
    seconds = time.perf_counter() - started
    after = snapshot(root, skip=work)
    touched = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return Outcome(case, code, _normal(stdout, work), _normal(stderr, work), seconds, touched)


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _normal(text: str, work: Path) -> str:
    """Paths of the case's folder shown as the user typed them: relative (the victim folder
    beside it as ../victim), so that the table is the same from one run to the next."""
    for prefix in {str(work.resolve()), str(work)}:
        text = text.replace(prefix + "/", "").replace(prefix, ".")
    for prefix in {str(work.parent.resolve()), str(work.parent)}:
        text = text.replace(prefix + "/", "../")
    return text


OUTCOMES: list[Outcome] = []  # every case run in this test session, for the figure and table


def counts(outcomes: list[Outcome]) -> dict:
    """The figure: how many cases ended in each way that must never happen."""
    return {"cases": len(outcomes),
            "internal error": sum(o.internal_error for o in outcomes),
            "tracebacks": sum(o.traceback for o in outcomes),
            "hangs": sum(o.hung for o in outcomes),
            "outside files touched": sum(len(o.outside_touched) for o in outcomes),
            "wrong exit code": sum(o.exit != o.case.exit for o in outcomes)}


def cell(text: str) -> str:
    """Text as one Markdown table cell."""
    return text.replace("|", "\\|").replace("`", "'")


def render_table(outcomes: list[Outcome]) -> str:
    """docs/bad-inputs.md: one row per case, with the line it really printed."""
    figure = ", ".join(f"{k}: {v}" for k, v in counts(outcomes).items())
    rows = ["# Bad inputs", "",
            "Generated by `make bad-inputs-table` from the cases in `tests/bad_inputs_*.py`, "
            "each run as the real command (`tests/test_bad_input_table.py`). Exit 2: bad input "
            "(one line on stderr); 1: a check ran and failed; 0: handled. Paths are relative "
            "to the folder the command ran in.", "", f"Figures: {figure}.", "",
            "| case | input | command | exit | what it prints |", "|---|---|---|---|---|"]
    for o in sorted(outcomes, key=lambda o: o.case.id):
        cells = (f"`{o.case.id}`", cell(o.case.input), f"`{cell(o.case.command)}`",
                 str(o.exit), cell(o.line))
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows) + "\n"
