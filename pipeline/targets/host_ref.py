"""The `host-ref` target: this machine's TFLite interpreter with its reference kernels
(BUILTIN_REF), the baseline other builds of the same kernels are compared with."""

from .host import Host


class HostRef(Host):  # the same interpreter, available when host is
    name = "host-ref"
    description = "this machine's TFLite interpreter, reference kernels (BUILTIN_REF)"
    runner_options = ("--kernels", "reference")


TARGET = HostRef()
