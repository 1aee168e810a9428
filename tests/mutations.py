"""Broken `.tflite` files for the isolation and fuzz tests, all made from bytes and a seed (no
binary file is kept in git): seeded mutations, one model that crashes every TFLite runtime we
have, one that never finishes, and a helper that puts such a file in a bundle as an entry.
"""

import hashlib
import random
from pathlib import Path

from test_tflite_file import FUZZ_KINDS, _mutate

# The reader's fuzz kinds (bit flips, truncation, a run spliced from another file, an aligned
# word set to a value that hurts), plus two more: the head of one file joined to the tail of
# another, and a run of random bytes.
KINDS = (*FUZZ_KINDS, "two-files", "byte-run")


def mutate(kind: str, data: bytes, donors: list, rng: random.Random) -> bytes:
    if kind in FUZZ_KINDS:
        return _mutate(kind, data, donors, rng)
    if kind == "two-files":
        donor = rng.choice(donors)
        return data[:rng.randrange(1, len(data))] + donor[rng.randrange(len(donor)):]
    if kind == "byte-run":
        out = bytearray(data)
        at, n = rng.randrange(len(out)), rng.randint(1, 64)
        out[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
        return bytes(out)
    raise ValueError(kind)


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _while_model(features: int, recursive: bool) -> bytes:
    """main: y = WHILE(x), condition subgraph 1 (a constant true), body subgraph 2."""
    import flatbuffers

    schema = _schema()
    ops = schema.BuiltinOperator

    def tensor(name, shape, kind=schema.TensorType.FLOAT32, buffer=0):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, kind, buffer
        return t

    def operator(code, inputs, outputs, options_type=0, options=None):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    def subgraph(name, tensors, inputs, outputs, operators):
        s = schema.SubGraphT()
        s.name, s.tensors, s.inputs, s.outputs, s.operators = (name, tensors, inputs, outputs,
                                                                operators)
        return s

    def loop():
        options = schema.WhileOptionsT()
        options.condSubgraphIndex, options.bodySubgraphIndex = 1, 2
        return operator(0, [0], [1], schema.BuiltinOptions.WhileOptions, options)

    shape = [1, features]
    main = subgraph("main", [tensor("x", shape), tensor("y", shape)], [0], [1], [loop()])
    cond = subgraph("cond", [tensor("x", shape), tensor("true", [], schema.TensorType.BOOL, 1)],
                    [0], [1], [])
    body = subgraph("body", [tensor("x", shape), tensor("y", shape)], [0], [1],
                    [loop() if recursive else operator(1, [0], [1])])
    true = schema.BufferT()
    true.data = [1]
    model = schema.ModelT()
    model.version = 3
    model.operatorCodes = [schema.OperatorCodeT(deprecatedBuiltinCode=min(code, 127),
                                                builtinCode=code, version=1)
                           for code in (ops.WHILE, ops.ABS)]
    model.subgraphs, model.buffers = [main, cond, body], [schema.BufferT(), true]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def while_forever(features: int = 4) -> bytes:
    """A valid model that never finishes: WHILE (x -> ABS(x)) with a constant-true condition.

    Input and output float32 (1, features). Every TFLite runtime loops in invoke() for ever,
    using no memory: a real hang, in native code that holds no Python lock we could break."""
    return _while_model(features, recursive=False)


def recursive_while(features: int = 4) -> bytes:
    """A malformed model that crashes: the WHILE's body subgraph holds a WHILE whose body is
    that same subgraph. allocate_tensors() prepares it recursively until the C stack overflows:
    SIGSEGV, every time, with default and reference kernels (ai-edge-litert 2.3.0 on x86-64 and
    1.2.0 on the emulated aarch64 board, TensorFlow imported or not); TFLite Micro's probe
    process dies the same way. No version of TFLite we have detects the cycle."""
    return _while_model(features, recursive=True)


def add_entry(root: Path, manifest: dict, entry_id: str, like: str, data: bytes) -> dict:
    """A new converted entry `entry_id` running `data`, with the dataset, reference and
    tolerance of entry `like`; the file goes in tflite/ with its sha256 and size in the
    manifest (so it passes the integrity check). Returns the entry (caller writes the
    manifest)."""
    base = next(e for e in manifest["entries"] if e["id"] == like)
    entry = dict(base, id=entry_id, tflite=f"tflite/{entry_id}.tflite",
                 sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (root / "tflite").mkdir(exist_ok=True)
    (root / entry["tflite"]).write_bytes(data)
    manifest["entries"].append(entry)
    return entry
