"""The custom-activation layers, one file each (see `models/registry.py` for the registry).

Importing this package registers every layer for Keras serialization under the package name
"edgepipe", so a saved `.keras` file loads after `import edgepipe.models.activations`.
"""

from .gelu_tanh import GeluTanh
from .hard_swish import HardSwish
from .mish import Mish
from .piecewise_linear import PiecewiseLinear
from .step import Step
from .swish import Swish

__all__ = ["GeluTanh", "HardSwish", "Mish", "PiecewiseLinear", "Step", "Swish"]
