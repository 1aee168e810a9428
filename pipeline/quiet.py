"""Silence TensorFlow's start-up chatter (absl, oneDNN, CPU-feature notes) unless --debug.

Called from the CLI's entry point and commands, never on import: global state is the entry
point's business.
"""

import logging
import os
import sys
import warnings


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
    TF_CPP_MIN_LOG_LEVEL, so the only way to keep them out of normal output is to mute the fd.
    Import errors still surface: they are Python exceptions, not stderr text.
    """
    if debug or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
