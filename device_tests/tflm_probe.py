"""Load a model in TFLite Micro with one arena size and invoke it once on zeros.

    python tflm_probe.py MODEL.tflite ARENA_BYTES [--allocations]

A standalone script (numpy and tflite-micro only, no package imports) that device_tests/tflm.py
runs in a child process: a too-small arena can kill TFLM's process with SIGSEGV instead of
raising, and TFLM prints why it refuses a model on C's stderr, not in the exception.
Exit 0 when the model ran; `--allocations` prints TFLM's allocation summary on stderr. Before
each step it prints `stage: <what it does>` on stdout: a probe that a signal kills prints
nothing else when the kernel's check is a bare abort(), and tflm.py then says in which step.
"""

import sys

import numpy as np


def stage(what: str) -> None:
    print(f"stage: {what}", flush=True)


def main(argv) -> int:
    from tflite_micro.python.tflite_micro import runtime

    with open(argv[0], "rb") as stream:
        data = stream.read()
    stage("loading the model and preparing its ops")
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(argv[1]))
    stage("setting the inputs")
    index = 0
    while True:
        try:
            details = interpreter.get_input_details(index)
        except (IndexError, RuntimeError):  # past the last input
            break
        shape = [max(1, int(d)) for d in details["shape"]]
        interpreter.set_input(np.zeros(shape, dtype=details["dtype"]), index)
        index += 1
    stage("invoking the model")
    interpreter.invoke()
    stage("done")
    if "--allocations" in argv:
        interpreter.print_allocations()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
