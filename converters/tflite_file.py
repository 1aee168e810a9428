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

The file is untrusted (truncated downloads, LFS pointers, bit rot, a hostile run folder). Before
anything is decoded, the whole file is verified with the rules of the flatbuffers verifier that
LiteRT runs on every model (flatbuffers/verifier.h): every table of the schema (builtin_ops.TABLES,
builtin options included) with its vtable, every offset, vector length, string terminator and
alignment, whether the audit needs that field or not. So a file LiteRT refuses as "not a valid
Flatbuffer buffer" is refused here too, naming the field, and a file it accepts is accepted. Then
the decoder adds the checks of LiteRT's interpreter builder (indices, schema version,
quantization, constant data sizes). A work budget proportional to the file size stops files whose
offsets overlap from costing more than a file of that size can hold. Anything wrong becomes one
TFLiteFormatError line; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.errors import EdgepipeError
from ..core.files import file_kind
from .builtin_ops import BUILTIN_OPERATORS, CUSTOM, TABLES, TENSOR_TYPES, UNIONS

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
    inputs: tuple[int, ...]  # tensor indices; -1 (absent) is legal here too
    outputs: tuple[int, ...]

    def tensors_at(self, indices: tuple[int, ...]) -> tuple[Tensor, ...]:
        """The tensors at these indices, skipping -1 (an optional tensor that is absent)."""
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
    with mapped_file(path) as data:
        return read_tflite(data, str(path))


@contextlib.contextmanager
def mapped_file(path: str | os.PathLike) -> Iterator:
    """The bytes of a regular file, memory-mapped (b"" when empty); anything else that a path can
    name is refused with one TFLiteFormatError line and never read.

    A FIFO would block `open` until a writer comes, a device (/dev/zero) never ends, a folder
    cannot be read: so the path is stat-ed first, and opened only when it names a regular file.
    The open is non-blocking and the opened file is checked again (fstat), so a path swapped for
    a FIFO in between cannot hang the reader either. Symbolic links are followed (models kept by
    git-annex or DVC are links), but a link loop is named as one."""
    source = str(path)
    try:
        _refuse_unless_regular(os.stat(path).st_mode, source)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise _os_error(e, source) from None
    try:
        try:
            info = os.fstat(fd)
            _refuse_unless_regular(info.st_mode, source)
            # A mapping sees the file as it is on disk; edgepipe replaces files by renaming a
            # finished copy (core/files.py), so a file is never cut short under a reader.
            # mmap refuses empty files: the reader is given b"" and says "empty".
            data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if info.st_size else None
        except OSError as e:
            raise _os_error(e, source) from None
        if data is None:
            yield b""
            return
        with data:
            yield data
    finally:
        os.close(fd)


def _refuse_unless_regular(mode: int, source: str) -> None:
    if file_kind(mode):
        raise TFLiteFormatError(f"{source} is {file_kind(mode)}, not a regular file: pass the "
                                "path of a .tflite file")


def _os_error(e: OSError, source: str) -> TFLiteFormatError:
    if e.errno == errno.ENOENT and os.path.islink(source):
        return TFLiteFormatError(f"{source} is a symbolic link to {os.readlink(source)}, which "
                                 "does not exist: point it at a .tflite file")
    if e.errno == errno.ELOOP:
        return TFLiteFormatError(f"{source} is a symbolic link that loops (or a chain of more "
                                 "than 40 links): point it at a .tflite file")
    return TFLiteFormatError(
        f"cannot read {source}: {e.strerror or e}; check the path and its permissions")


def read_tflite(data: bytes, source: str = "<bytes>") -> TFLiteModel:
    """Read a TFLite model from bytes (or any buffer: bytearray, memoryview, mmap)."""
    _check_file_kind(data, source)
    reader = _Reader(data, source)
    reader.verify()
    return reader.model()


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


# The flatbuffers verifier's limits (flatbuffers/verifier.h), which LiteRT applies to every model:
# offsets and sizes below 2 GB (FLATBUFFERS_MAX_BUFFER_SIZE; bigger models keep their weights
# after the flatbuffer), at least 12 bytes, at most a million tables.
_MAX_BUFFER = 2**31 - 1
_MIN_BUFFER = 12
_MAX_TABLES = 1_000_000
_WIDTHS = {"bool": 1, "byte": 1, "ubyte": 1, "short": 2, "ushort": 2, "int": 4, "uint": 4,
           "float": 4, "long": 8, "ulong": 8, "double": 8}
