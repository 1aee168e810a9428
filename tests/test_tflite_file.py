"""The stdlib-only TFLite reader, on files TF 2.21 writes, with the LiteRT interpreter as oracle.

The models are converted once per module; everything else (bad inputs, patched offsets, the
fuzz) starts from their bytes. Synthetic files for what TF does not write (old schema op codes,
shared vectors, what the interpreter builder refuses) are built with the FlatBuffers object API
of ai-edge-litert's generated schema. Where the reader refuses or accepts a file for a rule of
the flatbuffers verifier or of the interpreter builder, LiteRT's own load (in a child process,
pipeline/check.py) must say the same.
"""

import inspect
import json
import os
import random
import re
import socket
import statistics
import struct
import time
import warnings

import numpy as np
import pytest
from conftest import imported_modules

from edgepipe.converters.builtin_ops import BUILTIN_OPERATORS, TABLES, TENSOR_TYPES, UNIONS
from edgepipe.converters.tflite_file import (
    TFLiteFormatError,
    read_tflite,
    read_tflite_file,
)

MODELS = ("float32", "int8", "flex", "buffer_offset")


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    """Convert tiny Keras 3 models once: float32, full int8, one with a Flex (TF Select) op, and
    one whose weights sit after the flatbuffer (Buffer.offset/size, as in models over 2 GB)."""
    import keras
    import tensorflow as tf

    out = tmp_path_factory.mktemp("tflite")
    files = {"keras": out / "mlp.keras"}

    def mlp():
        inp = keras.Input((10,))
        # A non-zero bias stays an input of FULLY_CONNECTED; the converter drops the zero bias
        # of the second layer and writes -1 (absent optional input), which the reader must skip.
        x = keras.layers.Dense(16, activation="relu", bias_initializer="ones")(inp)
        return keras.Model(inp, keras.layers.Dense(1)(x))

    def cnn():
        inp = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
        x = keras.layers.Flatten()(x)
        return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))

    class Inverse(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.inv(x)  # no TFLite builtin: MatrixInverse goes through Flex

    def write(name, model, configure=lambda converter: None):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        configure(converter)
        files[name] = out / f"{name}.tflite"
        files[name].write_bytes(converter.convert())

    def full_int8(converter):
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.normal(size=(1, 8, 8, 1)).astype("float32")] for _ in range(16))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8

    def with_flex(converter):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]

    def buffers_after_flatbuffer(converter):
        # What the converter does on its own for models over 2 GB; forced here on a tiny one.
        converter._experimental_use_buffer_offset = True

    model = mlp()
    model.save(files["keras"])
    write("float32", model)
    with warnings.catch_warnings():  # int8 input without input statistics: meant, and harmless
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        write("int8", cnn(), full_int8)
    square = keras.Input((3, 3))
    write("flex", keras.Model(square, Inverse()(square)), with_flex)
    inp = keras.Input((10,))
    write("buffer_offset", keras.Model(inp, keras.layers.Dense(4)(inp)), buffers_after_flatbuffer)
    return files


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))  # creating it runs no kernel: Flex models load too


# -- what the reader sees, against the runtime ---------------------------------------------------

@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in MODELS])
def test_operators_match_the_interpreter(tflite_files, name):
    model = read_tflite_file(tflite_files[name])
    expected = [(d["op_name"], tuple(d["inputs"].tolist()), tuple(d["outputs"].tolist()))
                for d in _interpreter(tflite_files[name])._get_ops_details()]
    assert expected, "the oracle listed no operators"
    assert [(op.name, op.inputs, op.outputs) for op in model.subgraphs[0].operators] == expected


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in MODELS])
def test_tensors_match_the_interpreter(tflite_files, name):
    model = read_tflite_file(tflite_files[name])
    interpreter = _interpreter(tflite_files[name])
    details = interpreter.get_tensor_details()
    tensors = model.subgraphs[0].tensors
    assert len(details) == len(tensors)
    for d in details:
        t = tensors[d["index"]]
        assert (t.name, t.dtype) == (d["name"], np.dtype(d["dtype"]).name)
        assert t.shape == tuple(d["shape"].tolist())
        assert t.shape_signature == tuple(d["shape_signature"].tolist())
        q = d["quantization_parameters"]
        # The same float32 bits on both sides: exact.
        np.testing.assert_allclose(t.scales, q["scales"], rtol=0, atol=0, err_msg=t.name)
        assert t.zero_points == tuple(q["zero_points"].tolist()), t.name
        assert t.quantized_dimension == q["quantized_dimension"], t.name
    assert [t.index for t in model.input_tensors()] == [
        d["index"] for d in interpreter.get_input_details()]
    assert [t.index for t in model.output_tensors()] == [
        d["index"] for d in interpreter.get_output_details()]


