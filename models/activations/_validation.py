"""Argument checks shared by the activation layers, with Keras-style messages."""

import math


def check_float(name: str, value, *, low=None, high=None, low_open=False, high_open=False):
    """Return `value` as a float, or raise ValueError saying what was expected and received."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Expected a finite float. Received: {name}={value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            expected = f"{name} {'>' if low_open else '>='} {low:g}"
        else:
            expected = (f"{name} in {'(' if low_open else '['}{low:g}, "
                        f"{high:g}{')' if high_open else ']'}")
        raise ValueError(f"Expected {expected}. Received: {name}={value!r}")
    return value


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"Expected {name} to be one of {', '.join(map(repr, choices))}. "
                         f"Received: {name}={value!r}")
    return value
