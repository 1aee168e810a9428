"""The `tflm` target: TFLite Micro's reference kernels on this machine (PyPI tflite-micro)."""

from .base import LocalRunner, missing_module


class Tflm(LocalRunner):
    name = "tflm"
    description = "TFLite Micro's reference kernels on this machine (PyPI tflite-micro)"
    runner_options = ("--runtime", "tflite_micro")
    # Both are reference kernels: what differs is TFLite Micro's own (arena, op resolver).
    compare_with = "host-ref"
    op_set = "tflm"

    def availability(self):
        return missing_module("tflite_micro", "tflite-micro is not installed: pip install "
                                              "'edgepipe[micro]' (x86-64 Linux)")


TARGET = Tflm()
