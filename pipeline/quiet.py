"""Silence TensorFlow's start-up chatter (absl, oneDNN, CPU-feature notes) unless --debug.

Called from the CLI's entry point and commands, never on import: global state is the entry
point's business.
"""

import logging
import os
import sys
import warnings

from ..converters.native_output import captured_native_output


def quiet_tensorflow(debug: bool) -> None:
    """Settings that must be in place before TensorFlow is imported."""
    if debug:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow|keras)")


def import_tensorflow(debug: bool) -> None:
    """Import TensorFlow; unless debugging, with native stderr muted for the import.

    TF 2.21's native libraries log to file descriptor 2 while loading, before absl reads
    TF_CPP_MIN_LOG_LEVEL, so the only way to keep them out of normal output is to capture the fd.
    Import errors still surface: they are Python exceptions, not stderr text.
    """
    with captured_native_output(enabled=not debug and "tensorflow" not in sys.modules):
        import tensorflow  # noqa: F401
    if debug:
        return
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