# TensorType codes of fixed-size elements -> bytes each: what a constant tensor's data must hold.
_ELEMENT_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
                  15: 4, 16: 2, 18: 2}


def _of(where: str, label: str) -> str:
    """A field of the table named `where`: "subgraph 0 name", "the model's buffer list"."""
    return f"the model's {label}" if where == "the model" else f"{where} {label}"


def _label(name: str, kind: str) -> str:
    """How errors name a field: "shape", "input list" (a vector of inputs), "operator list"."""
    words = name.replace("_", " ")
    return f"{words[:-1]} list" if kind.startswith("[") and words.endswith("s") else words


def _schema() -> dict[str, tuple[tuple[int, str, str], ...]]:
    """{table: ((slot, label, type), ...)} from builtin_ops.TABLES (fields in slot order)."""
    return {table: tuple((4 + 2 * i, _label(*field.split(":")), field.split(":")[1])
                         for i, field in enumerate(fields.split()) if field != "-")
            for table, fields in TABLES.items()}


SCHEMA = _schema()


class _Table:
    """Where one verified flatbuffer table lives, and how to name it in errors."""

    __slots__ = ("pos", "vtable", "vtable_size", "where")

    def __init__(self, pos: int, vtable: int, vtable_size: int, where: str):
        self.pos, self.vtable, self.vtable_size, self.where = pos, vtable, vtable_size, where


