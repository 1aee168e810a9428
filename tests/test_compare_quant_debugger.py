"""tools/compare_quant_debugger.py: edgepipe's per-layer figures beside TF's QuantizationDebugger
on a user's tiny model (a tutorial-style layer), run through `edgepipe run` as a user would.

Measured (TF 2.21, ai-edge-litert 2.3.0) on this model: every per-op and accumulated MSE and
max|diff| agrees to <= 1e-5 relative (largest 5.2e-6), with either kernels: both sides run the
same quantized graph (same grids) and differ only in float32 summation order; 1e-4 leaves a
margin. Reference kernels (host-ref) may round some elements of some ops (LEAKY_RELU, CONV_2D on
the zoo) one step differently from the optimized ones the debugger's interpreter uses, which
moves an MSE by up to a few % on the zoo: 1e-2 allows that for host-ref.
"""

import json
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import import_as
from typer.testing import CliRunner

from edgepipe.pipeline.cli import app

LAYERS_PY = textwrap.dedent('''
    import tensorflow as tf


    class MyTanh(tf.keras.layers.Layer):
        def __init__(self):
            super(MyTanh, self).__init__()

        def call(self, x):
            return tf.tanh(x)
''')
TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_quant_debugger.py"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("qdebug")
    (root / "layers.py").write_text(LAYERS_PY)
    layers = import_as(root / "layers.py", "qdebug_layers_under_test")
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x[:354].mean(0)) / x[:354].std(0)).astype(np.float32)
    y = ((y - y[:354].mean()) / y[:354].std()).astype(np.float32)
    np.savez(root / "d.npz", x_train=x[:354], y_train=y[:354], x_test=x[354:], y_test=y[354:])
    keras.utils.set_random_seed(0)
    # Named: Keras numbers unnamed layers per process (dense_31 after other tests)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(16, name="dense"),
                              layers.MyTanh(), keras.layers.Dense(1, name="dense_1")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    model.fit(x[:354], y[:354], epochs=10, batch_size=32, verbose=0)
    model.save(root / "tiny.keras")
    (root / "run.toml").write_text('[run]\nmodes = ["float32", "int8"]\n'
                                   'targets = ["host", "host-ref"]\n')
    result = CliRunner().invoke(app, ["run", "--model", str(root / "tiny.keras"), "--data",
                                      str(root / "d.npz"), "--custom-objects",
                                      str(root / "layers.py"), "--config",
                                      str(root / "run.toml"), "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    tool = import_as(TOOL, "compare_quant_debugger_under_test")
    found = {}
    for kernels in ("default", "reference"):
        out = root / f"{kernels}.json"
        argv = [str(root / "run"), "--model", str(root / "tiny.keras"), "--data",
                str(root / "d.npz"), "--custom-objects", str(root / "layers.py"), "--kernels",
                kernels, "--json", str(out), "--out", str(root / f"{kernels}.md")]
        assert tool.main(argv) == 0
        found[kernels] = json.loads(out.read_text())
    return tool, found


def _layer_rows(found):
    (model,) = found
    return model, {r["layer"]: r for r in model["rows"] if r.get("layer")}


def test_the_debugger_and_edgepipe_see_the_same_quantized_model(compared):
    _, found = compared
    model, rows = _layer_rows(found["default"])
    assert model["grids"]["differ"] == 0 and model["grids"]["same"] >= 2
    others = set(rows) - {"dense", "dense_1"}
    assert len(rows) == 3 and len(others) == 1 and others.pop().startswith("my_tanh"), rows
    assert all(r["tf_mse"] is not None for r in rows.values())


def test_per_op_and_accumulated_mse_agree_on_the_same_kernels(compared):
    tool, found = compared
    _, rows = _layer_rows(found["default"])
    for layer, r in rows.items():
        assert tool.rel_diff(r["tf_mse"], r["ep_mse"]) < 1e-4, (layer, r)
        assert tool.rel_diff(r["tf_max"], r["ep_max"], tool.TINY_ABS) < 1e-4, (layer, r)
        assert tool.rel_diff(r["tf_whole_mse"], r["runner_mse"]) < 1e-4, (layer, r)


def test_host_ref_figures_agree_within_reference_kernel_rounding(compared):
    tool, found = compared
    _, rows = _layer_rows(found["reference"])
    for layer, r in rows.items():
        assert tool.rel_diff(r["tf_mse"], r["ep_mse"]) < 1e-2, (layer, r)
        assert tool.rel_diff(r["tf_whole_mse"], r["runner_mse"]) < 1e-2, (layer, r)


def test_the_first_layer_per_op_error_includes_the_input_quantization(compared):
    """The debugger's float copy of the first op reads the float input: per-op = accumulated."""
    tool, found = compared
    _, rows = _layer_rows(found["default"])
    first = rows["dense"]
    assert tool.rel_diff(first["tf_mse"], first["tf_whole_mse"]) < 1e-6
    assert rows["dense_1"]["tf_whole_mse"] > rows["dense_1"]["tf_mse"]
