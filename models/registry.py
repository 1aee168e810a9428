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
class ActivationSpec:
    name: str
    class_name: str  # in edgepipe.models.activations
    formula: str
    gradient: GradientKind
    tflite_ops: tuple[str, ...]  # builtins the forward is expected to lower to (float and int8)
    kinks: tuple[float, ...] = ()  # points where the forward has no derivative

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
        ActivationSpec("step", "Step", "1 if x > 0 else 0", GradientKind.SURROGATE,
                       ("GREATER", "SELECT_V2"), kinks=(0.0,)),
        ActivationSpec("hard_swish", "HardSwish", "x * relu6(x + 3) / 6", GradientKind.AUTODIFF,
                       ("HARD_SWISH",), kinks=(-3.0, 3.0)),
        # also a RELU, unless the converter fuses it into the layer before (it does after Dense)
        ActivationSpec("mish", "Mish", "x * tanh(softplus(x))", GradientKind.AUTODIFF,
                       ("SUB", "EXP", "LOG", "ADD", "TANH", "MUL")),
        ActivationSpec("gelu_tanh", "GeluTanh",
                       "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))", GradientKind.AUTODIFF,
                       ("GELU",)),
    )
}


def get_activation(name: str) -> ActivationSpec:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise unknown_name("activation", name, ACTIVATIONS) from None
