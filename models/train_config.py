"""Training settings, validated when built (no TensorFlow: the CLI checks them first)."""

from dataclasses import dataclass

from ..core.errors import EdgepipeError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300  # an upper bound: early stopping on validation loss ends most runs sooner
    batch_size: int = 32
    learning_rate: float = 3e-3
    patience: int = 20
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EdgepipeError(f"Expected {name} to be a whole number >= 1. "
                                    f"Received: {name}={value!r}")
        if not self.learning_rate > 0:
            raise EdgepipeError(f"Expected learning_rate > 0. Received: {self.learning_rate!r}")
