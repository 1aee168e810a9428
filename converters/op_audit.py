"""The op audit of a `.tflite` file: what each operator is, and whether each op set can run it.

Reads the flatbuffer itself (`tflite_file`), so auditing a `.tflite` needs no TensorFlow and no
interpreter. A model fails the audit when it holds a custom or Flex op, or a quantization scale
so small that kernels cannot rescale by it (a degenerate parameter: LiteRT's reference SOFTMAX
aborts in its Prepare on an input scale of 7.8e-9).

A float op inside a model meant to be fully integer is a *finding*, not a failure: the converter
can report success and still leave one (SIGN, or the CAST of `tf.cast(x > 0, tf.float32)`, kept
in float between DEQUANTIZE and QUANTIZE in an "int8" model). LiteRT runs it, with float kernels;
a target that runs integer models integer-only (TFLite Micro, Ethos-U) reports it unsupported,
and `check`/`convert` flag it, since the file is not the integer-only model the mode promises.
"""

from dataclasses import dataclass, field

from .modes import QuantMode
from .tflite_file import TFLiteModel
from .tflm_ops import tflm_support

# The op sets an audit can check against: LiteRT's builtin kernels and TFLite Micro's. They are
# not parity targets (host, tflm, ethos-u, ...), though the audit's JSON calls them "targets".
OP_SETS = ("litert", "tflm")
FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}
# The ops that legitimately touch floats in an integer model: the conversions at its edges.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
COMPARISONS = {"GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL"}
# The README's rewrite for a step written as a cast of a comparison ("Step's forward").
CAST_OF_COMPARISON = ("write the step as tf.where(x > t, 1.0, 0.0) (constant branches), which "
                      "quantizes: GREATER + SELECT_V2, integer end to end in int8")
# Below this a scale is degenerate: the kernels' fixed-point rescaling (a multiplier and a
# shift per scale ratio) cannot represent it, and some abort (LiteRT's reference SOFTMAX).
MIN_SCALE = 1e-7
# The tensor types whose scale a kernel rescales by. int32 biases carry input x weight scales,
# legitimately tiny, that no kernel rescales by alone.
SCALED_TYPES = {"int8", "uint8", "int16"}


@dataclass(frozen=True)
class OpEntry:
    index: int
    subgraph: int
    name: str
    kind: str  # builtin, custom, flex
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    op_sets: dict = field(default_factory=dict)  # op set -> None (runs) or why not

    def as_dict(self) -> dict:
        return {"index": self.index, "subgraph": self.subgraph, "op": self.name,
                "kind": self.kind, "input_types": list(self.input_types),
                "output_types": list(self.output_types), "targets": dict(self.op_sets)}


@dataclass(frozen=True)
class Finding:
    """A float op inside a model meant to be fully integer: it runs on LiteRT, not on a target
    that runs integer models integer-only."""

    op: str
    index: int
    subgraph: int
    types: tuple[str, ...]  # every tensor type it touches, sorted
    message: str
    rewrite: str = ""  # how to write the layer so that it quantizes, when the pattern is known

    def as_dict(self) -> dict:
        return {"op": self.op, "index": self.index, "subgraph": self.subgraph,
                "types": list(self.types), "message": self.message, "rewrite": self.rewrite}


@dataclass(frozen=True)
class AuditReport:
    source: str
    integer_only: bool
    ops: tuple[OpEntry, ...]
    problems: tuple[str, ...]  # anything here fails the check
    subgraphs: int
    op_sets: tuple[str, ...]
    findings: tuple[Finding, ...] = ()  # converted, but not integer-only (`check` flags them)

    @property
    def ok(self) -> bool:
        return not self.problems

    def unsupported(self, op_set: str) -> list[str]:
        return sorted({f"{op.name}: {op.op_sets[op_set]}" for op in self.ops
                       if op.op_sets.get(op_set)})

    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]

    def as_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "integer_only": self.integer_only,
                "subgraphs": self.subgraphs, "problems": list(self.problems),
                "findings": [f.as_dict() for f in self.findings],
                "ops": [op.as_dict() for op in self.ops],
                "targets": {t: {"supported": not self.unsupported(t),
                                "unsupported_ops": self.unsupported(t)} for t in self.op_sets}}


MEASURED_OP_SETS = ("tflm",)  # those with a measured table of ops and types (tflm_ops.py)


