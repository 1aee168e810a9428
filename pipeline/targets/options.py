"""How to reach and bound the targets: the run config's [targets] table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...core.errors import unknown_name
from ..values import SECONDS, TEXT, Rule, check_table, is_text
from .vela import ACCELERATORS


@dataclass(frozen=True)
class TargetOptions:
    """How to reach and bound the targets; the run config's [targets] table."""
    timeout: float = 1800.0             # seconds, per target
    entry_timeout: float = 300.0        # seconds per entry: a hung interpreter fails that entry
    ssh_python: str = "python3"         # the board's Python
    ssh_identity: str | None = None     # a private key; default: ssh's own (agent, ~/.ssh)
    ssh_options: tuple = ()             # extra arguments for ssh, e.g. ("-o", "ProxyJump=gw")
    accelerator: str = "ethos-u55-256"  # Vela's --accelerator-config
    # [targets.pools]: {name: (ssh:// URL, ...)}, the boards of each `pool:NAME` (pool.py)
    pools: dict = field(default_factory=dict)

    def __post_init__(self):
        check_table(TARGET_RULES, asdict(self), "[targets]")
        if self.accelerator not in ACCELERATORS:  # before any work, not when ethos-u runs
            raise unknown_name("accelerator", self.accelerator, ACCELERATORS)


# [targets] key -> what it must be
TARGET_RULES = {
    "timeout": SECONDS,
    "entry_timeout": SECONDS,
    "ssh_python": TEXT,
    "ssh_identity": Rule("a non-empty string", lambda v: v is None or is_text(v)),
    "ssh_options": Rule('a list of strings, e.g. ["-o", "ProxyJump=gw"]',
                        lambda v: isinstance(v, (list, tuple)) and all(is_text(x) for x in v)),
    "accelerator": TEXT,
    "pools": Rule('a table of board lists, e.g. [targets.pools] pi4 = ["ssh://pi@board-a", '
                  '"ssh://pi@board-b:2222"]',
                  lambda v: isinstance(v, dict) and all(
                      isinstance(b, (list, tuple)) and all(is_text(x) for x in b)
                      for b in v.values())),
}