def test_float32_model(tflite_files):
    path = tflite_files["float32"]
    model = read_tflite_file(path)
    assert (model.schema_version, model.size) == (3, path.stat().st_size)
    assert model.description  # "MLIR Converted." in TF 2.21
    assert model.op_names() == ("FULLY_CONNECTED",)
    assert model.op_counts() == {"FULLY_CONNECTED": 2}
    assert {op.kind for op in model.operators} == {"builtin"}
    (x,) = model.input_tensors()
    assert (x.dtype, x.shape, x.shape_signature, x.is_quantized) == (
        "float32", (1, 10), (-1, 10), False)
    first, second = model.operators
    assert [t.buffer_bytes for t in model.inputs_of(first)] == [0, 16 * 10 * 4, 16 * 4]
    assert second.inputs[-1] == -1  # the dropped zero bias
    assert len(model.inputs_of(second)) == 2
    assert model.outputs_of(second) == model.output_tensors()


def test_full_int8_model(tflite_files):
    model = read_tflite_file(tflite_files["int8"])
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(model.op_names())
    # int8 activations and weights, int32 biases and shape arithmetic: no float left.
    assert {t.dtype for t in model.subgraphs[0].tensors} == {"int8", "int32"}
    for t in model.input_tensors() + model.output_tensors():
        assert t.dtype == "int8" and len(t.scales) == len(t.zero_points) == 1
    conv = next(op for op in model.operators if op.name == "CONV_2D")
    _, kernel, bias = model.inputs_of(conv)
    assert len(kernel.scales) == kernel.shape[0] == 4  # per output channel
    assert kernel.quantized_dimension == 0 and set(kernel.zero_points) == {0}
    assert (bias.dtype, len(bias.scales)) == ("int32", 4)


def test_flex_op(tflite_files):
    model = read_tflite_file(tflite_files["flex"])
    (op,) = model.operators
    assert (op.name, op.kind) == ("FlexMatrixInverse", "flex")
    assert model.op_names() == ("FlexMatrixInverse",)


def test_buffers_stored_after_the_flatbuffer(tflite_files):
    data = tflite_files["buffer_offset"].read_bytes()
    model = read_tflite(data)
    (weights,) = [t for t in model.subgraphs[0].tensors if t.buffer_bytes]
    assert weights.buffer_bytes == 4 * 10 * 4
    # Cut inside the weights: the flatbuffer itself is whole, the buffer's offset+size is not.
    cut = len(data) - 60
    with pytest.raises(TFLiteFormatError, match=r"buffer \d+ data lies outside the file"):
        read_tflite(data[:cut])


def test_file_and_bytes_give_the_same_model(tflite_files):
    for name in MODELS:
        path = tflite_files[name]
        assert read_tflite_file(path) == read_tflite(path.read_bytes(), str(path))


def _enum(cls) -> dict:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_")}


def test_builtin_tables_match_the_installed_schemas():
    """The op and type codes are LiteRT's (the newer schema: float8 types 21 and 22); the
    installed TensorFlow's codes all mean the same."""
    from ai_edge_litert import schema_py_generated as litert
    from tensorflow.lite.python import schema_py_generated as tf

    hint = "converters/builtin_ops.py differs from the installed schema: regenerate it"
    assert BUILTIN_OPERATORS == _enum(litert.BuiltinOperator), hint
    assert TENSOR_TYPES == {k: v.lower() for k, v in _enum(litert.TensorType).items()}, hint
    assert _enum(tf.BuiltinOperator).items() <= BUILTIN_OPERATORS.items(), hint
    assert {k: v.lower() for k, v in _enum(tf.TensorType).items()}.items() <= \
        TENSOR_TYPES.items(), hint
    assert (TENSOR_TYPES[21], TENSOR_TYPES[22]) == ("float8_e4m3fn", "float8_e5m2")


_SCALARS = {"Bool": "bool", "Int8": "byte", "Uint8": "ubyte", "Int16": "short",
            "Uint16": "ushort", "Int32": "int", "Uint32": "uint", "Int64": "long",
            "Uint64": "ulong", "Float32": "float", "Float64": "double"}


