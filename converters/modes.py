"""The five deployable variants of a model, and what each asks of the TFLite converter."""

from enum import Enum

from ..core.errors import EdgepipeError, unknown_name


class QuantMode(str, Enum):
    FLOAT32 = "float32"   # no quantization
    FLOAT16 = "float16"   # float16 weights, float32 compute on most CPUs
    DYNAMIC = "dynamic"   # int8 weights, float activations (dynamic-range quantization)
    INT8 = "int8"         # full integer: int8 weights and activations, int8 input and output
    INT16X8 = "int16x8"   # int16 activations, int8 weights, int16 input and output

    @property
    def integer_only(self) -> bool:
        """The whole graph must run in integers: a float op inside is a defect."""
        return self in (QuantMode.INT8, QuantMode.INT16X8)

    @property
    def needs_representative_data(self) -> bool:
        return self.integer_only

    @property
    def batch_one_tag(self) -> str:
        """The tag of the mode's batch-1 variant (static shapes, for TFLite Micro): its files
        are `<model>.<tag>.tflite` and `.json`, its entry `<model>-<tag>`."""
        return f"{self.value}.batch1"


def parse_modes(text: str) -> list[QuantMode]:
    """`int8`, `float32,int8` or `all`."""
    if text == "all":
        return list(QuantMode)
    modes = []
    for name in filter(None, (part.strip() for part in text.split(","))):
        try:
            modes.append(QuantMode(name))
        except ValueError:
            raise unknown_name("mode", name, [m.value for m in QuantMode] + ["all"]) from None
    if not modes:
        raise EdgepipeError("Expected at least one mode (float32, float16, dynamic, int8, "
                            "int16x8 or all). Received: --mode ''")
    return modes
