"""Hostile run folders: links out of the folder, and special files, where edgepipe keeps and
cleans up its own files. Each is refused before anything is read, written or removed."""

import os

from bad_inputs import Case


def _linked(rel: str, target: str = ""):
    """A finished run folder whose `rel` links to the victim folder (or a file in it)."""

    def setup(folder):
        folder.run_folder()
        folder.link(f"run/{rel}", folder.victim / target if target else folder.victim)

    return setup


def _fifo(rel: str):
    def setup(folder):
        folder.run_folder()
        path = folder.path / "run" / rel
        path.unlink()
        os.mkfifo(path)

    return setup


LINK = "is a symbolic link"
COMMANDS = {"report": ("report", "run"), "parity": ("parity", "run", "--target", "host"),
            "run": ("run", "--force", "--out", "run")}
LINKS = {  # rel: (what it is, link target in the victim folder)
    ".partial": ("the run folder's .partial links to a folder of the user's photos", ""),
    ".edgepipe/plots": ("its .edgepipe/plots links to a project folder", ""),
    ".edgepipe": ("its .edgepipe links to a project folder", ""),
    "results": ("its results folder links out", ""),
    "results/outputs/host": ("its results/outputs/host links out", ""),
    "results/.partial": ("its results/.partial links out", ""),
    ".edgepipe/stages.json": ("its stage record links to a file outside", "stages.json"),
    "report.html": ("its report.html links to a file outside", "report.html"),
    "results.json": ("its results.json links to a file outside", "results.json"),
}


def _name(rel: str) -> str:
    return rel.strip(".").replace("/.", "-").replace("/", "-").replace(".", "-")


CASES = [
    Case(f"folder-{command}-{_name(rel)}-link", what, argv, 2, f"run/{rel} {LINK}",
         _linked(rel, target))
    for rel, (what, target) in LINKS.items() for command, argv in COMMANDS.items()
    if (command, rel) not in {("run", "results/outputs/host"), ("run", "report.html")}
] + [
    Case("folder-report-results-fifo", "the run folder's results.json is a FIFO",
         COMMANDS["report"], 2, "run/results.json is not a regular file or folder",
         _fifo("results.json")),
    Case("folder-parity-manifest-fifo", "the run folder's manifest.json is a FIFO",
         COMMANDS["parity"], 2, "run is not a run folder", _fifo("manifest.json")),
]


def _results_file(text: str):
    """A finished run folder with one more target's results file holding `text`."""

    def setup(folder):
        folder.run_folder()
        folder.write("run/results/board.json", text)

    return setup


CASES += [
    Case("folder-parity-results-not-json", "a target's results file in results/ is cut short",
         COMMANDS["parity"], 2, "run/results/board.json: not a results file (not JSON",
         _results_file('{"target": "board", "resu')),
    Case("folder-parity-results-no-target", "a results file without its target",
         COMMANDS["parity"], 2, "Expected target in run/results/board.json to be a string",
         _results_file('{"results": []}')),
    Case("folder-parity-results-bad-record", "a results file whose record has status 'ok'",
         COMMANDS["parity"], 2, "Expected results[0].status in run/results/board.json to be one of",
         _results_file('{"target": "board", "results": [{"id": "mlp-float32", "target": '
                       '"board", "model": "mlp", "mode": "float32", "status": "ok"}]}')),
]