def measured_types(op_set: str | None, op: str) -> frozenset | None:
    """The tensor types (tflm_ops.kernel_type's names) an op set was measured to run `op` in;
    None for an op set without a measured table (LiteRT's builtins run every builtin)."""
    from .tflm_ops import TFLM_KERNELS

    tables = dict(zip(MEASURED_OP_SETS, (TFLM_KERNELS,), strict=True))
    return tables[op_set].get(op, frozenset()) if op_set in tables else None


def infer_integer_only(model: TFLiteModel, mode: QuantMode | None) -> bool:
    if mode is not None:
        return mode.integer_only
    io = model.input_tensors() + model.output_tensors()
    return bool(io) and all(t.dtype in ("int8", "int16", "uint8") for t in io)


def audit(model: TFLiteModel, mode: QuantMode | None = None, op_sets=("litert",),
          source: str = "") -> AuditReport:
    """Audit every operator of every subgraph; `op_sets` adds a support column per op set."""
    integer_only = infer_integer_only(model, mode)
    entries, problems, findings = [], [], []
    for sub in model.subgraphs:
        producer = {t: op for op in sub.operators for t in op.outputs}
        problems += degenerate_scales(sub)
        for op in sub.operators:
            ins = tuple(sub.tensors[i].dtype for i in op.inputs if 0 <= i < len(sub.tensors))
            outs = tuple(sub.tensors[i].dtype for i in op.outputs if 0 <= i < len(sub.tensors))
            support = {}
            for op_set in op_sets:
                if op.kind != "builtin":
                    support[op_set] = f"{op.kind} op, not a TFLite builtin"
                elif op_set == "tflm":
                    support[op_set] = tflm_support(op.name, ins + outs)
                else:
                    support[op_set] = None
            entries.append(OpEntry(op.index, sub.index, op.name, op.kind, ins, outs, support))
            where = f"op {op.index} ({op.name}) in subgraph {sub.index}"
            if op.kind == "flex":
                problems.append(f"{where} is a Flex (TF Select) op: it needs the TensorFlow "
                                "runtime linked in, which edge targets do not have")
            elif op.kind == "custom":
                problems.append(f"{where} is a custom op: no target has a kernel for it unless "
                                "you register one")
            elif integer_only and op.name not in BOUNDARY_OPS and FLOAT_TYPES & set(ins + outs):
                types = tuple(sorted(set(ins + outs)))
                findings.append(Finding(
                    op.name, op.index, sub.index, types,
                    f"{where} computes in float ({', '.join(types)}) inside a model meant to be "
                    "fully integer", _rewrite(op, producer)))
    return AuditReport(source, integer_only, tuple(entries), tuple(problems), len(model.subgraphs),
                       tuple(op_sets), tuple(findings))


def _rewrite(op, producer: dict) -> str:
    """The known rewrite for the pattern this float op is part of, read from the graph."""
    if op.name == "CAST" and any(getattr(producer.get(t), "name", None) in COMPARISONS
                                 for t in op.inputs):
        return CAST_OF_COMPARISON
    return ""


def degenerate_scales(sub) -> list[str]:
    """One problem per quantized activation tensor with a scale below MIN_SCALE, naming it, its
    scale and the op that reads it (or, for an output, makes it). Constants are left out: their
    scale comes from their own values, which the kernels see exactly (the threshold 0 of
    `x > 0` is an int8 constant with a scale of about 4e-9), while an activation's comes from
    calibration and a tiny one means it spans almost nothing there."""
    readers, makers = {}, {}
    for op in sub.operators:
        for t in op.inputs:
            readers.setdefault(t, op)
        for t in op.outputs:
            makers.setdefault(t, op)
    problems = []
    for t in sub.tensors:
        if t.dtype not in SCALED_TYPES or not t.scales or t.buffer_bytes:
            continue
        # A scale of 0 is "not quantized" in the flatbuffer, not a tiny one.
        tiny = [s for s in t.scales if 0 < s < MIN_SCALE]
        if not tiny:
            continue
        op, role = (readers[t.index], "read by") if t.index in readers else (
            makers.get(t.index), "made by")
        used = f", {role} op {op.index} ({op.name})" if op is not None else ""
        channels = f" in {len(tiny)} of {len(t.scales)} channels" if len(t.scales) > 1 else ""
        problems.append(
            f"tensor {t.name!r} ({t.dtype}{used}) in subgraph {sub.index} has quantization scale "
            f"{min(tiny):.3g}{channels}, below {MIN_SCALE:g}: its values span almost nothing on "
            "the representative data and kernels cannot rescale by so small a scale (LiteRT's "
            "reference SOFTMAX aborts on one); look at the layer that makes it (weights near "
            "zero? dead units?) and at the calibration samples")
    return problems
