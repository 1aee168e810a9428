"""The differential test of issue 18: every variant of the zoo and of the stranger models (built
here, tests/stranger_models.py) is loaded in TFLite Micro by the runner's own load, and the
measured op table's verdict (`check --target tflm`) must agree with it on every file."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import needs

REPO = Path(__file__).resolve().parents[1]
HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None


def _load_tool():
    spec = importlib.util.spec_from_file_location("tflm_agreement",
                                                  REPO / "tools" / "tflm_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def strangers(tmp_path_factory):
    from stranger_models import convert_all

    out = tmp_path_factory.mktemp("strangers-all-modes")
    convert_all(out)
    return out


def test_check_agrees_with_tflite_micro_on_every_variant(converted_zoo, strangers, capsys):
    needs(HAVE_TFLM, "tflite-micro is not installed: pip install 'edgepipe[micro]'")
    files = tool.tflite_files([converted_zoo[0], strangers])
    rows = tool.compare(files)
    counts = tool.summary(rows)
    with capsys.disabled():
        print(f"\ntflm agreement: {json.dumps(counts)}")
    wrong = [f"{Path(r['file']).name}: table {r['table']['verdict']} "
             f"({'; '.join(r['table']['refused'])}), tflm {r['tflm']['verdict']} "
             f"({r['tflm']['why']})" for r in rows if not r["agree"]]
    assert wrong == [], "\n".join(wrong)
    # Every variant of the zoo (12 models x 5 modes, less the int16x8 ones TFLite cannot make)
    # and of the strangers was loaded, and both outcomes occur: the test can fail both ways.
    assert counts["variants"] == len(files) >= 60
    assert counts["tflm_runs"] > 0 and counts["tflm_refuses"] > 0
    # What these models hold was all measured: nothing was left to the runtime to decide.
    unmeasured = {u for r in rows for u in r["table"]["unknown"]}
    assert unmeasured == set(), sorted(unmeasured)


def test_a_disagreement_is_caught(converted_zoo, monkeypatch):
    """The comparison can fail: with CONV_2D int8 removed from the table's kernels and marked
    refused, the zoo's int8 CNNs (which TFLM runs) disagree."""
    needs(HAVE_TFLM, "tflite-micro is not installed: pip install 'edgepipe[micro]'")
    from edgepipe.converters import tflm_ops

    monkeypatch.setitem(tflm_ops.TFLM_KERNELS, "CONV_2D", frozenset({"float32", "int16"}))
    monkeypatch.setitem(tflm_ops.TFLM_REFUSED, "CONV_2D", frozenset({"int8"}))
    rows = tool.compare([converted_zoo[0] / "cnn_swish.int8.tflite"])
    assert [r["agree"] for r in rows] == [False]
    assert rows[0]["table"]["verdict"] == "refuses" and rows[0]["tflm"]["verdict"] == "runs"
