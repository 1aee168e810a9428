"""Read the structure of a .tflite file (ops, tensors, quantization) with the standard library only.

Why not TensorFlow, the `flatbuffers` package or an interpreter: `edgepipe check model.tflite`
must answer in well under a second (importing TensorFlow alone takes seconds), and an interpreter
refuses models whose ops it cannot run, which are exactly the models the op audit must describe.

A TFLite file is a FlatBuffer (https://flatbuffers.dev/internals/): little-endian, a root offset
at byte 0, the identifier "TFL3" at bytes 4-8. A table starts with an int32 that points back to
its vtable; the vtable is uint16s: its own size, the table's size, then one offset per field
(0 = absent, use the schema default). Offsets to tables, vectors and strings are uint32s relative
to where they are stored; vectors and strings start with a uint32 length. Field slots below are
4 + 2 * (field number in tensorflow/lite/schema/schema.fbs).

The file is untrusted (truncated downloads, LFS pointers, bit rot): every read is bounds-checked,
every vector length is capped by the bytes left, and a work budget proportional to the file size
stops files whose offsets overlap or loop from costing more than a file of that size can hold.
Anything wrong becomes one TFLiteFormatError line; nothing else escapes.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass

from ..models.errors import EdgepipeError
from .builtin_ops import BUILTIN_OPERATORS, CUSTOM, TENSOR_TYPES

FILE_IDENTIFIER = b"TFL3"

_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I8 = struct.Struct("<b")
_U8 = struct.Struct("<B")


class TFLiteFormatError(EdgepipeError):
    """The bytes are not a readable TFLite model; the one-line message says why and what to do."""


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str  # numpy-style: "float32", "int8", ...; "unknown_type_N" for codes newer than ours
    shape: tuple[int, ...]
    scales: tuple[float, ...]  # empty when not quantized; one per channel when per-axis
    zero_points: tuple[int, ...]
    quantized_dimension: int
    is_variable: bool
    buffer_bytes: int  # constant data size; 0 for activations and inputs
    # The shape with -1 for dynamic dimensions (a Keras batch of None); equals `shape` when the
    # file does not say. Not in the first sketch of this API: the interpreter reports it too.
    shape_signature: tuple[int, ...] = ()

    @property
    def is_quantized(self) -> bool:
        return bool(self.scales)


@dataclass(frozen=True)
class Operator:
    index: int
    subgraph: int
    name: str  # builtin name ("CONV_2D") or the custom code ("FlexMatrixInverse")
    kind: str  # "builtin", "custom" or "flex" (TF Select: needs the Flex delegate)
    version: int
    inputs: tuple[int, ...]  # tensor indices in the subgraph; -1 = optional input left out
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Subgraph:
    index: int
    name: str
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensors_at(self, indices: tuple[int, ...]) -> tuple[Tensor, ...]:
        """The tensors at these indices, skipping -1 (an optional input that is absent)."""
        return tuple(self.tensors[i] for i in indices if i >= 0)


@dataclass(frozen=True)
class TFLiteModel:
    schema_version: int
    description: str
    subgraphs: tuple[Subgraph, ...]
    size: int  # bytes in the file

    @property
    def operators(self) -> tuple[Operator, ...]:
        """Every operator of every subgraph (control flow bodies are subgraphs too)."""
        return tuple(op for sg in self.subgraphs for op in sg.operators)

    def op_names(self) -> tuple[str, ...]:
        """The distinct op names, sorted: what a target must be able to run."""
        return tuple(sorted({op.name for op in self.operators}))

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(op.name for op in self.operators).items()))

    def input_tensors(self) -> tuple[Tensor, ...]:
        main = self.subgraphs[0]
        return main.tensors_at(main.inputs)

    def output_tensors(self) -> tuple[Tensor, ...]:
        main = self.subgraphs[0]
        return main.tensors_at(main.outputs)

    def inputs_of(self, op: Operator) -> tuple[Tensor, ...]:
        return self.subgraphs[op.subgraph].tensors_at(op.inputs)

    def outputs_of(self, op: Operator) -> tuple[Tensor, ...]:
        return self.subgraphs[op.subgraph].tensors_at(op.outputs)


def read_tflite_file(path: str | os.PathLike) -> TFLiteModel:
    """Read a .tflite file. It is memory-mapped: only the pages the reader touches are loaded,
    so a 3 GB model with its weights past the flatbuffer lists its ops as fast as a small one."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise TFLiteFormatError(f"{source} is not a regular file: pass a .tflite file")
            if info.st_size == 0:
                return read_tflite(b"", source)  # mmap refuses empty files; this says "empty"
            # A mapping sees the file as it is on disk; edgepipe replaces files by renaming a
            # finished copy (models/files.py), so a file is never cut short under a reader.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return read_tflite(data, source)
    except OSError as e:
        raise TFLiteFormatError(
            f"cannot read {source}: {e.strerror or e}; check the path and its permissions"
        ) from None


