"""Check representative samples before the converter sees them.

The converter's own failures on bad calibration data are cryptic (or silent: NaN calibrates
to a NaN scale); here each problem is named with the sample that has it.
"""

import numpy as np

from ..core.errors import EdgepipeError


def check_representative(x, input_shape, source: str = "representative data"):
    """Return (float32 samples, notes) or raise EdgepipeError saying what is wrong and where."""
    x = np.asarray(x)
    notes = []
    expected = tuple(input_shape)
    if x.size == 0 or len(x) == 0:
        raise EdgepipeError(f"{source}: representative dataset is empty; the int8 and int16x8 "
                            f"modes need samples of shape {expected} to calibrate.")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise EdgepipeError(f"{source}: expected real numbers (float32), got dtype {x.dtype}.")
    if tuple(x.shape[1:]) != expected:
        raise EdgepipeError(f"{source}: expected samples of shape {expected} (array shape "
                            f"(N, {', '.join(map(str, expected))})), got array shape "
                            f"{tuple(x.shape)}.")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise EdgepipeError(f"{source}: sample {int(np.argmax(bad))} contains NaN or Inf "
                            f"({int(bad.sum())} of {len(x)} samples do); remove them.")
    if x.dtype != np.float32:
        notes.append(f"{source}: cast from {x.dtype} to float32, the model's input type")
        x = x.astype(np.float32)
    return x, notes
