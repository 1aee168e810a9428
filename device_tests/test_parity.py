"""One test per bundle entry (id = entry id, e.g. `cnn_step-int8`): every bound must hold.

Unsupported entries are skipped with the manifest's reason; entries that cannot run fail with
theirs. Without `--bundle` the module is skipped with a message saying how to run it.
"""

from __future__ import annotations

import pytest

from .schema import ResultStatus

HOW_TO_RUN = ("no --bundle given: run `python -m pytest device_tests --bundle BUNDLE_DIR "
              "[--runtime ai_edge_litert|tflite_runtime|tensorflow] [--kernels default|reference]`")


def pytest_generate_tests(metafunc):
    if "entry_id" not in metafunc.fixturenames:
        return
    bundle = getattr(metafunc.config, "_device_tests_bundle", None)
    if bundle is None:
        metafunc.parametrize("entry_id", [pytest.param(
            None, id="no-bundle", marks=pytest.mark.skip(reason=HOW_TO_RUN))])
        return
    metafunc.parametrize("entry_id", bundle.entry_ids, ids=bundle.entry_ids)


def _worst(record: dict) -> str:
    metrics = record.get("metrics") or {}
    return (f"worst samples {metrics.get('worst_samples')} (max abs error "
            f"{metrics.get('max_abs_error')}, {metrics.get('steps')} output steps)")


def test_parity(entry_id, parity_results, record_property):
    record = parity_results[entry_id]
    where = f"{entry_id} on {record['target']}"
    record_property("status", record["status"])
    if record.get("metrics"):
        record_property("max_abs_error", record["metrics"].get("max_abs_error"))
    layers = record.get("layers") or {}
    if layers:  # diagnostic, never a failure: where the error is born, or why it is not known
        record_property("layers", layers.get("text") or layers.get("unavailable")
                        or layers.get("error"))
    if record["status"] == ResultStatus.UNSUPPORTED:
        reason = record["reason"]
        pytest.skip(reason if reason.startswith("unsupported") else f"unsupported: {reason}")
    if record["status"] == ResultStatus.ERROR:
        pytest.fail(f"{where}: error: {record['reason']}", pytrace=False)
    if record["status"] == ResultStatus.FAIL:
        pytest.fail(f"{where}: {record['reason']}; {_worst(record)}", pytrace=False)
    assert record["status"] == ResultStatus.PASS, record
    assert all(check["ok"] for check in record["checks"]), record["checks"]