def read_tflite(data: bytes, source: str = "<bytes>") -> TFLiteModel:
    """Read a TFLite model from bytes (or any buffer: bytearray, memoryview, mmap)."""
    _check_file_kind(data, source)
    return _Reader(data, source).model()


def _check_file_kind(data, source: str) -> None:
    """Name what the file is when it is not a TFLite flatbuffer: the usual accidents first."""
    if len(data) == 0:
        raise TFLiteFormatError(f"{source} is empty (0 bytes): re-export it")
    head = bytes(data[:1024])
    if head[4:8] == FILE_IDENTIFIER:
        return  # checked first: a root offset of 60 makes a real model start with "<"
    not_tflite = f"{source} is not a TFLite flatbuffer: it looks like"
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        raise TFLiteFormatError(f"{not_tflite} a Git LFS pointer file; run `git lfs pull`")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise TFLiteFormatError(
            f"{not_tflite} a zip archive (a .keras file?); "
            "convert the Keras model to .tflite first")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise TFLiteFormatError(
            f"{not_tflite} an HDF5 file (a .h5 Keras model?); convert it to .tflite first")
    if head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<"):
        raise TFLiteFormatError(
            f"{not_tflite} an HTML page (a download that saved an error page?); download it again")
    if len(data) < 8:
        raise TFLiteFormatError(
            f"{source} is truncated or not a TFLite file: only {len(data)} bytes, too short for a "
            "root offset and the 'TFL3' identifier; re-export it")
    shown = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}"
                    for b in head[4:8])  # letters and digits only: the CLI prints rich markup
    raise TFLiteFormatError(
        f"{source} is not a TFLite flatbuffer: its file identifier is '{shown}', expected 'TFL3'; "
        "check that it is a .tflite file")


class _Table:
    """Where one flatbuffer table lives, already bounds-checked, and how to name it in errors."""

    __slots__ = ("pos", "vtable", "vtable_size", "size", "where")

    def __init__(self, pos: int, vtable: int, vtable_size: int, size: int, where: str):
        self.pos, self.vtable, self.vtable_size, self.size = pos, vtable, vtable_size, size
        self.where = where


