"""pytest options for the parity suite: `pytest device_tests --bundle DIR [--runtime NAME]
[--kernels default|reference] [--entry-timeout SECONDS]`.

Self-contained: works from the repository and from a folder holding only a copy of
`device_tests/` and a bundle. It registers no markers and needs none.
"""

from __future__ import annotations

import pytest

from .bundle import BundleError, load_bundle
from .interpreters import KERNELS, RuntimeUnavailable, find_runtime
from .isolation import check_timeout
from .runner import run_bundle


def pytest_addoption(parser):
    group = parser.getgroup("device_tests", "edgepipe parity suite")
    group.addoption("--bundle", default=None, metavar="DIR",
                    help="the bundle folder (holds manifest.json) whose entries to check")
    group.addoption("--runtime", default=None, metavar="NAME",
                    help="ai_edge_litert | tflite_runtime | tensorflow (default: the first "
                         "installed, in that order)")
    group.addoption("--kernels", default="default", choices=KERNELS,
                    help="default (XNNPACK where the runtime applies it) or reference")
    group.addoption("--entry-timeout", type=float, default=None, metavar="SECONDS",
                    help="time limit for each entry (default 600); the entries run in a worker "
                         "process, so a crash or a hang fails that entry only")


def pytest_configure(config):
    """Refuse an unusable bundle or a missing runtime once, as a usage error, before collecting."""
    path = config.getoption("bundle", default=None)
    if path is None:
        return
    try:
        config._device_tests_bundle = load_bundle(path)
        find_runtime(config.getoption("runtime"), config.getoption("kernels"))
        if config.getoption("entry_timeout") is not None:
            check_timeout(config.getoption("entry_timeout"))
    except (BundleError, RuntimeUnavailable, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def parity_results(pytestconfig) -> dict:
    """Every entry of the bundle run once; the results document's records by entry id."""
    bundle = getattr(pytestconfig, "_device_tests_bundle", None)
    if bundle is None:
        pytest.skip("no --bundle given: run `python -m pytest device_tests --bundle BUNDLE_DIR`")
    document = run_bundle(bundle.root, runtime=pytestconfig.getoption("runtime"),
                          kernels=pytestconfig.getoption("kernels"),
                          entry_timeout=pytestconfig.getoption("entry_timeout"))
    pytestconfig._device_tests_results = document["results"]
    return {record["id"]: record for record in document["results"]}


def layers_line(record: dict) -> str | None:
    """What the per-layer comparison found for one record, one line, or None when it found
    nothing to say (no birth layer) or did not run."""
    layers = record.get("layers") or {}
    why = layers.get("unavailable") or layers.get("error")
    if why:
        return f"{record['id']} on {record['target']}: no per-layer error: {why}"
    if layers.get("born"):
        return f"{record['id']} on {record['target']}: {layers.get('text')}"
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The layer where each entry's error is born (diagnostic: it fails no test)."""
    lines = [line for line in map(layers_line, getattr(config, "_device_tests_results", None)
                                  or ()) if line]
    if lines:
        terminalreporter.write_sep("=", "per-layer error")
        for line in lines:
            terminalreporter.write_line(line)