class _Reader:
    """`verify()` checks every offset and length of the file as the flatbuffers verifier that
    LiteRT runs on every model does (the same rules, so a file it refuses is refused here, and
    one it accepts is accepted); `model()` then decodes what the audit needs, with the checks
    LiteRT's interpreter builder adds (indices, schema version, quantization, constant sizes)."""

    def __init__(self, data, source: str):
        self.data = data
        self.size = len(data)
        # The verifier sees at most the first 2 GB: the flatbuffer lies there, weights past it.
        self.limit = min(self.size, _MAX_BUFFER - 1)
        self.source = source
        self.tables_seen = 0
        # Tables, strings, vector elements and string bytes decoded so far may not exceed the
        # file size (a well-formed file stores each of them at least once, in at least one
        # byte; only vtables are shared, and those are not counted). Overlapping offsets, e.g.
        # every operator pointing at the same long input list, would otherwise cost size**2.
        self.budget = self.size + 64

    # -- errors -----------------------------------------------------------------------------

    def corrupt(self, where: str, what: str) -> TFLiteFormatError:
        return TFLiteFormatError(
            f"{self.source} is truncated or corrupt: {where} {what}; "
            "re-export the model or copy the file again")

    def spend(self, n: int, where: str) -> None:
        self.budget -= n
        if self.budget < 0:
            raise self.corrupt(where, "is reached through more references than a file of "
                                      f"{self.size} bytes can hold (overlapping offsets)")

    # -- the flatbuffers verifier's rules ---------------------------------------------------

    def u8(self, pos: int) -> int:
        return self.data[pos]

    def u16(self, pos: int) -> int:
        return _U16.unpack_from(self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return _U32.unpack_from(self.data, pos)[0]

    def in_file(self, pos: int, n: int, where: str) -> None:
        """Bytes [pos, pos + n) lie in the verified part of the file."""
        if 0 <= pos and n < self.limit and pos <= self.limit - n:
            return
        if pos < 0:
            detail = f"offset {pos} < 0"
        elif pos + n <= self.size:  # inside the file, past the first 2 GB
            detail = f"offset {pos} is past the 2 GB that flatbuffer offsets can reach"
        elif pos >= self.size:
            detail = f"offset {pos} > size {self.size}"
        else:
            detail = f"offset {pos} + {n} bytes > size {self.size}"
        raise self.corrupt(where, f"points outside the file ({detail})")

    def scalar_at(self, pos: int, width: int, where: str) -> None:
        if pos % width:
            raise self.corrupt(where, f"is misaligned (offset {pos} is not a multiple of "
                                      f"{width})")
        self.in_file(pos, width, where)

    def offset_at(self, pos: int, where: str) -> int:
        """Where the uoffset stored at `pos` points."""
        self.scalar_at(pos, 4, where)
        offset = self.u32(pos)
        if offset == 0:
            raise self.corrupt(where, "has an offset of 0 (it points at itself)")
        self.in_file(pos + offset, 1, where)  # also keeps it below 2**31, as the verifier does
        return pos + offset

    def vector_at(self, pos: int, elem_size: int, where: str) -> tuple[int, int]:
        """(start, length) of the vector or string at `pos`."""
        self.scalar_at(pos, 4, where)
        length = self.u32(pos)
        left = self.limit - pos - 4
        if length >= _MAX_BUFFER // elem_size or length * elem_size > left:
            raise self.corrupt(where, f"claims {length} elements of {elem_size} bytes, more than "
                                      f"the {left} bytes left in the file")
        return pos + 4, length

    def string_at(self, pos: int, where: str) -> None:
        self.spend(1, where)
        start, length = self.vector_at(pos, 1, where)
        # FlatBuffers strings end in a NUL that the length does not count.
        self.in_file(start + length, 1, where)
        if self.u8(start + length) != 0:
            raise self.corrupt(where, "is not NUL-terminated")

    def table_at(self, pos: int, kind: str, where: str) -> None:
        """Verify the table of type `kind` at `pos`, and everything it refers to."""
        self.spend(1, where)
        self.tables_seen += 1
        if self.tables_seen > _MAX_TABLES:
            raise self.corrupt("the model", f"has more than {_MAX_TABLES:,} tables, more than "
                                            "the flatbuffers verifier accepts")
        self.scalar_at(pos, 4, where)
        vtable = pos - _I32.unpack_from(self.data, pos)[0]
        self.scalar_at(vtable, 2, f"{where} vtable")
        vtable_size = self.u16(vtable)
        if vtable_size % 2:
            raise self.corrupt(where, f"has a malformed vtable (vtable size {vtable_size} is "
                                      "odd)")
        self.in_file(vtable, vtable_size, f"{where} vtable")
        for slot, label, field_kind in SCHEMA.get(kind, ()):
            if slot + 2 > vtable_size:
                break  # written by an older schema: this field and the ones after it are absent
            field = self.u16(vtable + slot)
            if field:
                self.field_at(pos, vtable, vtable_size, slot, pos + field, field_kind,
                              _of(where, label))

    def field_at(self, table: int, vtable: int, vtable_size: int, slot: int, pos: int,
                 kind: str, where: str) -> None:
        if kind in _WIDTHS:
            self.scalar_at(pos, _WIDTHS[kind], where)
            return
        target = self.offset_at(pos, where)
        if kind == "string":
            self.string_at(target, where)
        elif kind in UNIONS:  # its type code is the ubyte field in the slot before
            type_field = self.u16(vtable + slot - 2)
            code = self.u8(table + type_field) if type_field else 0
            if 1 <= code <= len(UNIONS[kind]):  # 0 is NONE; unknown codes are not checked
                self.table_at(target, UNIONS[kind][code - 1], where)
        elif kind.startswith("["):
            item = kind[1:-1]
            if item in _WIDTHS:
                self.vector_at(target, _WIDTHS[item], where)
                return
            start, length = self.vector_at(target, 4, where)
            name = where.removeprefix("the model's ").removesuffix(" list")  # "subgraph 0 tensor"
            for i in range(length):
                at = start + 4 * i
                self.table_at(at + self.u32(at), item, f"{name} {i}")
        else:
            self.table_at(target, kind, where)

    def verify(self) -> None:
        if self.size < _MIN_BUFFER:
            raise self.corrupt("the model", f"is only {self.size} bytes, too short for a "
                                            "flatbuffer")
        self.table_at(self.offset_at(0, "the root offset"), "Model", "the model")

    # -- reading verified tables ------------------------------------------------------------

    def table(self, pos: int, where: str) -> _Table:
        self.spend(1, where)
        vtable = pos - _I32.unpack_from(self.data, pos)[0]
        return _Table(pos, vtable, self.u16(vtable), where)

    def field(self, t: _Table, slot: int) -> int | None:
        """Absolute position of a field, or None when absent (the schema default applies)."""
        if slot + 2 > t.vtable_size:
            return None  # written by an older schema that did not have this field yet
        offset = self.u16(t.vtable + slot)
        return t.pos + offset if offset else None

    def scalar(self, t: _Table, slot: int, fmt: struct.Struct, default):
        pos = self.field(t, slot)
        return default if pos is None else fmt.unpack_from(self.data, pos)[0]

    def vector(self, t: _Table, slot: int) -> tuple[int, int] | None:
        """(start, length) of a vector or string field; None when absent."""
        pos = self.field(t, slot)
        if pos is None:
            return None
        pos += self.u32(pos)
        return pos + 4, self.u32(pos)

    def numbers(self, t: _Table, slot: int, code: str, name: str) -> tuple:
        """A vector of scalars (struct code "i", "f", "q") as a tuple of Python numbers."""
        start, length = self.vector(t, slot) or (0, 0)
        self.spend(length, _of(t.where, name))
        return struct.unpack_from(f"<{length}{code}", self.data, start)

    def string(self, t: _Table, slot: int, name: str) -> str:
        """A string field ("" when absent); bad UTF-8 is shown with U+FFFD, not an error."""
        start, length = self.vector(t, slot) or (0, 0)
        self.spend(length // 8 + 1, _of(t.where, name))
        return bytes(self.data[start:start + length]).decode("utf-8", errors="replace")

    def subtable(self, t: _Table, slot: int, name: str) -> _Table | None:
        pos = self.field(t, slot)
        return None if pos is None else self.table(pos + self.u32(pos), _of(t.where, name))

    def tables(self, t: _Table, slot: int, name: str, item: str) -> list[_Table]:
        """A vector of tables ([] when absent); `item` names each one ("subgraph 0 tensor")."""
        start, length = self.vector(t, slot) or (0, 0)
        self.spend(length, _of(t.where, name))
        return [self.table(start + 4 * i + self.u32(start + 4 * i), f"{item} {i}")
                for i in range(length)]

    # -- the TFLite schema (slots from schema.fbs, as in builtin_ops.TABLES) ----------------

    def model(self) -> TFLiteModel:
        root = self.table(self.u32(0), "the model")
        version = self.scalar(root, 4, _U32, 0)
        if version != 3:  # the interpreter builder refuses any other version
            raise self.corrupt("the model", f"has schema version {version}; TFLite files have "
                                            "version 3")
        if self.field(root, 12) is None:  # an empty list is fine; none at all is refused
            raise self.corrupt("the model", "has no buffer list")
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
        code = max(self.scalar(t, 4, _I8, 0), self.scalar(t, 10, _I32, 0))
        version = self.scalar(t, 8, _I32, 1)
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
        _, length = self.vector(t, 4) or (0, 0)
        if length:
            return length
        return self.after_flatbuffer(t, 6, 8, "data")

    def after_flatbuffer(self, t: _Table, offset_slot: int, size_slot: int, what: str) -> int:
        """Bytes stored after the flatbuffer, as models over 2 GB keep their weights (and
        custom ops their options): offset from the start of the file, and size; 0 when not
        there. The schema calls offsets <= 1 invalid (1 is a writer's placeholder)."""
        offset = self.scalar(t, offset_slot, _U64, 0)
        size = self.scalar(t, size_slot, _U64, 0)
        if offset > 1 and offset + size > self.size:
            raise self.corrupt(t.where, f"{what} lies outside the file (offset {offset} + {size} "
                                        f"bytes > size {self.size})")
        return size if offset > 1 else 0

    def subgraph(self, t: _Table, index: int, opcodes: list, buffer_sizes: list) -> Subgraph:
        where = f"subgraph {index}"
        if self.field(t, 4) is None:
            raise self.corrupt(where, "has no tensor list")
        tensors = tuple(self.tensor(tt, i, buffer_sizes) for i, tt in
                        enumerate(self.tables(t, 4, "tensor list", f"{where} tensor")))
        inputs = self.indices(t, 6, "input list", len(tensors))
        outputs = self.indices(t, 8, "output list", len(tensors))
        operators = []
        for i, ot in enumerate(self.tables(t, 10, "operator list", f"{where} operator")):
            opcode_index = self.scalar(ot, 4, _U32, 0)
            if opcode_index >= len(opcodes):
                raise self.corrupt(ot.where, f"uses operator code {opcode_index}, but the model "
                                             f"has {len(opcodes)}")
            name, kind, version = opcodes[opcode_index]
            if kind != "builtin" and self.field(ot, 14) is None:  # no options in the flatbuffer
                self.after_flatbuffer(ot, 22, 24, "custom options")
            operators.append(Operator(
                i, index, name, kind, version,
                self.indices(ot, 6, "input list", len(tensors)),
                self.indices(ot, 8, "output list", len(tensors))))
        return Subgraph(index, self.string(t, 12, "name"), tensors, tuple(operators),
                        inputs, outputs)

    def indices(self, t: _Table, slot: int, name: str, n_tensors: int):
        """Tensor indices; -1 is an absent optional tensor, for operators and subgraphs alike
        (the interpreter accepts it in both)."""
        values = self.numbers(t, slot, "i", name)
        for v in values:
            if not -1 <= v < n_tensors:
                raise self.corrupt(_of(t.where, name), f"refers to tensor {v}, but the "
                                                       f"subgraph has {n_tensors} tensors")
        return values

    def tensor(self, t: _Table, index: int, buffer_sizes: list) -> Tensor:
        shape = self.numbers(t, 4, "i", "shape")
        type_code = self.scalar(t, 6, _I8, 0)
        if type_code < 0:
            raise self.corrupt(t.where, f"has an invalid type code ({type_code})")
        buffer = self.scalar(t, 8, _U32, 0)
        if buffer >= len(buffer_sizes) and buffer != 0:  # 0 = no data, even with no buffers
            raise self.corrupt(t.where, f"uses buffer {buffer}, but the model has "
                                        f"{len(buffer_sizes)}")
        data_bytes = buffer_sizes[buffer] if buffer < len(buffer_sizes) else 0
        if data_bytes:
            self.constant(t, shape, type_code, buffer, data_bytes)
        scales, zero_points, quantized_dimension = (), (), 0
        q = self.subtable(t, 12, "quantization")
        if q is not None:  # TF writes an empty one for float tensors too
            scales = self.numbers(q, 8, "f", "scale list")
            zero_points = self.numbers(q, 10, "q", "zero point list")
            quantized_dimension = self.scalar(q, 16, _I32, 0)
            if scales and self.scalar(q, 12, _U8, 0) not in (2, 3):  # not blockwise, multi-axis
                self.affine(q, shape, scales, zero_points, quantized_dimension)
        return Tensor(
            index=index,
            name=self.string(t, 10, "name"),
            dtype=TENSOR_TYPES.get(type_code, f"unknown_type_{type_code}"),
            shape=shape,
            scales=scales,
            zero_points=zero_points,
            quantized_dimension=quantized_dimension,
            is_variable=bool(self.scalar(t, 14, _U8, 0)),
            buffer_bytes=data_bytes,
            # Absent in files written before it existed, and for fully static tensors.
            shape_signature=self.numbers(t, 18, "i", "shape signature") or shape)

    def constant(self, t: _Table, shape: tuple, type_code: int, buffer: int, size: int) -> None:
        """A tensor with data: as the interpreter builder checks it (variables have none; the
        data holds every element, unless the tensor is sparse or its elements vary in size)."""
        if self.scalar(t, 14, _U8, 0):
            raise self.corrupt(t.where, f"is a variable but has constant data (buffer {buffer})")
        width = _ELEMENT_BYTES.get(type_code)
        sparse_or_external = self.field(t, 16) is not None or self.scalar(t, 24, _U32, 0)
        if width is None or sparse_or_external or min(shape, default=0) < 0:
            return
        needed = width
        for dim in shape:
            needed *= dim
        if needed > size:
            raise self.corrupt(t.where, f"of shape {list(shape)} needs {needed} bytes of data, "
                                        f"but buffer {buffer} holds {size}")

    def affine(self, q: _Table, shape: tuple, scales: tuple, zero_points: tuple,
               dimension: int) -> None:
        """Per-tensor or per-axis quantization, as the interpreter builder checks it."""
        if len(zero_points) != len(scales):
            raise self.corrupt(q.where, f"has {len(scales)} scales but {len(zero_points)} zero "
                                        "points")
        if dimension < 0 or (shape and dimension >= len(shape)):
            raise self.corrupt(q.where, f"is along dimension {dimension}, but the tensor has "
                                        f"{len(shape)} dimensions")
        if len(scales) != 1 and shape and len(scales) != shape[dimension]:
            raise self.corrupt(q.where, f"has {len(scales)} scales for dimension {dimension} of "
                                        f"size {shape[dimension]} (expected 1 or "
                                        f"{shape[dimension]})")
