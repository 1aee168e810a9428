"""The targets parity runs on: one module per kind behind one interface (base.Target), and the
registry below. Adding a target is one module and one line here.

Every target but ethos-u runs the same `device_tests` runner on the same bundle, so the checks
are identical everywhere; each leaves its results file (and the outputs beside it) in the run
folder. No TensorFlow here, nor numpy at import: `edgepipe targets` and `edgepipe parity` stay
light.
"""

import enum

from ...core.errors import unknown_name
from . import ethos_u, host, host_ref, pool, qemu_aarch64, ssh, tflm
from .base import Target, runner_said
from .options import TARGET_RULES, TargetOptions

__all__ = ["REGISTRY", "TARGET_RULES", "Target", "TargetKind", "TargetOptions", "check_target",
           "get_target", "kind_of", "listing", "order_key", "runner_said"]


class TargetKind(str, enum.Enum):
    HOST = "host"
    HOST_REF = "host-ref"
    TFLM = "tflm"
    QEMU_AARCH64 = "qemu-aarch64"
    ETHOS_U = "ethos-u"
    SSH = "ssh"  # ssh://user@host[:port]: every board is one
    POOL = "pool"  # pool:NAME: the boards of [targets.pools] NAME, as one target

    def __str__(self) -> str:
        return self.value


# kind -> its target; the order is the report's column order (boards, then pools, last).
REGISTRY: dict[TargetKind, Target] = {
    TargetKind.HOST: host.TARGET,
    TargetKind.HOST_REF: host_ref.TARGET,
    TargetKind.TFLM: tflm.TARGET,
    TargetKind.QEMU_AARCH64: qemu_aarch64.TARGET,
    TargetKind.ETHOS_U: ethos_u.TARGET,
    TargetKind.SSH: ssh.TARGET,
    TargetKind.POOL: pool.TARGET,
}


def kind_of(name: str) -> TargetKind | None:
    """The kind of target `name` is (not checked further), or None."""
    return next((kind for kind, target in REGISTRY.items() if target.claims(name)), None)


def get_target(name: str) -> Target:
    """The target called `name`; EdgepipeError naming the nearest valid one."""
    kind = kind_of(name)
    if kind is None:
        raise unknown_name("target", name, [t.name for t in REGISTRY.values()])
    return REGISTRY[kind].named(name)


def check_target(name: str) -> str:
    """The target name, validated; EdgepipeError naming the nearest valid one."""
    get_target(name)
    return name


def order_key(name: str) -> tuple:
    """Report order: the registry's, boards last by name (unknown names after them)."""
    kind = kind_of(name)
    return (list(REGISTRY).index(kind) if kind else len(REGISTRY), name)


def listing() -> list:
    """(name, what it is, None or why it cannot run here) for every target, as
    `edgepipe targets` prints them."""
    return [(t.name, t.description, t.availability()) for t in REGISTRY.values()]