def _schema_of_generated_python(schema) -> tuple[dict, dict]:
    """(TABLES, UNIONS) as builtin_ops.py writes them, read from a flatc-generated Python
    schema module: each table class's accessors say a field's slot and what it holds."""
    tables, unions = {}, {}
    module = inspect.getsource(schema)
    for name, cls in vars(schema).items():
        if not (inspect.isclass(cls) and hasattr(cls, "GetRootAs")):
            continue
        fields = {}
        for method, fn in vars(cls).items():
            source = inspect.getsource(fn) if inspect.isfunction(fn) else ""
            slot = re.search(r"self\._tab\.Offset\((\d+)\)", source)
            if not slot or method.endswith(("Length", "IsNone", "AsNumpy")):
                continue
            if scalar := re.search(r"number_types\.(\w+)Flags, [ao] \+", source):
                kind = _SCALARS[scalar.group(1)]
            elif "self._tab.String(" in source:
                kind = "string"
            elif "self._tab.Union(" in source:  # the object API's unpacking names its union
                reader = name[0].lower() + name[1:]  # "quantizationParameters.Details()"
                kind = re.search(rf"(\w+)Creator\(self\.\w+, {reader}\.{method}\(\)\)",
                                 module).group(1)
            else:
                kind = re.search(r"obj = (\w+)\(\)", source).group(1)
            if "j" in inspect.signature(fn).parameters:  # an element of a vector
                kind = f"[{kind}]"
            field = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", method).lower()
            fields[int(slot.group(1))] = f"{field}:{kind}"
        if fields:
            tables[name] = " ".join(fields.get(slot, "-")
                                    for slot in range(4, max(fields) + 1, 2))
    for name, fn in vars(schema).items():
        if inspect.isfunction(fn) and name.endswith("Creator"):
            members = re.findall(r"unionType == \w+\.\w+:\s*return (\w+)T\.",
                                 inspect.getsource(fn))
            unions[name.removesuffix("Creator")] = tuple(members)
    return tables, unions


def test_schema_tables_match_the_installed_litert_schema():
    """builtin_ops.TABLES and UNIONS, which the verifier walks, are ai-edge-litert's schema.
    When they differ this test prints the new tables to paste into builtin_ops.py."""
    from ai_edge_litert import schema_py_generated as schema

    tables, unions = _schema_of_generated_python(schema)
    for union, members in unions.items():  # code order: the verifier maps code i to member i
        assert [getattr(getattr(schema, union), m) for m in members] == list(
            range(1, len(members) + 1)), union
    assert "Model" in tables and len(unions["BuiltinOptions"]) > 100  # the parse found them
    new = {"TABLES": tables, "UNIONS": unions}
    assert (TABLES, UNIONS) == (tables, unions), (
        "converters/builtin_ops.py TABLES/UNIONS differ from the installed schema; new ones:\n"
        + json.dumps(new, indent=4, sort_keys=True))


def test_reading_does_not_import_tensorflow_or_numpy(tflite_files):
    code = ("from edgepipe.converters.tflite_file import read_tflite_file\n"
            f"assert read_tflite_file({str(tflite_files['int8'])!r}).op_names()\n")
    roots = ("tensorflow", "keras", "numpy", "flatbuffers", "ai_edge_litert")
    assert imported_modules(code, roots) == []


# -- op codes TF 2.21 does not write, built by hand ---------------------------------------------

