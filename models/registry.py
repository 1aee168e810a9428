"""The activation registry: what each activation is, without importing TensorFlow.

The layer classes live in `activations/` (one file each) and load on first use, so tools that
only list names (the CLI's help and error messages) stay fast.
"""

import importlib
from dataclasses import dataclass
from enum import Enum

from ..core.errors import unknown_name


class GradientKind(str, Enum):
    AUTODIFF = "autodiff"    # the gradient of the forward formula
    CUSTOM = "custom"        # an explicit @tf.custom_gradient equal to the true gradient
    SURROGATE = "surrogate"  # a stand-in for a gradient that is zero almost everywhere


@dataclass(frozen=True)
class LoweringSpec:
    """An alternative lowering the layer declares (its `lowerings` attribute, models/lowering.py):
    the same forward written without the ops in `avoids`, lowering to `tflite_ops` instead."""

    name: str
    avoids: tuple[str, ...]
    tflite_ops: tuple[str, ...]  # float32, int8 and int16x8


@dataclass(frozen=True)
class ActivationSpec:
    name: str
    class_name: str  # in edgepipe.models.activations
    formula: str
    gradient: GradientKind
    tflite_ops: tuple[str, ...]  # builtins the forward is expected to lower to (float and int8)
    kinks: tuple[float, ...] = ()  # points where the forward has no derivative
    lowerings: tuple[LoweringSpec, ...] = ()

    @property
    def layer(self) -> type:
        return getattr(importlib.import_module(".activations", __package__), self.class_name)

    def build(self, **config):
        return self.layer(**config)


ACTIVATIONS: dict[str, ActivationSpec] = {
    spec.name: spec
    for spec in (
        ActivationSpec("swish", "Swish", "x * sigmoid(beta * x)", GradientKind.AUTODIFF,
                       ("LOGISTIC", "MUL")),
        ActivationSpec("piecewise", "PiecewiseLinear", "x if x > 0 else alpha * x",
                       GradientKind.CUSTOM, ("LEAKY_RELU",), kinks=(0.0,)),
        # No lowering: TFLite Micro runs GREATER and SELECT_V2 (int8, float32), and no exact
        # rewrite avoids GREATER (a steep clip ramp is not a step once quantized).
        ActivationSpec("step", "Step", "1 if x > 0 else 0", GradientKind.SURROGATE,
                       ("GREATER", "SELECT_V2"), kinks=(0.0,)),
        ActivationSpec("hard_swish", "HardSwish", "x * relu6(x + 3) / 6", GradientKind.AUTODIFF,
                       ("HARD_SWISH",), kinks=(-3.0, 3.0),
                       lowerings=(LoweringSpec("clip", ("HARD_SWISH",),
                                               ("ADD", "MINIMUM", "MUL")),)),
        # also a RELU, unless the converter fuses it into the layer before (it does after Dense).
        # No lowering: TFLite Micro's int8 EXP is repaired by selective precision (EXP in float).
        ActivationSpec("mish", "Mish", "x * tanh(softplus(x))", GradientKind.AUTODIFF,
                       ("SUB", "EXP", "LOG", "ADD", "TANH", "MUL")),
        ActivationSpec("gelu_tanh", "GeluTanh",
                       "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))", GradientKind.AUTODIFF,
                       ("GELU",),
                       lowerings=(LoweringSpec("tanh", ("GELU",), ("TANH", "MUL", "ADD")),)),
    )
}


def get_activation(name: str) -> ActivationSpec:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise unknown_name("activation", name, ACTIVATIONS) from None
