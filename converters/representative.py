"""Check representative samples before the converter sees them, and hand them to it.

The converter's own failures on bad calibration data are cryptic (or silent: NaN calibrates
to a NaN scale); here each problem is named with the sample (and the model input) that has it.
Samples are passed as given, in the dtype of the input they feed: float inputs get float32,
integer inputs (token ids into an Embedding) keep their integers, which calibration leaves
alone (the converter keeps integer inputs unquantized).
"""

import numpy as np

from ..core.errors import EdgepipeError
from ..models.datasets import input_arrays, sample_count


def check_representative(x, input_shape, source: str = "representative data",
                         dtype: str = "float32"):
    """Return (samples in the input's dtype, notes) or raise EdgepipeError saying what is wrong
    and where. `dtype`: the model input's; None in `input_shape` matches any size."""
    x = np.asarray(x)
    notes = []
    expected = tuple(input_shape)
    integer = np.dtype(dtype).kind in "iu"
    if x.size == 0 or len(x) == 0:
        raise EdgepipeError(f"{source}: representative dataset is empty; the int8 and int16x8 "
                            f"modes need samples of shape {expected} to calibrate.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise EdgepipeError(f"{source}: expected real numbers ({dtype}), got dtype {x.dtype}.")
    if len(x.shape) - 1 != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, x.shape[1:], strict=False)):
        raise EdgepipeError(f"{source}: expected samples of shape {expected} (array shape "
                            f"(N, {', '.join(map(str, expected))})), got array shape "
                            f"{tuple(x.shape)}.")
    rows = x.reshape(len(x), -1)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise EdgepipeError(f"{source}: sample {int(np.argmax(bad))} contains NaN or Inf "
                            f"({int(bad.sum())} of {len(x)} samples do); remove them.")
    if integer:
        bad = (rows != np.round(rows)).any(axis=1)
        if bad.any():
            raise EdgepipeError(f"{source}: the model's input is {dtype} (token ids or "
                                f"indices) but sample {int(np.argmax(bad))} holds fractions; "
                                f"save the integers, e.g. samples.astype('{dtype}').")
        info = np.iinfo(dtype)
        if x.min() < info.min or x.max() > info.max:
            raise EdgepipeError(f"{source}: values from {x.min()} to {x.max()} do not fit the "
                                f"model's {dtype} input.")
    if x.dtype != np.dtype(dtype):
        notes.append(f"{source}: cast from {x.dtype} to {dtype}, the model's input type")
        x = x.astype(dtype)
    return x, notes


def check_representative_inputs(x, inputs, source: str = "representative data"):
    """`check_representative` for every model input (`inputs`: models/loading.TensorSpec, in
    the model's order): `x` is one array (one input) or a list of arrays in the same order.
    Returns (samples, same structure as `x`, notes)."""
    arrays = input_arrays(x)
    if len(arrays) != len(inputs):
        raise EdgepipeError(f"{source}: {len(arrays)} array(s) for a model with {len(inputs)} "
                            f"inputs ({', '.join(repr(t.name) for t in inputs)}).")
    several = len(inputs) > 1
    checked, notes = [], []
    for spec, array in zip(inputs, arrays, strict=True):
        where = f"{source} (input {spec.name!r})" if several else source
        # Integer inputs are fed as given; every float input is calibrated as float32.
        a, n = check_representative(array, spec.shape, where,
                                    spec.dtype if spec.integer else "float32")
        checked.append(a)
        notes += n
    counts = {len(a) for a in checked}
    if len(counts) > 1:
        given = ", ".join(f"{t.name!r} {len(a)}" for t, a in zip(inputs, checked, strict=True))
        raise EdgepipeError(f"{source}: the inputs hold different numbers of samples ({given});"
                            " give the same samples of every input.")
    return (checked if several else checked[0]), notes


def calibration_samples(representative):
    """The converter's representative dataset: one sample at a time, as a batch of one. One
    array (one input) gives `[sample]`; a dict {input name: array} (several inputs) gives
    {name: sample}: the converter feeds a dict by its signature's input names, which are the
    Keras input names, whereas a list would follow the .tflite's own input order (not the
    model's)."""
    if isinstance(representative, dict):
        for i in range(sample_count(list(representative.values()))):
            yield {name: a[i:i + 1] for name, a in representative.items()}
    else:
        for sample in representative:
            yield [sample[None]]


def representative_count(representative) -> int:
    """How many samples calibrate: one array, a list or a dict of one array per input."""
    if isinstance(representative, dict):
        representative = list(representative.values())
    return sample_count(representative)


def by_input_name(model, x):
    """`x` as the converter and the .tflite take it: one array as it is; a list (one array per
    input, in the model's order) as {Keras input name: array}."""
    if isinstance(x, (list, tuple)):
        return {t.name: a for t, a in zip(model.inputs, x, strict=True)}
    return x
