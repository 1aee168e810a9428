"""The model zoo: a name for every (architecture family, activation) pair.

Light on purpose (no TensorFlow): the names are needed by the CLI before any model is built.
The Keras architectures themselves are in `architectures.py`.
"""

from dataclasses import dataclass

from ..core.errors import EdgepipeError, unknown_name
from .datasets import Task
from .registry import ACTIVATIONS


@dataclass(frozen=True)
class Family:
    name: str
    dataset: str  # the built-in dataset it trains on by default
    task: Task
    shape: str  # the architecture, for people


FAMILIES = {
    "mlp": Family("mlp", "diabetes", Task.REGRESSION, "Dense(64) -> act -> Dense(1)"),
    "cnn": Family("cnn", "digits", Task.CLASSIFICATION,
                  "Conv2D(32,3) -> act -> DepthwiseConv2D(3) -> act -> Conv2D(64,1) -> act "
                  "-> MaxPool(2) -> Dense(64) -> act -> Dense(10) -> softmax"),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    activation: str

    @property
    def dataset(self) -> str:
        return self.family.dataset


ZOO: dict[str, ModelSpec] = {
    f"{family}_{act}": ModelSpec(f"{family}_{act}", FAMILIES[family], act)
    for family in FAMILIES
    for act in ACTIVATIONS
}


def check_input_shape(spec: ModelSpec, input_shape) -> None:
    """Refuse data the family cannot take, before any training starts."""
    if spec.family.name == "cnn" and (len(input_shape) != 3 or min(input_shape[:2]) < 2):
        raise EdgepipeError(f"Model {spec.name} needs images of shape (height, width, channels) "
                            f"of at least 2x2; got samples of shape {tuple(input_shape)}. "
                            "Use an mlp_* model for tabular data.")


def get_model_spec(name: str) -> ModelSpec:
    try:
        return ZOO[name]
    except KeyError:
        raise unknown_name("model", name, ZOO) from None
