"""The error type every room raises for bad user input.

Its message is one line: what was expected, what was received, and what to do. The CLI prints
it and exits 2; anything else is a bug and shows a traceback with --debug.
"""

import difflib


class EdgepipeError(Exception):
    """Bad input from the user (a name, a file, an option)."""


def nearest(name: str, valid, cutoff: float = 0.6) -> str | None:
    """The valid name most like `name` (difflib's ratio of at least `cutoff`), or None."""
    near = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=cutoff)
    return near[0] if near else None


def unknown_name(kind: str, name: str, valid) -> EdgepipeError:
    """"Unknown target 'hots'. Did you mean 'host'? Valid targets: ..." """
    valid = sorted(valid)
    near = nearest(name, valid, cutoff=0.7)
    hint = f" Did you mean {near!r}?" if near else ""
    return EdgepipeError(f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}.")


def unknown_key(key: str, valid, where: str) -> EdgepipeError:
    """"Unknown key 'timout' in run.toml [targets]. Did you mean 'timeout'?" (the valid keys
    when none is near)."""
    near = nearest(key, valid)
    hint = f" Did you mean {near!r}?" if near else f" Valid keys: {', '.join(valid)}."
    return EdgepipeError(f"Unknown key {key!r} in {where}.{hint}")


class JobFailed(str):
    """A job's outcome, not an exception, when its worker process died (a cluster's worker
    killed by a signal): why, in one line. The run goes on and records it as that job's error."""
