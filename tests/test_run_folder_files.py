"""core/files.py in a folder that may be hostile: nothing outside it is written or removed,
and a clean-up removes only what edgepipe's naming proves it made, for writers that are dead."""

import os
import re
import subprocess
import sys

import pytest

from edgepipe.core.errors import EdgepipeError
from edgepipe.core.files import (
    PARTIAL,
    atomic_path,
    check_run_folder,
    own_name,
    prune,
    remove_leftovers,
    write_json,
)

SHAPES = ("2023.jpg", "20231201.csv", "1.x", "12345.tmp", "4194305.json", "package.json",
          "edgepipe-1-2-notours.json", "edgepipe-x.partial")


def _victim(folder):
    folder.mkdir()
    for name in SHAPES:
        (folder / name).write_text(name)
    return {p.name: p.read_text() for p in folder.iterdir()}


def _state(folder):
    return {p.name: p.read_text() for p in folder.iterdir()}


def _dead_writer_name(name: str) -> str:
    """An own name of a process that has ended (a child that printed its own_name)."""
    code = f"from edgepipe.core.files import own_name; print(own_name({name!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_linked_partial_folder_is_refused_and_nothing_outside_changes(tmp_path):
    before = _victim(tmp_path / "victim")
    run = tmp_path / "run"
    run.mkdir()
    (run / PARTIAL).symlink_to(tmp_path / "victim")
    with pytest.raises(EdgepipeError, match=re.escape(f"{run / PARTIAL} is a symbolic link")):
        write_json(run / "results.json", {"ok": True})
    assert _state(tmp_path / "victim") == before
    assert not (run / "results.json").exists()


def test_leftovers_of_dead_writers_go_and_nothing_else(tmp_path):
    partial = tmp_path / PARTIAL
    before = _victim(partial)
    dead = _dead_writer_name("m.tflite")
    (partial / dead).write_text("half")
    live = own_name("n.tflite")  # this process: alive
    (partial / live).write_text("being written")
    linked = _dead_writer_name("l.json")
    (partial / linked).symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text("not ours")
    remove_leftovers(partial)
    assert not (partial / dead).exists()
    assert (partial / live).read_text() == "being written"
    assert (partial / linked).is_symlink() and (tmp_path / "elsewhere.json").exists()
    assert {k: v for k, v in _state(partial).items() if k in before} == before


def test_a_dead_writers_name_is_told_from_a_reused_pid(tmp_path):
    """The name carries the writer's start time: a live process with the same pid is not it."""
    pid, start = os.getpid(), own_name("x").split("-")[2]
    (tmp_path / f"edgepipe-{pid}-{int(start) + 1}-{'0' * 16}.x").write_text("old")
    remove_leftovers(tmp_path)
    assert not list(tmp_path.iterdir())


def test_prune_removes_only_its_own_shape_of_name(tmp_path):
    plots = tmp_path / "plots"
    before = _victim(plots)
    keep, drop = "a" * 64 + ".json", "b" * 64 + ".json"
    for name in (keep, drop):
        (plots / name).write_text("[]")
    prune(plots, re.compile(r"[0-9a-f]{64}\.json"), {keep})
    assert set(_state(plots)) == set(before) | {keep}


def test_prune_does_not_follow_a_linked_folder(tmp_path):
    before = _victim(tmp_path / "victim")
    (tmp_path / "plots").symlink_to(tmp_path / "victim")
    with pytest.raises(EdgepipeError, match="is a symbolic link"):
        prune(tmp_path / "plots", re.compile(r".*"), set())
    assert _state(tmp_path / "victim") == before


def test_a_file_swapped_for_a_link_while_written_is_not_renamed_into_place(tmp_path):
    (tmp_path / "outside").write_text("outside")
    dest = tmp_path / "m.json"
    with pytest.raises(EdgepipeError, match="was replaced"):
        with atomic_path(dest) as tmp:
            tmp.unlink()
            tmp.symlink_to(tmp_path / "outside")
    assert not dest.exists() and (tmp_path / "outside").read_text() == "outside"


@pytest.mark.parametrize("make", ["symlink", "fifo"])
def test_a_run_folder_with_a_link_or_fifo_anywhere_is_refused(tmp_path, make):
    deep = tmp_path / "run" / "results" / "outputs"
    deep.mkdir(parents=True)
    if make == "symlink":
        (deep / "host").symlink_to(tmp_path)
    else:
        os.mkfifo(deep / "host")
    with pytest.raises(EdgepipeError, match=re.escape(str(deep / "host"))):
        check_run_folder(tmp_path / "run")


WRITERS = """
import sys
from pathlib import Path
from edgepipe.core.files import write_json
for i in range(int(sys.argv[2])):
    write_json(Path(sys.argv[1]) / f"{sys.argv[3]}-{i}.json", {"i": i})
"""


def test_writers_in_one_folder_at_once_all_succeed(tmp_path):
    """Each writer removes `.partial` when it finds it empty; another may be just about to
    create its file there (as two model jobs writing into tflite/ at once): both must succeed,
    and no `.partial` is left."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITERS, str(tmp_path), "300", name],
                                stderr=subprocess.PIPE, text=True) for name in "abc"]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    assert len(list(tmp_path.glob("*.json"))) == 900
    assert not (tmp_path / PARTIAL).exists()
