"""Capture what native code (TF's C++, the MLIR converter) writes straight to fd 1 and 2.

Python-level redirection cannot catch it; duplicating the file descriptors can. The captured
text is kept, so a failure can still show it (and --debug can print it).
"""

import os
import sys
import tempfile
from contextlib import contextmanager


@contextmanager
def captured_native_output(enabled: bool = True):
    """Yield a list that receives the captured text when the block ends."""
    log: list[str] = []
    if not enabled:
        yield log
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            log.append(sink.read().decode(errors="replace"))
