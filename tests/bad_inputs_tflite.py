"""Bad `.tflite` files for `edgepipe check`: what a path can name besides a regular file (a FIFO
hung check for ever), accidents (a truncated download, an HTML page, an LFS pointer), structures
the flatbuffers verifier refuses, and files whose structure is valid but that LiteRT refuses to
load or crashes on (a failed check, exit 1). No case imports TensorFlow."""

import os

from bad_inputs import Case
from mutations import recursive_while
from test_tflite_file import LFS_POINTER, _built, _options_vtable_outside, _set

CHECK = ("check", "x.tflite")


def _write(content):
    """x.tflite holding `content`: bytes, or a function that makes them (run at setup)."""
    return lambda folder: folder.write("x.tflite", content() if callable(content) else content)


def _patched(patch):
    """x.tflite: the tiny bundle's mlp.float32 model, `patch`ed."""

    def setup(folder):
        root = folder.fixtures("tiny_bundle")[0]
        folder.write("x.tflite", patch((root / "tflite" / "mlp.float32.tflite").read_bytes()))

    return setup


def _special(kind: str):
    """x.tflite made a FIFO, a folder, a link to /dev/zero, a link to itself or to nothing."""

    def setup(folder):
        path = folder.path / "x.tflite"
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "device":
            folder.link("x.tflite", "/dev/zero")
        elif kind == "loop":
            path.symlink_to("x.tflite")
        else:
            path.symlink_to("gone.tflite")

    return setup


def _abs_version_99() -> bytes:
    """y = ABS(x) whose operator code asks for a kernel version LiteRT does not have."""
    return _built(lambda schema, model, w: setattr(model.operatorCodes[0], "version", 99))


CASES = [
    # ---- what the path names: refused from its stat, before it is opened
    Case("tflite-fifo", "x.tflite is a FIFO (check hung for ever)", CHECK, 2,
         "x.tflite is a FIFO (named pipe), not a regular file: pass the path of a .tflite file",
         _special("fifo")),
    Case("tflite-folder", "x.tflite is a folder", CHECK, 2,
         "x.tflite is a folder, not a regular file", _special("folder")),
    Case("tflite-dev-zero", "x.tflite links to /dev/zero (reading it never ends)", CHECK, 2,
         "x.tflite is a character device, not a regular file", _special("device")),
    Case("tflite-link-loop", "x.tflite is a symbolic link to itself", CHECK, 2,
         "x.tflite is a symbolic link that loops", _special("loop")),
    Case("tflite-dangling-link", "x.tflite links to a file that is gone", CHECK, 2,
         "x.tflite is a symbolic link to gone.tflite, which does not exist", _special("gone")),
    # ---- accidents: named for what they are
    Case("tflite-truncated", "x.tflite is a model cut in half (an interrupted copy)", CHECK, 2,
         "x.tflite is truncated or corrupt", _patched(lambda data: data[:len(data) // 2])),
    Case("tflite-html", "x.tflite is an HTML error page saved by a download", CHECK, 2,
         "x.tflite is not a TFLite flatbuffer: it looks like an HTML page",
         _write(b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")),
    Case("tflite-lfs-pointer", "x.tflite is a Git LFS pointer (git lfs pull not run)", CHECK, 2,
         "it looks like a Git LFS pointer file; run `git lfs pull`", _write(LFS_POINTER)),
    # ---- structures LiteRT refuses, found by the reader's verifier (check used to pass them)
    Case("tflite-options-vtable", "an operator's builtin options (which the audit never reads) "
         "have a vtable outside the file", CHECK, 2,
         "subgraph 0 operator 0 builtin options vtable points outside the file",
         _patched(_options_vtable_outside)),
    Case("tflite-schema-version", "a model of schema version 4", CHECK, 2,
         "the model has schema version 4; TFLite files have version 3",
         _write(lambda: _built(_set("model", "version", 4)))),
    # ---- valid structure, but LiteRT will not load it: a failed check
    Case("tflite-litert-refuses", "ABS version 99, a kernel LiteRT does not have", CHECK, 1,
         "the structure is valid, but LiteRT refuses it", _write(_abs_version_99)),
    Case("tflite-litert-crashes", "a WHILE whose body recurses into itself (LiteRT's "
         "allocate_tensors overflows the C stack)", CHECK, 1,
         "the interpreter crashed while loading it (killed by signal 11, SIGSEGV)",
         _write(recursive_while)),
]
