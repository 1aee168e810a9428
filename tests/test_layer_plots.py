"""The report's per-layer pictures (pipeline/report/layer_plots.py): one plot per model and target,
a line per variant (repaired ones dashed, under their repair label), the bound as a band, the
layer where the error is born marked and named; a variant without per-layer data draws nothing
and the page says why. Checked on the matplotlib figure's artists, not on pixels."""

import keras
import matplotlib
import pytest

from edgepipe.device_tests.schema import ResultStatus
from edgepipe.pipeline.report.layer_plots import figure, layer_order, line_of
from edgepipe.pipeline.report.layer_plots import section as layer_section
from edgepipe.pipeline.report.plots import Painter
from edgepipe.pipeline.report.read import build_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

UNAVAILABLE = "tflite-micro cannot preserve intermediate tensors (no preserve-all mode built)"


@pytest.fixture(scope="module")
def layer_names():
    """The layers of a user's model, in call order (what the runner's rows name)."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(8, name="hidden")(inputs)
    h = keras.layers.Activation("relu", name="relu")(h)
    h = keras.layers.Dense(8, activation="tanh", name="squash")(h)
    outputs = keras.layers.Dense(1, name="out")(h)
    model = keras.Model(inputs, outputs, name="mymodel")
    return [layer.name for layer in model.layers[1:]]


def rows(names, rel, bound_rel, ok=None):
    return [{"layer": n, "op": "OP", "tensor": i, "max_abs": r * 2.0, "range": 2.0, "rel": r,
             "sqnr_db": 40.0, "steps": None, "simulated": b, "bound": b * 2.0 if b else None,
             "bound_steps": None, "ok": None if b is None else r <= b}
            for i, (n, r, b) in enumerate(zip(names, rel, bound_rel, strict=True))]


@pytest.fixture(scope="module")
def run(layer_names, tmp_path_factory):
    """float32, int8 (error born in `squash`), its repair (dashed) and float16 (no per-layer
    data on this runtime) on host-ref; tflm without per-layer data for every variant."""
    fused = [n for n in layer_names if n != "relu"]  # int8 fuses the relu into `hidden`
    entries = [{"id": f"mymodel-{m}", "model": "mymodel", "mode": m}
               for m in ("float32", "float16", "int8")]
    entries.append({"id": "mymodel-int8.f32.squash", "model": "mymodel", "mode": "int8",
                    "repair": {"of": "mymodel-int8", "kind": "precision",
                               "label": "int8+f32[squash]", "layers": ["squash"]}})
    born = {"layer": "squash", "op": "TANH", "steps": 24, "simulated_steps": 2,
            "bound_steps": 4, "max_abs": 0.2, "bound": 0.02}
    layers = {
        "mymodel-float32": {"rows": rows(layer_names, [0.0, 1e-7, 2e-7, 3e-7],
                                         [1e-5] * 4)},
        "mymodel-int8": {"rows": rows(fused, [0.002, 0.1, 0.12], [0.004, 0.01, 0.02]),
                         "born": born, "text": "error is born in layer `squash_1` (TANH): 24 "
                                               "steps against a simulated 2"},
        "mymodel-int8.f32.squash": {"rows": rows(fused, [0.002, 0.003, 0.004],
                                                 [0.004, 0.01, 0.02])},
        "mymodel-float16": {"unavailable": "float16 tensors are not preserved here"},
    }
    results = [{"id": e["id"], "model": "mymodel", "mode": e["mode"], "target": "host-ref",
                "status": ResultStatus.PASS, "layers": layers[e["id"]]} for e in entries]
    results += [{"id": e["id"], "model": "mymodel", "mode": e["mode"], "target": "tflm",
                 "status": ResultStatus.PASS, "layers": {"unavailable": UNAVAILABLE}}
                for e in entries]
    manifest = {"entries": entries, "models": {"mymodel": {}}}
    return build_run(tmp_path_factory.mktemp("run"), manifest, {"results": results})


def test_one_line_per_variant_repaired_dashed_bound_as_band_born_layer_marked(run, layer_names):
    lines = [line for v in run.entries for line, _ in [line_of(v, "host-ref")] if line]
    assert [line.label for line in lines] == ["float32", "int8", "int8+f32[squash]"]
    order = layer_order(lines)
    assert order == layer_names  # `relu`, fused away in int8, keeps its place
    fig = figure(plt, order, lines, "mymodel on host-ref")
    try:
        ax = fig.axes[0]
        drawn = {a.get_gid(): a for a in ax.get_children() if a.get_gid()}
        plotted = [a for a in ax.get_lines() if (a.get_gid() or "").startswith("line:")]
        assert [a.get_label() for a in plotted] == ["float32", "int8", "int8+f32[squash]"]
        styles = {a.get_label(): a.get_linestyle() for a in plotted}
        assert styles["int8+f32[squash]"] == "--" and styles["int8"] == "-"
        assert list(drawn["line:mymodel-int8"].get_xdata()) == [0, 2, 3]
        assert ax.get_yscale() == "log"
        assert {"band:mymodel-float32", "band:mymodel-int8",
                "band:mymodel-int8.f32.squash"} <= set(drawn)
        marker = drawn["born:mymodel-int8"]
        assert marker.get_offsets().tolist() == [[order.index("squash"), pytest.approx(0.1)]]
        assert "born: squash (int8)" in ax.get_legend_handles_labels()[1]
        assert not any(g.startswith("born:") and g != "born:mymodel-int8" for g in drawn)
        assert [t.get_text() for t in ax.get_xticklabels()] == layer_names
    finally:
        plt.close(fig)


def section(run) -> str:
    painter = Painter()
    return painter.finish(layer_section(run, painter))


def test_the_section_names_the_born_layer_and_why_variants_draw_nothing(run):
    html = section(run)
    assert html.count("<img") == 1  # host-ref only: on tflm no variant has per-layer data
    assert "error is born in layer `squash_1` (TANH): 24 steps against a simulated 2" in html
    assert "float16 tensors are not preserved here" in html  # float16 on host-ref: not drawn
    assert "tflm: no plot" in html and UNAVAILABLE in html
    assert 'href="#v-mymodel-int8"' in html


def test_results_without_per_layer_data_draw_nothing_and_say_so(run, tmp_path):
    manifest = {"entries": [v.entry for v in run.entries], "models": {"mymodel": {}}}
    results = [{"id": v.id, "model": "mymodel", "mode": v.mode, "target": "host",
                "status": ResultStatus.PASS} for v in run.entries]
    html = section(build_run(tmp_path, manifest, {"results": results}))
    assert "<img" not in html and "No per-layer data" in html
