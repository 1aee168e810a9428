"""The error type every room raises for bad user input.

Its message is one line: what was expected, what was received, and what to do. The CLI prints
it and exits 2; anything else is a bug and shows a traceback with --debug.
"""


class EdgepipeError(Exception):
    """Bad input from the user (a name, a file, an option)."""


def unknown_name(kind: str, name: str, valid) -> EdgepipeError:
    """"Unknown target 'hots'. Did you mean 'host'? Valid targets: ..." """
    import difflib

    valid = sorted(valid)
    near = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.7)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return EdgepipeError(f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}.")
