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
from .tflm_ops import ANY_TYPE, REFUSES, RUNS, TFLM_REFUSED, UNKNOWN, WRONG, tflm_verdict

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
# Shape arithmetic exists only for a dimension unknown until run time: the batch, which
# `model.export()` makes dynamic. A microcontroller always runs batch 1.
DYNAMIC_BATCH_CAUSE = ("comes from the dynamic batch dimension (shape arithmetic on SHAPE's "
                       "output); a batch-1 export removes it")
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
    op_sets: dict = field(default_factory=dict)  # op set -> None (runs, or unknown) or why not
    # op set -> why it is not known whether the op set runs it (a measured table without it)
    unknown: dict = field(default_factory=dict)
    dynamic_batch: bool = False  # shape arithmetic a batch-1 export removes (dynamic_shape_ops)

    def as_dict(self) -> dict:
        return {"index": self.index, "subgraph": self.subgraph, "op": self.name,
                "kind": self.kind, "input_types": list(self.input_types),
                "output_types": list(self.output_types), "targets": dict(self.op_sets),
                "unknown": dict(self.unknown), "dynamic_batch": self.dynamic_batch}


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

    def unknown(self, op_set: str) -> list[str]:
        """The ops the op set's measured table has no verdict on: they never fail a check."""
        return sorted({f"{op.name}: {op.unknown[op_set]}" for op in self.ops
                       if op.unknown.get(op_set)})

    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]

    def as_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "integer_only": self.integer_only,
                "subgraphs": self.subgraphs, "problems": list(self.problems),
                "findings": [f.as_dict() for f in self.findings],
                "ops": [op.as_dict() for op in self.ops],
                "targets": {t: {"supported": not self.unsupported(t),
                                "unsupported_ops": self.unsupported(t),
                                "unknown_ops": self.unknown(t)} for t in self.op_sets}}


MEASURED_OP_SETS = ("tflm",)  # those with a measured table of ops and types (tflm_ops.py)


def measured_types(op_set: str | None, op: str) -> frozenset | None:
    """The tensor types (tflm_ops.kernel_type's names) an op set was measured to run `op` in;
    None for an op set without a measured table (LiteRT's builtins run every builtin)."""
    from .tflm_ops import TFLM_KERNELS

    tables = dict(zip(MEASURED_OP_SETS, (TFLM_KERNELS,), strict=True))
    return tables[op_set].get(op, frozenset()) if op_set in tables else None


def refused_in_every_type(op_set: str | None, op: str) -> bool:
    """Whether the op set was measured to have no kernel for `op` in any type: no precision
    can help, only a lowering into other ops. An op its table does not hold is unknown, not
    refused."""
    return op_set == "tflm" and ANY_TYPE in TFLM_REFUSED.get(op, ())


def batch_bound(audit_: dict, op_set: str | None) -> list[str]:
    """From an audit (`AuditReport.as_dict()`): the ops of the dynamic batch's shape arithmetic
    that `op_set` refuses or is not known to run, which a batch-1 export removes; [] for no
    op set, or one the audit did not check."""
    return list(dict.fromkeys(
        op["op"] for op in audit_["ops"] if op.get("dynamic_batch") and op_set in op["targets"]
        and (op["targets"][op_set] or (op.get("unknown") or {}).get(op_set))))


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
        from_batch = dynamic_shape_ops(sub)
        for op in sub.operators:
            ins = tuple(sub.tensors[i].dtype for i in op.inputs if 0 <= i < len(sub.tensors))
            outs = tuple(sub.tensors[i].dtype for i in op.outputs if 0 <= i < len(sub.tensors))
            support, unknown = {}, {}
            for op_set in op_sets:
                support[op_set] = None
                if op.kind != "builtin":
                    support[op_set] = f"{op.kind} op, not a TFLite builtin"
                elif op_set == "tflm":
                    verdict, why = tflm_verdict(op.name, ins, outs)
                    if verdict != RUNS and op.index in from_batch:
                        why += f"; {op.name} {DYNAMIC_BATCH_CAUSE}"
                    if verdict in (REFUSES, WRONG):  # wrong outputs fail as a refusal does
                        support[op_set] = why
                    elif verdict == UNKNOWN:
                        unknown[op_set] = why
            entries.append(OpEntry(op.index, sub.index, op.name, op.kind, ins, outs, support,
                                   unknown, op.index in from_batch))
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


def dynamic_shape_ops(sub) -> set[int]:
    """The indices of the ops that compute shapes at run time: each SHAPE op, and each op
    whose every input that is not a constant is such a shape (STRIDED_SLICE, PACK,
    REDUCE_PROD, ... on SHAPE's output). With static shapes the converter folds them all."""
    shapes: set[int] = set()  # tensors that hold a run-time shape or a value computed from one
    found: set[int] = set()
    for op in sub.operators:  # in execution order: an op's inputs are made before it runs
        varying = [i for i in op.inputs if i >= 0 and not sub.tensors[i].buffer_bytes]
        if op.name == "SHAPE" or (varying and all(i in shapes for i in varying)):
            found.add(op.index)
            shapes.update(op.outputs)
    return found


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