class _Reader:
    def __init__(self, data, source: str):
        self.data = data
        self.size = len(data)
        self.source = source
        # Tables, vector elements and string bytes decoded so far may not exceed the file size
        # (a well-formed file stores each of them at least once, in at least one byte; only
        # vtables are shared, and those are not counted). Overlapping offsets, e.g. every
        # operator pointing at the same long input list, would otherwise cost size**2.
        self.budget = self.size + 64

    # -- errors -----------------------------------------------------------------------------

    def corrupt(self, where: str, what: str) -> TFLiteFormatError:
        return TFLiteFormatError(
            f"{self.source} is truncated or corrupt: {where} {what}; "
            "re-export the model or copy the file again")

    def _outside(self, pos: int, n: int, where: str) -> TFLiteFormatError:
        if pos < 0:
            detail = f"offset {pos} < 0"
        elif pos >= self.size:
            detail = f"offset {pos} > size {self.size}"
        else:
            detail = f"offset {pos} + {n} bytes > size {self.size}"
        return self.corrupt(where, f"points outside the file ({detail})")

    def spend(self, n: int, where: str) -> None:
        self.budget -= n
        if self.budget < 0:
            raise self.corrupt(where, "is reached through more references than a file of "
                                      f"{self.size} bytes can hold (overlapping offsets)")

    # -- flatbuffer primitives --------------------------------------------------------------

    def get(self, fmt: struct.Struct, pos: int, where: str):
        if pos < 0 or pos + fmt.size > self.size:
            raise self._outside(pos, fmt.size, where)
        return fmt.unpack_from(self.data, pos)[0]

    def table(self, pos: int, where: str) -> _Table:
        self.spend(1, where)
        vtable = pos - self.get(_I32, pos, where)
        vtable_size = self.get(_U16, vtable, f"{where} vtable")
        size = self.get(_U16, vtable + 2, f"{where} vtable")
        if vtable_size < 4 or vtable_size % 2 or size < 4:
            raise self.corrupt(where, f"has a malformed vtable (vtable size {vtable_size}, "
                                      f"table size {size})")
        if vtable + vtable_size > self.size:
            raise self._outside(vtable, vtable_size, f"{where} vtable")
        if pos + size > self.size:
            raise self._outside(pos, size, where)
        return _Table(pos, vtable, vtable_size, size, where)

    def field(self, t: _Table, slot: int, width: int, name: str) -> int | None:
        """Absolute position of a field, or None when absent (the schema default applies)."""
        if slot + 2 > t.vtable_size:
            return None  # written by an older schema that did not have this field yet
        offset = _U16.unpack_from(self.data, t.vtable + slot)[0]
        if offset == 0:
            return None
        if offset + width > t.size:  # the table's bytes were bounds-checked, so this suffices
            raise self.corrupt(f"{t.where} {name}",
                               f"lies outside its table (offset {offset}, table size {t.size})")
        return t.pos + offset

    def scalar(self, t: _Table, slot: int, fmt: struct.Struct, default, name: str):
        pos = self.field(t, slot, fmt.size, name)
        return default if pos is None else fmt.unpack_from(self.data, pos)[0]

    def vector(self, t: _Table, slot: int, elem_size: int, name: str) -> tuple[int, int]:
        """(start, length) of a vector or string field; (0, 0) when absent."""
        pos = self.field(t, slot, 4, name)
        if pos is None:
            return 0, 0
        where = f"{t.where} {name}"
        pos += self.get(_U32, pos, where)
        length = self.get(_U32, pos, where)
        start = pos + 4
        if length * elem_size > self.size - start:
            raise self.corrupt(where, f"claims {length} elements of {elem_size} bytes, more than "
                                      f"the {self.size - start} bytes left in the file")
        return start, length

    def numbers(self, t: _Table, slot: int, code: str, name: str) -> tuple:
        """A vector of scalars (struct code "i", "f", "q") as a tuple of Python numbers."""
        start, length = self.vector(t, slot, struct.calcsize("<" + code), name)
        self.spend(length, f"{t.where} {name}")
        return struct.unpack_from(f"<{length}{code}", self.data, start)

    def string(self, t: _Table, slot: int, name: str) -> str:
        """A string field ("" when absent); bad UTF-8 is shown with U+FFFD, not an error."""
        if self.field(t, slot, 4, name) is None:
            return ""
        start, length = self.vector(t, slot, 1, name)
        # FlatBuffers strings end in a NUL that the length does not count; the runtime's verifier
        # insists on it, and checking it catches a file cut inside its last string.
        if self.get(_U8, start + length, f"{t.where} {name}") != 0:
            raise self.corrupt(f"{t.where} {name}", "is not NUL-terminated")
        self.spend(length // 8 + 1, f"{t.where} {name}")
        return bytes(self.data[start:start + length]).decode("utf-8", errors="replace")

    def subtable(self, t: _Table, slot: int, name: str) -> _Table | None:
        pos = self.field(t, slot, 4, name)
        if pos is None:
            return None
        return self.table(pos + self.get(_U32, pos, f"{t.where} {name}"), f"{t.where} {name}")

    def tables(self, t: _Table, slot: int, name: str, item: str) -> list[_Table]:
        """A vector of tables; `item` names each one in errors ("subgraph 0 tensor 3")."""
        start, length = self.vector(t, slot, 4, name)
        self.spend(length, f"{t.where} {name}")
        offsets = struct.unpack_from(f"<{length}I", self.data, start)
        return [self.table(start + 4 * i + offset, f"{item} {i}")
                for i, offset in enumerate(offsets)]

    # -- the TFLite schema (slots from schema.fbs; see the module docstring) ----------------

    def model(self) -> TFLiteModel:
        root = self.table(self.get(_U32, 0, "the root offset"), "the model")
        version = self.scalar(root, 4, _U32, 0, "version")
        opcodes = [self.operator_code(t) for t in
                   self.tables(root, 6, "operator code list", "operator code")]
        buffer_sizes = [self.buffer_bytes(t) for t in
                        self.tables(root, 12, "buffer list", "buffer")]
        subgraphs = tuple(self.subgraph(t, i, opcodes, buffer_sizes) for i, t in
                          enumerate(self.tables(root, 8, "subgraph list", "subgraph")))
        if not subgraphs:
            raise self.corrupt("the model", "has no subgraphs")
        description = self.string(root, 10, "description")
        return TFLiteModel(version, description, subgraphs, self.size)

    def operator_code(self, t: _Table) -> tuple[str, str, int]:
        """(name, kind, version) of one OperatorCode."""
        # Schema 3a widened the code from int8 to int32: old files only have the deprecated
        # field, new ones put 127 (PLACEHOLDER_FOR_GREATER_OP_CODES) there for codes >= 127.
        code = max(self.scalar(t, 4, _I8, 0, "deprecated builtin code"),
                   self.scalar(t, 10, _I32, 0, "builtin code"))
        version = self.scalar(t, 8, _I32, 1, "version")
        if code < 0:
            raise self.corrupt(t.where, f"has a negative builtin code ({code})")
        if code != CUSTOM:
            return BUILTIN_OPERATORS.get(code, f"UNKNOWN_BUILTIN_{code}"), "builtin", version
        custom_code = self.string(t, 6, "custom code")
        if not custom_code:
            raise self.corrupt(t.where, "is a custom operator without a custom code")
        # The converter names TF Select ops "Flex" + the TF op name (FlexMatrixInverse).
        return custom_code, "flex" if custom_code.startswith("Flex") else "custom", version

    def buffer_bytes(self, t: _Table) -> int:
        _, length = self.vector(t, 4, 1, "data")
        if length:
            return length
        # Models over 2 GB keep their weights after the flatbuffer: offset (from the start of
        # the file) and size. The schema calls offsets <= 1 invalid (1 is a writer placeholder).
        offset = self.scalar(t, 6, _U64, 0, "offset")
        size = self.scalar(t, 8, _U64, 0, "size")
        if offset > 1 and offset + size > self.size:
            raise self.corrupt(t.where, f"data lies outside the file (offset {offset} + {size} "
                                        f"bytes > size {self.size})")
        return size if offset > 1 else 0

    def subgraph(self, t: _Table, index: int, opcodes: list, buffer_sizes: list) -> Subgraph:
        where = f"subgraph {index}"
        tensors = tuple(self.tensor(tt, i, buffer_sizes) for i, tt in
                        enumerate(self.tables(t, 4, "tensor list", f"{where} tensor")))
        inputs = self.indices(t, 6, "input list", len(tensors), allow_absent=False)
        outputs = self.indices(t, 8, "output list", len(tensors), allow_absent=False)
        operators = []
        for i, ot in enumerate(self.tables(t, 10, "operator list", f"{where} operator")):
            opcode_index = self.scalar(ot, 4, _U32, 0, "opcode index")
            if opcode_index >= len(opcodes):
                raise self.corrupt(ot.where, f"uses operator code {opcode_index}, but the model "
                                             f"has {len(opcodes)}")
            name, kind, version = opcodes[opcode_index]
            operators.append(Operator(
                i, index, name, kind, version,
                self.indices(ot, 6, "input list", len(tensors), allow_absent=True),
                self.indices(ot, 8, "output list", len(tensors), allow_absent=True)))
        return Subgraph(index, self.string(t, 12, "name"), tensors, tuple(operators),
                        inputs, outputs)

    def indices(self, t: _Table, slot: int, name: str, n_tensors: int, allow_absent: bool):
        values = self.numbers(t, slot, "i", name)
        low = -1 if allow_absent else 0
        for v in values:
            if not low <= v < n_tensors:
                raise self.corrupt(f"{t.where} {name}", f"refers to tensor {v}, but the subgraph "
                                                        f"has {n_tensors} tensors")
        return values

    def tensor(self, t: _Table, index: int, buffer_sizes: list) -> Tensor:
        shape = self.numbers(t, 4, "i", "shape")
        type_code = self.scalar(t, 6, _I8, 0, "type")
        buffer = self.scalar(t, 8, _U32, 0, "buffer")
        if buffer >= len(buffer_sizes) and buffer != 0:  # 0 = no data, even with no buffers
            raise self.corrupt(t.where, f"uses buffer {buffer}, but the model has "
                                        f"{len(buffer_sizes)}")
        scales, zero_points, quantized_dimension = (), (), 0
        q = self.subtable(t, 12, "quantization")
        if q is not None:  # TF writes an empty one for float tensors too
            scales = self.numbers(q, 8, "f", "scale list")
            zero_points = self.numbers(q, 10, "q", "zero point list")
            quantized_dimension = self.scalar(q, 16, _I32, 0, "quantized dimension")
        return Tensor(
            index=index,
            name=self.string(t, 10, "name"),
            dtype=TENSOR_TYPES.get(type_code, f"unknown_type_{type_code}"),
            shape=shape,
            scales=scales,
            zero_points=zero_points,
            quantized_dimension=quantized_dimension,
            is_variable=bool(self.scalar(t, 14, _U8, 0, "is variable")),
            buffer_bytes=buffer_sizes[buffer] if buffer < len(buffer_sizes) else 0,
            # Absent in files written before it existed, and for fully static tensors.
            shape_signature=self.numbers(t, 18, "i", "shape signature") or shape)