def _synthetic_model(operator_codes) -> bytes:
    """A one-tensor model with one operator per operator code."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tensor = schema.TensorT()
    tensor.shape, tensor.name = [1], "x"
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs = [tensor], [0], [0]
    subgraph.operators = []
    for i in range(len(operator_codes)):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = i, [0], [0]
        subgraph.operators.append(op)
    model = schema.ModelT()
    model.version, model.operatorCodes = 3, list(operator_codes)
    model.subgraphs, model.buffers = [subgraph], [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_operator_codes_old_new_custom_and_unknown():
    from ai_edge_litert.schema_py_generated import OperatorCodeT

    codes = [
        OperatorCodeT(deprecatedBuiltinCode=3),  # a file from before schema 3a
        OperatorCodeT(deprecatedBuiltinCode=127, builtinCode=150, version=2),  # code > int8
        OperatorCodeT(deprecatedBuiltinCode=32, builtinCode=32, customCode="MyFusedOp"),
        OperatorCodeT(deprecatedBuiltinCode=127, builtinCode=4000),  # newer than our table
    ]
    ops = read_tflite(_synthetic_model(codes)).operators
    assert [(op.name, op.kind, op.version) for op in ops] == [
        ("CONV_2D", "builtin", 1), (BUILTIN_OPERATORS[150], "builtin", 2),
        ("MyFusedOp", "custom", 1), ("UNKNOWN_BUILTIN_4000", "builtin", 1)]


def test_shared_vectors_cannot_make_reading_quadratic():
    """4,000 operators all pointing at one 4,000-long input list: legal bytes, 16 M reads."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    n = 4000
    b = flatbuffers.Builder(1 << 16)
    s.OperatorStartInputsVector(b, n)
    for _ in range(n):
        b.PrependInt32(-1)
    inputs = b.EndVector()
    ops = []
    for _ in range(n):
        s.OperatorStart(b)
        s.OperatorAddInputs(b, inputs)
        ops.append(s.OperatorEnd(b))
    s.SubGraphStartOperatorsVector(b, n)
    for op in reversed(ops):
        b.PrependUOffsetTRelative(op)
    operators = b.EndVector()
    s.SubGraphStartTensorsVector(b, 0)
    tensors = b.EndVector()
    s.SubGraphStart(b)
    s.SubGraphAddTensors(b, tensors)
    s.SubGraphAddOperators(b, operators)
    subgraph = s.SubGraphEnd(b)
    s.OperatorCodeStart(b)
    opcode = s.OperatorCodeEnd(b)
    vectors = []
    for item in (opcode, subgraph):
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(item)
        vectors.append(b.EndVector())
    s.ModelStartBuffersVector(b, 0)
    buffers = b.EndVector()
    s.ModelStart(b)
    s.ModelAddVersion(b, 3)
    s.ModelAddOperatorCodes(b, vectors[0])
    s.ModelAddSubgraphs(b, vectors[1])
    s.ModelAddBuffers(b, buffers)
    b.Finish(s.ModelEnd(b), file_identifier=b"TFL3")
    with pytest.raises(TFLiteFormatError, match="overlapping offsets"):
        read_tflite(bytes(b.Output()), "shared.tflite")


# -- bad inputs: one line that says what, where and what to do ---------------------------------

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4665a5ea423c2713d436b5ee50593a9640e0018c1550b5a0002f74190d6caea8\n"
               b"size 12345\n")


