"""Hostile run folders: links out of the folder where edgepipe keeps its own files."""

from bad_inputs import Case


def _linked(rel: str, target: str = ""):
    """A finished run folder whose `rel` links to the victim folder (or a file in it)."""

    def setup(folder):
        folder.run_folder()
        folder.link(f"run/{rel}", folder.victim / target if target else folder.victim)

    return setup


CASES = [
    Case("report-partial-link", "the run folder's .partial links to a folder of the user's "
         "photos", ("report", "run"), 2, "run/.partial is a symbolic link",
         _linked(".partial")),
]
