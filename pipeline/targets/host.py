"""The `host` target: this machine's TFLite interpreter with its default kernels (XNNPACK)."""

from .base import LocalRunner, missing_module


class Host(LocalRunner):
    name = "host"
    description = "this machine's TFLite interpreter, default kernels (XNNPACK)"
    runner_options = ("--kernels", "default")

    def availability(self):
        return missing_module("ai_edge_litert",
                              "ai-edge-litert is not installed: pip install ai-edge-litert")


TARGET = Host()
