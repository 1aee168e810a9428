"""A `.tflite` the user already has, checked against the Keras model it came from
(`edgepipe run --model m.keras --tflite m_int8.tflite`).

It goes into the bundle as its own variant of that model: its mode is read from the file (what
its tensors are), it is audited as a converted variant is, and its conversion record says where
it came from (`given`). Nothing here converts; `mode_of` and `label` (the stage keys use them)
need no TensorFlow.
"""

from pathlib import Path

from ..core.errors import EdgepipeError
from .modes import QuantMode
from .op_audit import OP_SETS, audit
from .tflite_file import TFLiteModel, mapped_file, read_tflite

_IO_MODES = {"int8": QuantMode.INT8, "int16": QuantMode.INT16X8}


def mode_of(model: TFLiteModel, source: str) -> QuantMode:
    """The mode a file was converted in, from its tensors: int8 or int16 inputs and outputs
    give the integer modes (token ids stay int32 in every mode); a float model with float16
    constants is float16, with int8 weights dynamic-range, else float32."""
    dtypes = {t.dtype for t in model.input_tensors() + model.output_tensors()}
    if "uint8" in dtypes:
        raise EdgepipeError(f"{source} takes uint8 inputs (TensorFlow 1's quantization), which "
                            "edgepipe has no mode for; convert the Keras model again with "
                            "`edgepipe convert` (int8).")
    for dtype, mode in _IO_MODES.items():
        if dtype in dtypes:
            return mode
    constants = {t.dtype for sub in model.subgraphs for t in sub.tensors if t.buffer_bytes}
    if "float16" in constants:
        return QuantMode.FLOAT16
    if "int8" in constants:
        return QuantMode.DYNAMIC
    return QuantMode.FLOAT32


def label(path: Path, mode: QuantMode) -> str:
    """The variant's name in the run folder and the part of its entry id after the model's:
    `int8.m_int8` for m_int8.tflite (the mode first, so entries sort with the converted one)."""
    return f"{mode.value}.{Path(path).stem}"


def given_variant(name: str, path: Path, out_dir: Path):
    """The user's file copied into `out_dir` as `<name>.<label>.tflite`, audited, with its
    conversion record `<name>.<label>.json`: a `converters.variants.Variant`."""
    from .variants import RECORD_SCHEMA_VERSION, Variant, file_record, save_variant  # TF

    path = Path(path)
    with mapped_file(path) as data:
        flatbuffer = bytes(data)
    parsed = read_tflite(flatbuffer, str(path))
    mode = mode_of(parsed, str(path))
    tag = label(path, mode)
    report = audit(parsed, mode, op_sets=OP_SETS, source=path.name)
    tflite_path = Path(out_dir) / f"{name}.{tag}.tflite"
    record = {"schema_version": RECORD_SCHEMA_VERSION, "model": name, "mode": mode.value,
              "given": {"file": str(path), "label": tag},
              "converter": None,  # not converted here: the file is the user's
              **file_record(flatbuffer, parsed, report, tflite_path)}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    save_variant(tflite_path, flatbuffer, record)
    return Variant(name, mode, record["status"], record["reason"], record, tflite_path)
