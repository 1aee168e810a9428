"""Values as text, shared by the page, its plots and junit.xml."""

import math
import re

# XML 1.0 cannot carry these at all, escaped or not (an interpreter message can contain an
# ANSI escape or a NUL); ElementTree would write them and produce a file no parser accepts.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value) -> str:
    return _NOT_XML.sub("\N{REPLACEMENT CHARACTER}", "" if value is None else str(value))


def fmt(value) -> str:
    """A number as a short string; `–` for absent."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(fmt(v) for v in value[:10])
        return f"[{shown}{', …' if len(value) > 10 else ''}]"
    return str(value)
