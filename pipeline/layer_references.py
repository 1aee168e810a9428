"""Per-layer references and bounds in the bundle (docs/bundle.md, `models.<name>.layers`,
`entries[i].layers`, `entries[i].layers_fused`).

The model block holds every layer's Keras output on a fixed subset of test samples, evenly
spread over the test split; each converted entry maps its tensors to those layers by name
(converters/layer_tensors.py) and gives each layer the bound the format simulation derives for
it: SAFETY x its simulated error + FLOAT32_RTOL x its range, the same rule as the model's output
bound (pipeline/tolerances.py). A quantized tensor's bound is at least one of its steps: the
converter may put a tensor on a grid other than the one calibration gives the layer (a QUANTIZE
it inserts takes its consumer's scale), and a tensor cannot hold a value closer than its grid.
The runner (device_tests/layers.py) compares the tensors with these, on the board, without TF.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..converters.layer_tensors import map_layers
from ..converters.modes import QuantMode
from ..converters.tflite_file import TFLiteModel
from ..device_tests.schema import RunFolder
from .tolerances import FLOAT32_RTOL, SAFETY, ModelWalks, NotSimulated, keras_layer_outputs

# At most this many bytes of layer outputs per model: with 32 samples a zoo cnn's layers would
# take 2.4 MB each (74 kB a sample); the samples are fewer for models with large activations.
LAYER_BYTES = 2 ** 19


@dataclass(frozen=True)
class LayerReferences:
    """`samples`: indices into the test split; `paths`: every layer path in call order (->
    class name); `output_layers`: the layer of each model output; `arrays`: {path: Keras output
    on the samples} for layers with one float output; `block`: the manifest block (None when not
    written)."""
    samples: list
    paths: dict
    output_layers: list
    arrays: dict
    block: dict | None = None

    def range(self, layer: str) -> float:
        values = self.arrays[layer]
        return float(values.max() - values.min()) or 1.0


def pick_samples(n_test: int, wanted: int, bytes_per_sample: int) -> list[int]:
    """`wanted` test samples at most (fewer when their layer outputs exceed LAYER_BYTES), evenly
    spread over the test split: the same ones on every run."""
    count = min(wanted, n_test, max(1, LAYER_BYTES // max(bytes_per_sample, 1)))
    if count <= 0:
        return []
    return [int(i) for i in np.unique(np.linspace(0, n_test - 1, count).round().astype(int))]


def _take(x, rows):
    """The samples at `rows` of a model's inputs (an array, a list of arrays, a dict)."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[rows] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v)[rows] for v in x]
    return np.asarray(x)[rows]


def _test_count(x) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(
        x, (list, tuple)) else x
    return len(first)


def references(model, x_test, samples: list, walks: ModelWalks | None = None
               ) -> LayerReferences | None:
    """Each layer's Keras output on the test samples `samples` (None: the model's layers cannot
    be walked one by one, e.g. a subclassed model). `walks`: the model's walks on `x_test`,
    which keep the outputs of each set of samples walked."""
    try:
        found = (walks.layer_outputs(samples) if walks is not None else
                 keras_layer_outputs(model, _take(x_test, np.asarray(samples, np.int64))))
    except NotSimulated:
        return None
    return LayerReferences(list(samples), found.paths, found.output_layers, found.outputs)


def references_from_block(model, x_test, block: dict | None, walks: ModelWalks | None = None
                          ) -> LayerReferences | None:
    """The references of a manifest's `models.<name>.layers` block: those `walks` kept when
    it made the block, else computed again (entries made after the model block, e.g. repaired
    variants)."""
    if not block or not block.get("samples"):
        return None
    refs = references(model, x_test, block["samples"], walks)
    return None if refs is None else LayerReferences(refs.samples, refs.paths,
                                                     refs.output_layers, refs.arrays, block)


def layers_block(root: Path, name: str, model, x_test, wanted: int,
                 walks: ModelWalks | None = None) -> LayerReferences | None:
    """Write `models.<name>.layers` (its .npy files through bundle.save_npy); None when
    `wanted` is 0 or the model cannot be walked layer by layer. With `walks`, the samples'
    outputs are walked once for the block and the entries (and the probe of sample 0 is the
    block's when its layers are large enough to keep one sample only)."""
    from .bundle import save_npy

    n_test = _test_count(x_test)
    if wanted <= 0 or n_test == 0:
        return None
    walks = walks if walks is not None else ModelWalks(model, x_test)
    probe = references(model, x_test, [0], walks)
    if probe is None or not probe.arrays:
        return None
    per_sample = sum(a.nbytes for a in probe.arrays.values())
    refs = references(model, x_test, pick_samples(n_test, wanted, per_sample), walks)
    folder = RunFolder(root)
    outputs = []
    for i, (layer, values) in enumerate(refs.arrays.items()):
        saved = save_npy(folder, folder.layer_reference(name, i), values)
        outputs.append({"layer": layer, "class": refs.paths[layer], **saved,
                        "shape": list(values.shape), "range": refs.range(layer)})
    block = {"samples": refs.samples, "outputs": outputs}
    return LayerReferences(refs.samples, refs.paths, refs.output_layers, refs.arrays, block)


def entry_layers(refs: LayerReferences, tflite: TFLiteModel, mode: QuantMode, simulated
                 ) -> dict:
    """`layers` and `layers_fused` of a converted entry (`tflite`: its parsed file).
    `simulated`: the Simulation run with `layer_rows=refs.samples` (None for float32, or a
    model not simulated)."""
    rows, fused = map_layers(tflite, refs.paths, refs.output_layers)
    sim = getattr(simulated, "layer_outputs", None)
    kept = []
    for row in rows:
        layer = row["layer"]
        if layer not in refs.arrays:
            continue  # an integer output (token ids, a mask): nothing to compare in float
        floor = FLOAT32_RTOL * refs.range(layer)
        error = bound = None
        if mode is QuantMode.FLOAT32:
            bound = floor
        elif sim is not None and layer in sim:
            error = float(np.abs(sim[layer].astype(np.float64)
                                 - refs.arrays[layer].astype(np.float64)).max())
            bound = max(SAFETY * error + floor, row["scale"] or 0.0)
        kept.append({**row, "simulated": error, "bound": bound})
    names = {row["layer"] for row in kept}
    return {"layers": kept,
            "layers_fused": [f for f in fused if f["into"] in names and f["layer"] in refs.arrays]}
