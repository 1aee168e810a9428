"""Every bad-input case (tests/bad_inputs.py) as the real command: its exit code, one line, no
traceback, no "internal error", no hang, nothing outside its folder touched; and
docs/bad-inputs.md lists exactly these cases (`make bad-inputs-table` regenerates it: this test
file, with EDGEPIPE_BAD_INPUTS_TABLE naming the file to write, once every case has run).

The counts over all cases that ran are printed at the end of the test run (conftest.py).
"""

import re
import shutil
import subprocess
import sys

import pytest
from bad_inputs import OUTCOMES, all_cases, cell, run_case
from tiny_bundle import REPO

CASES = all_cases()
DOC = REPO / "docs" / "bad-inputs.md"


@pytest.fixture(scope="session")
def finished_run(tiny_bundle, tmp_path_factory):
    """The tiny bundle after `edgepipe parity --target host`: a run folder with results."""
    from bad_inputs import EDGEPIPE

    run = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(tiny_bundle[0], run)
    done = subprocess.run([EDGEPIPE, "parity", str(run), "--target", "host"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case, tmp_path, request):
    outcome = run_case(case, tmp_path, request.getfixturevalue)
    OUTCOMES.append(outcome)
    shown = f"{case.command}\nstdout: {outcome.stdout[-1500:]}\nstderr: {outcome.stderr[-3000:]}"
    assert not outcome.hung, f"no answer within the time limit: {shown}"
    assert not outcome.outside_touched, f"touched outside its folder: {outcome.outside_touched}"
    assert not outcome.traceback, shown
    assert not outcome.internal_error, shown
    assert outcome.exit == case.exit, shown
    assert case.expect in outcome.line, shown
    if case.exit == 2:
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), shown


def test_the_table_lists_every_case():
    """docs/bad-inputs.md is made from these cases (tools/bad_inputs_table.py): one row each,
    with the command and exit code, and a line that holds the expected fragment."""
    assert len(CASES) >= 60
    assert DOC.is_file(), "docs/bad-inputs.md is missing: run `make bad-inputs-table`"
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    stale = "docs/bad-inputs.md is stale: run `make bad-inputs-table`"
    assert set(rows) == {c.id for c in CASES}, stale
    for case in CASES:
        cells = [c.strip() for c in rows[case.id].strip("|").split(" | ")]
        assert cells[3] == str(case.exit), (stale, case.id)
        assert cell(case.expect) in cells[4], (stale, case.id)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
