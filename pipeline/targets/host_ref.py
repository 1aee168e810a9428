"""The `host-ref` target: this machine's TFLite interpreter with its reference kernels."""

from .base import LocalRunner, missing_module


class HostRef(LocalRunner):
    name = "host-ref"
    description = "this machine's TFLite interpreter, reference kernels (BUILTIN_REF)"
    runner_options = ("--kernels", "reference")

    def availability(self):
        return missing_module("ai_edge_litert",
                              "ai-edge-litert is not installed: pip install ai-edge-litert")


TARGET = HostRef()
