"""What a config value or a command-line number must be, as data.

A `Rule` says in words what a value must be and tests it; the config tables (`[run]`,
`[tolerances]`, `[targets]`, `[budgets]`) and the CLI's number options each map their keys to a
rule, so that every value is checked, before any work, by the same few tests and refused with
the same one line. No TensorFlow, no numpy: `edgepipe --help` imports this.
"""

import math
import reprlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import EdgepipeError

# The longest a target may be given, in seconds: Python's clocks overflow near 1e300, and a wait
# longer than a week is a hang, not a slow board.
WEEK = 7 * 24 * 3600
# A value as Python writes it, cut short and shallow: the error stays one readable line whatever
# the file holds.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 3


@dataclass(frozen=True)
class Rule:
    expected: str                   # said in the error: "a whole number >= 1"
    test: Callable[[object], bool]
    note: Callable[[object], str] = lambda value: ""  # what is wrong, when a cut value hides it

    def check(self, key: str, value, where: str) -> None:
        if not self.test(value):
            raise EdgepipeError(f"Expected {key} in {where} to be {self.expected}. "
                                f"Received: {_SHORT.repr(value)}{self.note(value)}.")


def check_table(rules: dict, table: dict, where: str) -> None:
    """Every value of `table` whose key has a rule, checked (unknown keys: the caller's)."""
    for key, value in table.items():
        if key in rules:
            rules[key].check(key, value, where)


def number(low: float, high: float | None = None, *, whole: bool = False,
           above: bool = False) -> Rule:
    """A finite number >= low (> low with `above`), <= high when given; `whole`: an int.
    bool is refused though Python calls it an int: `seed = true` is a mistake."""
    kind = "a whole number" if whole else "a finite number"
    bounds = f"> {low}" if above else f">= {low}"
    if high is not None:
        bounds += f" and <= {high}"

    def test(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (value > low if above else value >= low) and (high is None or value <= high)

    return Rule(f"{kind} {bounds}", test)


def is_text(value) -> bool:
    """A non-empty string without NUL (which no path, command or name may hold)."""
    return isinstance(value, str) and bool(value) and "\0" not in value


def names(example: str) -> Rule:
    """A list of distinct names: a string where a list belongs would be read letter by letter,
    and a name given twice would build the same files twice at once."""

    def twice(value) -> str:
        listed = Counter(x for x in value if isinstance(x, str)) \
            if isinstance(value, (list, tuple)) else Counter()
        again = [name for name, n in listed.items() if n > 1]
        return f": {', '.join(map(repr, again))} more than once" if again else ""

    return Rule(f"a list of distinct names, e.g. {example}",
                lambda v: isinstance(v, (list, tuple)) and all(is_text(x) for x in v)
                and len(set(v)) == len(v), twice)


TEXT = Rule("a non-empty string", is_text)
FLAG = Rule("true or false", lambda v: isinstance(v, bool))
TABLE = Rule("a table", lambda v: isinstance(v, dict))
COUNT = number(1, whole=True)                    # epochs, representative samples
SEED = number(0, 2**32 - 1, whole=True)          # numpy's and TensorFlow's seeds are 32-bit
SECONDS = number(0, WEEK, above=True)            # timeouts
