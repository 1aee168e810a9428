"""The op audit of a `.tflite` file: what each operator is, and whether each op set can run it.

Reads the flatbuffer itself (`tflite_file`), so auditing a `.tflite` needs no TensorFlow and no
interpreter. A model fails the audit when it holds a custom or Flex op, or a float op inside a
model meant to be fully integer (the converter can report success and still leave one: FACTS.md
shows SIGN kept in float between DEQUANTIZE and QUANTIZE in an "int8" model).
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
class AuditReport:
    source: str
    integer_only: bool
    ops: tuple[OpEntry, ...]
    problems: tuple[str, ...]  # anything here fails the check
    subgraphs: int
    op_sets: tuple[str, ...]

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
                "ops": [op.as_dict() for op in self.ops],
                "targets": {t: {"supported": not self.unsupported(t),
                                "unsupported_ops": self.unsupported(t)} for t in self.op_sets}}


def infer_integer_only(model: TFLiteModel, mode: QuantMode | None) -> bool:
    if mode is not None:
        return mode.integer_only
    io = model.input_tensors() + model.output_tensors()
    return bool(io) and all(t.dtype in ("int8", "int16", "uint8") for t in io)


def audit(model: TFLiteModel, mode: QuantMode | None = None, op_sets=("litert",),
          source: str = "") -> AuditReport:
    """Audit every operator of every subgraph; `op_sets` adds a support column per op set."""
    integer_only = infer_integer_only(model, mode)
    entries, problems = [], []
    for sub in model.subgraphs:
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
                problems.append(f"{where} computes in float ({', '.join(sorted(set(ins + outs)))}"
                                ") inside a model meant to be fully integer")
    return AuditReport(source, integer_only, tuple(entries), tuple(problems), len(model.subgraphs),
                       tuple(op_sets))