def _bad_bytes(kind: str, files) -> bytes:
    valid = files["float32"].read_bytes()
    return {
        "empty": lambda: b"",
        "truncated-3": lambda: valid[:3],
        "truncated-8": lambda: valid[:8],
        "truncated-100": lambda: valid[:100],
        "truncated-half": lambda: valid[:len(valid) // 2],
        "truncated-last-byte": lambda: valid[:-1],
        "html-doctype": lambda: b"<!DOCTYPE html>\n<html><head><title>404</title></head></html>",
        "html-after-whitespace": lambda: b"\r\n  \t<html lang='en'><body>Not Found</body>",
        "git-lfs-pointer": lambda: LFS_POINTER,
        "keras-zip": lambda: files["keras"].read_bytes(),
        "hdf5": lambda: b"\x89HDF\r\n\x1a\n" + bytes(64),
        "wrong-identifier": lambda: valid[:4] + b"ABCD" + valid[8:],
        "zeros": lambda: bytes(64),
    }[kind]()


BAD_INPUTS = [
    pytest.param("empty", ["bad.tflite is empty (0 bytes): re-export it"], id="empty"),
    pytest.param("truncated-3", ["truncated", "only 3 bytes", "re-export"], id="truncated-3"),
    pytest.param("truncated-8", ["bad.tflite is truncated or corrupt: the model is only 8 bytes, "
                                 "too short for a flatbuffer"], id="truncated-8"),
    *[pytest.param(kind, ["bad.tflite is truncated or corrupt:", "points outside the file",
                          "re-export the model or copy the file again"], id=kind)
      for kind in ("truncated-100", "truncated-half", "truncated-last-byte")],
    pytest.param("html-doctype", ["not a TFLite flatbuffer", "looks like an HTML page",
                                  "download"], id="html-doctype"),
    pytest.param("html-after-whitespace", ["looks like an HTML page"], id="html-whitespace"),
    pytest.param("git-lfs-pointer", ["looks like a Git LFS pointer file", "`git lfs pull`"],
                 id="git-lfs-pointer"),
    pytest.param("keras-zip", ["looks like a zip archive (a .keras file?)"], id="keras-zip"),
    pytest.param("hdf5", ["looks like an HDF5 file"], id="hdf5"),
    pytest.param("wrong-identifier", ["file identifier is 'ABCD', expected 'TFL3'"],
                 id="wrong-identifier"),
    pytest.param("zeros", [r"file identifier is '\x00\x00\x00\x00', expected 'TFL3'"],
                 id="all-zeros"),
]


def _one_line_error(data: bytes, source: str = "bad.tflite") -> str:
    with pytest.raises(TFLiteFormatError) as info:
        read_tflite(data, source)
    message = str(info.value)
    assert "\n" not in message and message.startswith(source), message
    return message


@pytest.mark.parametrize("kind, fragments", BAD_INPUTS)
def test_bad_input_says_what_it_is(tflite_files, kind, fragments):
    message = _one_line_error(_bad_bytes(kind, tflite_files))
    for fragment in fragments:
        assert fragment in message, message


# Positions to patch are found with the flatbuffers package (an independent implementation).

def _subgraph(data: bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(data, 0).Subgraphs(0)


def _tensor_list(data: bytes) -> int:
    """Byte position of subgraph 0's tensor vector (its length)."""
    sg = _subgraph(data)
    return sg._tab.Vector(sg._tab.Offset(4)) - 4


def _patched(data: bytes, pos: int, value: int, fmt: str = "<I") -> bytes:
    return data[:pos] + struct.pack(fmt, value) + data[pos + struct.calcsize(fmt):]


def _op_input(data):
    op = _subgraph(data).Operators(0)
    return _patched(data, op._tab.Vector(op._tab.Offset(6)), 99)


def _stored_field(tables, slot: int) -> int:
    """Position of the first table's field that is stored (a default value is left out)."""
    return next(t._tab.Pos + t._tab.Offset(slot) for t in tables if t._tab.Offset(slot))


def _opcode_index(data):
    sg = _subgraph(data)
    ops = [sg.Operators(i) for i in range(sg.OperatorsLength())]
    return _patched(data, _stored_field(ops, 4), 50)


def _tensor_buffer(data):
    sg = _subgraph(data)
    return _patched(data, _stored_field([sg.Tensors(i) for i in range(sg.TensorsLength())], 8),
                    999)


def _vtable_size(size):
    def patch(data):
        tensor = _subgraph(data).Tensors(0)
        vtable = tensor._tab.Pos - struct.unpack_from("<i", data, tensor._tab.Pos)[0]
        return _patched(data, vtable, size, "<H")
    return patch


def _name_terminator(data):
    tensor = _subgraph(data).Tensors(0)
    field = tensor._tab.Pos + tensor._tab.Offset(10)
    string = field + struct.unpack_from("<I", data, field)[0]
    return _patched(data, string + 4 + struct.unpack_from("<I", data, string)[0], ord("X"), "<B")


PATCHES = [  # (how to break the int8 model, a regex for what the message must say)
    pytest.param(_op_input, r"subgraph 0 operator 0 input list refers to tensor 99, but the "
                            r"subgraph has \d+ tensors", id="operator-input-index"),
    pytest.param(_opcode_index, r"subgraph 0 operator \d+ uses operator code 50, but the model "
                                r"has \d+", id="opcode-index"),
    pytest.param(_tensor_buffer, r"subgraph 0 tensor \d+ uses buffer 999, but the model has \d+",
                 id="tensor-buffer-index"),
    pytest.param(_vtable_size(0xFFFE), r"subgraph 0 tensor 0 vtable points outside the file",
                 id="vtable-size-huge"),
    pytest.param(_vtable_size(3), r"subgraph 0 tensor 0 has a malformed vtable \(vtable size 3",
                 id="vtable-size-odd"),
    pytest.param(_name_terminator, r"subgraph 0 tensor 0 name is not NUL-terminated",
                 id="string-terminator"),
]


@pytest.mark.parametrize("patch, expected", PATCHES)
def test_patched_field_is_named(tflite_files, patch, expected):
    message = _one_line_error(patch(tflite_files["int8"].read_bytes()))
    assert re.search(expected, message), message


def test_offset_patched_outside_the_file(tflite_files):
    data = tflite_files["float32"].read_bytes()
    entry = _tensor_list(data) + 4 + 4 * 3  # the uoffset of tensor 3, relative to itself
    target = len(data) + 1000
    message = _one_line_error(_patched(data, entry, target - entry), "model.tflite")
    assert (f"model.tflite is truncated or corrupt: subgraph 0 tensor 3 points outside the file "
            f"(offset {target} > size {len(data)})") in message


def test_vector_length_patched_beyond_the_file(tflite_files):
    data = tflite_files["float32"].read_bytes()
    message = _one_line_error(_patched(data, _tensor_list(data), 0x7FFFFFFF))
    assert "subgraph 0 tensor list claims 2147483647 elements" in message


# -- what a path can name besides a .tflite file: refused before anything is read -------------

def _make(kind: str, path) -> None:
    if kind == "fifo":  # opened for reading, it would wait for a writer for ever
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dev-zero-link":  # a device: reading it never ends
        path.symlink_to("/dev/zero")
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == "link-loop":
        path.symlink_to(path.name)
    elif kind == "dangling-link":
        path.symlink_to(path.with_name("gone.tflite"))
    elif kind == "empty":
        path.write_bytes(b"")


FILE_KINDS = [
    pytest.param("fifo", r"model\.tflite is a FIFO \(named pipe\), not a regular file: pass the "
                         r"path of a \.tflite file", id="fifo"),
    pytest.param("folder", r"model\.tflite is a folder, not a regular file", id="folder"),
    pytest.param("dev-zero-link", r"model\.tflite is a character device, not a regular file",
                 id="dev-zero-link"),
    pytest.param("socket", r"model\.tflite is a socket, not a regular file", id="socket"),
    pytest.param("link-loop", r"model\.tflite is a symbolic link that loops", id="link-loop"),
    pytest.param("dangling-link", r"model\.tflite is a symbolic link to .*gone\.tflite, which "
                                  r"does not exist: point it at a \.tflite file",
                 id="dangling-link"),
    pytest.param("missing", r"cannot read .*model\.tflite: No such file or directory",
                 id="missing"),
    pytest.param("empty", r"model\.tflite is empty \(0 bytes\)", id="empty"),
]


@pytest.mark.parametrize("kind, expected", FILE_KINDS)
def test_only_regular_files_are_read(tmp_path, kind, expected):
    path = tmp_path / "model.tflite"
    _make(kind, path)
    started = time.monotonic()
    with pytest.raises(TFLiteFormatError, match=expected) as info:
        read_tflite_file(path)
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 5


def test_a_link_to_a_model_is_read(tflite_files, tmp_path):
    """Models kept by git-annex or DVC are symbolic links: they are followed."""
    link = tmp_path / "latest.tflite"
    link.symlink_to(tflite_files["int8"])
    assert read_tflite_file(link) == read_tflite_file(tflite_files["int8"])


# -- the flatbuffers verifier's rules, with LiteRT's own load as the oracle ----------------------

def _litert_loads(data: bytes) -> bool:
    from edgepipe.pipeline.check import load_in_litert

    return load_in_litert(data)["loads"]


def _vtable(data: bytes, table) -> int:
    return table._tab.Pos - struct.unpack_from("<i", data, table._tab.Pos)[0]


def _empty_buffer_vtable_size_0(data):
    """A vtable of size 0: every field absent. Buffer 0 (no data) means the same then."""
    from ai_edge_litert import schema_py_generated as schema

    return _patched(data, _vtable(data, schema.Model.GetRootAs(data, 0).Buffers(0)), 0, "<H")


def _table_size_4(data):
    """A vtable that says its table is 4 bytes while its fields lie further: the verifier checks
    each field against the file, not against the table's size."""
    return _patched(data, _vtable(data, _subgraph(data).Tensors(0)) + 2, 4, "<H")


def _options_vtable_outside(data):
    """Builtin options, which the audit never reads, with a vtable outside the file."""
    sg = _subgraph(data)
    op = next(sg.Operators(i) for i in range(sg.OperatorsLength())
              if sg.Operators(i).BuiltinOptions() is not None)
    return _patched(data, op.BuiltinOptions().Pos, -len(data) * 2, "<i")


def _misaligned_tensor(data):
    entry = _tensor_list(data) + 4 + 4 * 3
    return _patched(data, entry, struct.unpack_from("<I", data, entry)[0] + 1)


def _zero_offset_name(data):
    tensor = _subgraph(data).Tensors(0)
    return _patched(data, tensor._tab.Pos + tensor._tab.Offset(10), 0)


def _metadata_name_length(data):
    """A string the audit never reads (metadata 0's name) claiming more bytes than the file."""
    from ai_edge_litert import schema_py_generated as schema

    metadata = schema.Model.GetRootAs(data, 0).Metadata(0)
    field = metadata._tab.Pos + metadata._tab.Offset(4)
    return _patched(data, field + struct.unpack_from("<I", data, field)[0], 0x10000000)


VERIFIER_CASES = [  # (patch of the int8 model, None when both must load it, else the message)
    pytest.param(_empty_buffer_vtable_size_0, None, id="vtable-size-0"),
    pytest.param(_table_size_4, None, id="field-past-the-table-size"),
    pytest.param(_options_vtable_outside, r"subgraph 0 operator \d+ builtin options vtable "
                                          r"points outside the file", id="options-vtable"),
    pytest.param(_misaligned_tensor, r"subgraph 0 tensor 3 is misaligned \(offset \d+ is not a "
                                     r"multiple of 4\)", id="misaligned-table"),
    pytest.param(_zero_offset_name, r"subgraph 0 tensor 0 name has an offset of 0",
                 id="zero-offset"),
    pytest.param(_metadata_name_length, r"metadata 0 name claims 268435456 elements",
                 id="metadata-string-length"),
]


@pytest.mark.parametrize("patch, expected", VERIFIER_CASES)
def test_the_reader_verifies_as_litert_does(tflite_files, patch, expected):
    data = patch(tflite_files["int8"].read_bytes())
    assert _litert_loads(data) is (expected is None)
    if expected is None:
        read_tflite(data)
    else:
        assert re.search(expected, _one_line_error(data)), _one_line_error(data)


# -- the interpreter builder's checks, on models built by hand ---------------------------------

def _built(change=lambda schema, model, w: None) -> bytes:
    """y = ABS(x), float32 (1, 4), and an unused constant w (4,) float32 in buffer 1; `change`
    edits the ModelT first."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name, shape, buffer=0):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, schema.TensorType.FLOAT32, buffer
        return t

    w = tensor("w", [4], buffer=1)
    subgraph = schema.SubGraphT()
    subgraph.tensors = [tensor("x", [1, 4]), tensor("y", [1, 4]), w]
    subgraph.inputs, subgraph.outputs = [0], [1]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    subgraph.operators = [op]
    weights = schema.BufferT()
    weights.data = list(struct.pack("<4f", 1, 2, 3, 4))
    model = schema.ModelT()
    model.version, model.subgraphs = 3, [subgraph]
    model.operatorCodes = [schema.OperatorCodeT(deprecatedBuiltinCode=101, builtinCode=101)]
    model.buffers = [schema.BufferT(), weights]
    change(schema, model, w)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _quantized(scales, zero_points, dimension=0):
    def change(schema, model, w):
        w.quantization = schema.QuantizationParametersT()
        w.quantization.scale, w.quantization.zeroPoint = scales, zero_points
        w.quantization.quantizedDimension = dimension
    return change


def _set(obj: str, field: str, value):
    def change(schema, model, w):
        setattr({"model": model, "w": w, "subgraph": model.subgraphs[0],
                 "weights": model.buffers[1]}[obj], field, value)
    return change


def _custom_options_outside(schema, model, w):
    """A custom op whose options are stored after the flatbuffer, past the end of the file."""
    model.operatorCodes = [schema.OperatorCodeT(deprecatedBuiltinCode=32, builtinCode=32,
                                                customCode="MyOp")]
    op = model.subgraphs[0].operators[0]
    op.largeCustomOptionsOffset, op.largeCustomOptionsSize = 1 << 20, 16


BUILDER_CASES = [
    pytest.param(_set("model", "version", 4), r"the model has schema version 4; TFLite files "
                                              r"have version 3", id="version"),
    pytest.param(_set("model", "buffers", None), r"the model has no buffer list", id="no-buffers"),
    pytest.param(_set("subgraph", "tensors", None), r"subgraph 0 has no tensor list",
                 id="no-tensors"),
    pytest.param(_set("w", "type", -1), r"subgraph 0 tensor 2 has an invalid type code \(-1\)",
                 id="negative-type"),
    pytest.param(_set("weights", "data", [0] * 8), r"subgraph 0 tensor 2 of shape \[4\] needs 16 "
                                                   r"bytes of data, but buffer 1 holds 8",
                 id="constant-too-short"),
    pytest.param(_set("w", "isVariable", True), r"subgraph 0 tensor 2 is a variable but has "
                                                r"constant data", id="variable-with-data"),
    pytest.param(_quantized([0.5, 0.5], [0]), r"subgraph 0 tensor 2 quantization has 2 scales "
                                              r"but 1 zero points", id="scales-vs-zero-points"),
    pytest.param(_quantized([0.5], [0], 3), r"quantization is along dimension 3, but the tensor "
                                            r"has 1 dimensions", id="quantized-dimension"),
    pytest.param(_quantized([0.5] * 3, [0] * 3), r"quantization has 3 scales for dimension 0 of "
                                                 r"size 4 \(expected 1 or 4\)", id="per-axis"),
    pytest.param(_custom_options_outside, r"subgraph 0 operator 0 custom options lies outside the "
                                          r"file \(offset 1048576 \+ 16 bytes > size \d+\)",
                 id="custom-options-offset"),
]


def test_the_hand_built_model_loads():
    data = _built()
    assert _litert_loads(data)
    assert read_tflite(data).op_names() == ("ABS",)


@pytest.mark.parametrize("change, expected", BUILDER_CASES)
def test_the_reader_refuses_what_the_interpreter_builder_refuses(change, expected):
    data = _built(change)
    assert not _litert_loads(data)
    message = _one_line_error(data)
    assert re.search(expected, message), message


def test_float8_tensor_types():
    data = _built(_set("w", "type", 21))
    assert read_tflite(data).subgraphs[0].tensors[2].dtype == "float8_e4m3fn"
    data = _built(_set("w", "type", 22))
    assert read_tflite(data).subgraphs[0].tensors[2].dtype == "float8_e5m2"


# -- fuzz: mutated files fail with TFLiteFormatError (or parse), and fast -----------------------

def _parse_seconds(data: bytes, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            read_tflite(data, "fuzz.tflite")
        except TFLiteFormatError:
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def _mutate(kind: str, data: bytes, donors: list[bytes], rng: random.Random) -> bytes:
    out = bytearray(data)
    if kind == "bit-flips":
        for _ in range(rng.randint(1, 8)):
            bit = rng.randrange(len(out) * 8)
            out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncation":
        del out[rng.randrange(len(out)):]
    elif kind == "splice":  # a run of bytes from another file (or this one) over a random place
        donor = rng.choice(donors)
        src, dst, n = rng.randrange(len(donor)), rng.randrange(len(out)), rng.randint(4, 256)
        out[dst:dst + n] = donor[src:src + n]
        del out[len(data):]  # the same size as the original, so its timing is comparable
    else:  # word: an aligned uint32 (offsets and lengths are) set to a value that hurts
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(out) // 4) * 4
            value = rng.choice([0, 1, 4, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(len(out)),
                                rng.randrange(-64, 64) & 0xFFFFFFFF])
            out[at:at + 4] = struct.pack("<I", value)
    return bytes(out)


FUZZ_KINDS = ("bit-flips", "truncation", "splice", "word")
FUZZ_RUNS = [
    *[pytest.param(kind, 16, id=f"{kind}-16") for kind in FUZZ_KINDS],
    # About 1 % of mutations reach a given missing check: the large run is the one that finds it.
    *[pytest.param(kind, 1000, id=f"{kind}-1000", marks=pytest.mark.slow) for kind in FUZZ_KINDS],
]


@pytest.mark.parametrize("kind, cases", FUZZ_RUNS)
def test_mutated_files_fail_cleanly_and_quickly(tflite_files, kind, cases):
    rng = random.Random(f"tflite-fuzz-{kind}-{cases}")  # str seeds are stable across runs
    originals = {name: tflite_files[name].read_bytes() for name in MODELS}
    # The bound is relative to this machine's speed on the valid file: the reader's work budget
    # keeps any file within a few times the valid parse, and 100x leaves room for a busy machine
    # while still catching a reader that loops. (The quadratic case that the budget exists for
    # needs crafted sharing that random mutations rarely make: test_shared_vectors_... has it.)
    baseline = {name: statistics.median(_parse_seconds(data, 21))
                for name, data in originals.items()}
    for case in range(cases):
        name = rng.choice(MODELS)
        mutated = _mutate(kind, originals[name], list(originals.values()), rng)
        try:
            model = read_tflite(mutated, "fuzz.tflite")
            # A model that reads must be consistent: every index it holds leads somewhere.
            model.input_tensors(), model.output_tensors(), model.op_names()
            for op in model.operators:
                model.inputs_of(op), model.outputs_of(op)
        except TFLiteFormatError as e:
            assert "\n" not in str(e)
        except Exception as e:  # anything else is the bug this test looks for
            pytest.fail(f"case {case} ({kind} of {name}): {type(e).__name__}: {e}")
        seconds = min(_parse_seconds(mutated, 3))
        assert seconds <= 100 * baseline[name], (
            f"case {case} ({kind} of {name}) took {seconds * 1e3:.2f} ms, "
            f"valid file {baseline[name] * 1e3:.3f} ms")
