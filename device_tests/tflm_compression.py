"""A variant's flash size after TFLite Micro's own compression tool, and its parity re-checked.

`tflite_micro` ships a compressor (tensorflow/lite/micro/compression): it rewrites a constant
tensor as bit-packed indices into lookup tables (LUT: at most 2**7 distinct values per table,
one table per tensor or per channel) and inserts a DECODE op that expands it into the arena
when the model runs. Huffman and pruning are declared there but not implemented.

LUT compression is lossless, and pays only where a tensor holds few distinct values: weights
clustered or palettized while training. Ordinary int8 weights hold up to 255 values per
channel, and the tables then cost more than the narrower indices save. So the spec is derived,
not asked for: every constant tensor an op may take from the arena, at the smallest index width
that holds its distinct values, per tensor or per channel (first or last axis, as the kernels
allow), whichever is smaller, and only where that is smaller than the tensor. When no tensor
qualifies, the variant says why and nothing is run.

A tensor quantized per channel gets tables per channel along its quantized dimension only:
measured on tflite-micro 0.dev20261023182759, a single table for an int8 Dense kernel quantized
per channel (16 distinct values in all) made the model's outputs 251 steps away from the
uncompressed model's, where tables per channel gave the same outputs.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np

MAX_BITS = 7  # the DECODE op's LUT index field


def _layouts(array: np.ndarray, channel_axis: int | None):
    """(axis, tables, largest table) per tensor (axis None) and per channel (first and last
    axis); a tensor quantized per channel only per channel along that axis."""
    if channel_axis is None:
        yield None, 1, len(np.unique(array))
    axes = (0, array.ndim - 1) if channel_axis is None else (channel_axis,)
    if array.ndim >= 2:
        for axis in dict.fromkeys(a for a in axes if a in (0, array.ndim - 1)):
            slices = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
            yield axis, len(slices), max(len(np.unique(s)) for s in slices)


def _channel_axis(tensor) -> int | None:
    """The quantized dimension of a tensor quantized per channel, else None."""
    q = tensor.quantization
    scales = getattr(q, "scales", None)
    if isinstance(scales, (list, tuple, np.ndarray)) and len(scales) > 1:
        return int(q.axis or 0)
    return None


def _best(array: np.ndarray, channel_axis: int | None) -> tuple | None:
    """(encoded bytes, axis, bits) of the smallest LUT encoding of `array`, or None."""
    best = None
    for axis, tables, distinct in _layouts(array, channel_axis):
        bits = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        if bits > MAX_BITS:
            continue
        size = math.ceil(array.size * bits / 8) + tables * (2 ** bits) * array.itemsize
        if best is None or size < best[0]:
            best = (size, axis, bits)
    return best


def plan(data: bytes) -> tuple[list, list[dict], str]:
    """(the compressor's spec, one row per tensor compressed, why nothing is when empty)."""
    from tflite_micro.tensorflow.lite.micro.compression import constant_inputs, model_editor
    from tflite_micro.tensorflow.lite.micro.compression import spec as lut_spec

    model = model_editor.read(data)
    specs, rows, largest = [], [], 0
    for sg_index, subgraph in enumerate(model.subgraphs):
        for index, tensor in enumerate(subgraph.tensors):
            if tensor.buffer is None or not tensor.buffer.data or \
                    constant_inputs.find_uses(subgraph, tensor):
                continue
            array = tensor.array
            if array is None or array.size < 2:
                continue
            largest = max(largest, len(np.unique(array)))
            best = _best(array, _channel_axis(tensor))
            if best is None or best[0] >= array.nbytes:
                continue
            size, axis, bits = best
            mode = lut_spec.PerTensor() if axis is None else lut_spec.PerChannel(axis=axis)
            specs.append(lut_spec.Tensor(subgraph=sg_index, tensor=index, compression=[
                lut_spec.LookUpTableCompression(index_bitwidth=bits, mode=mode)]))
            rows.append({"tensor": tensor.name, "bits": bits,
                         "per": "tensor" if axis is None else f"channel (axis {axis})",
                         "bytes": array.nbytes, "encoded_bytes": size})
    why = "" if specs else (
        f"no constant tensor has few enough distinct values for a lookup table to be smaller "
        f"(the most varied holds {largest}; a table indexes at most {2 ** MAX_BITS}, and pays "
        f"with clustered weights)")
    return specs, rows, why


def compress(data: bytes) -> tuple[bytes | None, dict]:
    """(the compressed model or None, the `compressed` metrics block): `bytes` the compressed
    file's size against `original_bytes`, `tensors` what was compressed; or `applies` False and
    `why`."""
    from tflite_micro.tensorflow.lite.micro.compression import compress as lut_compress

    specs, rows, why = plan(data)
    block = {"tool": "tflite_micro compression (LUT)", "original_bytes": len(data)}
    if not specs:
        return None, {**block, "applies": False, "why": why}
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # sizes are judged below, on the whole file
        out = bytes(lut_compress(data, specs))
    if len(out) >= len(data):
        return None, {**block, "applies": False,
                      "why": f"the DECODE ops and tables outweigh what {len(rows)} tensor(s) "
                             f"save ({len(out)} bytes against {len(data)})"}
    return out, {**block, "applies": True, "bytes": len(out), "tensors": rows}
