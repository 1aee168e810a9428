"""The `[repair]` table of the run config: whether and how far edgepipe repairs a variant that
fails parity or that a target refuses (pipeline/repair.py).

    [repair]
    enabled = true                        # --no-repair turns it off for one run
    max_conversions = 8                   # tries per variant, each one conversion
    precisions = ["int16", "float32"]     # what the culprit layers are kept in, in this order

    [repair.mlp_step]                     # per model: any of the keys above
    precisions = ["float32"]
"""

from dataclasses import dataclass

from ..core.errors import EdgepipeError, unknown_key, unknown_name
from .values import COUNT, FLAG, TABLE, Rule, check_table

PRECISIONS = ("int16", "float32")
REPAIR_RULES = {
    "enabled": FLAG,
    "max_conversions": COUNT,
    "precisions": Rule('a non-empty list of distinct precisions among "int16", "float32"',
                       lambda v: isinstance(v, list) and bool(v) and len(set(v)) == len(v)
                       and all(p in PRECISIONS for p in v)),
}
REPAIR_KEYS = tuple(REPAIR_RULES)


@dataclass(frozen=True)
class RepairSettings:
    enabled: bool = True
    max_conversions: int = 8
    precisions: tuple[str, ...] = PRECISIONS

    def as_dict(self) -> dict:
        return {"enabled": self.enabled, "max_conversions": self.max_conversions,
                "precisions": list(self.precisions)}


def check_repair(table: dict, models: list[str], where: str) -> None:
    """`[repair]` and its `[repair.<model>]` tables: known keys and models, checked values."""
    for key, value in table.items():
        if key in REPAIR_RULES:
            continue
        if key not in models:
            if isinstance(value, dict):
                raise unknown_name("model", key, models)
            raise unknown_key(key, REPAIR_KEYS, f"{where} [repair]")
        TABLE.check(f"[repair.{key}]", value, where)
        for inner in value:
            if inner not in REPAIR_RULES:
                raise unknown_key(inner, REPAIR_KEYS, f"{where} [repair.{key}]")
        check_table(REPAIR_RULES, value, f"{where} [repair.{key}]")
    check_table(REPAIR_RULES, table, f"{where} [repair]")


def repair_settings(table: dict, model: str, enabled: bool | None = None) -> RepairSettings:
    """The settings for `model`: the defaults, then `[repair]`, then `[repair.<model>]`;
    `enabled` (the command line's --no-repair) over all of them."""
    values = {k: v for k, v in table.items() if k in REPAIR_RULES}
    values.update(table.get(model, {}) if isinstance(table.get(model), dict) else {})
    if enabled is not None:
        values["enabled"] = enabled
    if "precisions" in values:
        values["precisions"] = tuple(values["precisions"])
    try:
        return RepairSettings(**values)
    except TypeError as e:  # check_repair refuses unknown keys first; this is a guard
        raise EdgepipeError(f"[repair]: {e}") from None
