"""The error type every room raises for bad user input.

Its message is one line: what was expected, what was received, and what to do. The CLI prints
it and exits 2; anything else is a bug and shows a traceback with --debug.
"""


class EdgepipeError(Exception):
    """Bad input from the user (a name, a file, an option)."""


def unknown_name(kind: str, name: str, valid) -> EdgepipeError:
    valid = sorted(valid)
    return EdgepipeError(f"Unknown {kind} {name!r}. Valid {kind}s: {', '.join(valid)}.")
