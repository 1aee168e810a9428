"""Bad data (`--data d.npz`) and bad `.keras` files: what crashed TensorFlow natively, ran out of
memory or hung is refused in one line, before TensorFlow is imported."""

import io
import os
import zipfile

import numpy as np
from bad_inputs import Case

TRAIN = ("train", "mlp_swish", "--data", "d.npz", "--out", "out")  # 10 features, regression
TRAIN_CLASSES = ("train", "cnn_swish", "--data", "d.npz", "--out", "out")  # 8x8 images
RUN = ("run", "--model", "m.keras", "--data", "d.npz", "--out", "out")
RNG = np.random.default_rng(0)


def _npz(**change):
    return lambda folder: folder.npz(**change)


def _images(**change):
    """A valid classification .npz for cnn_swish (8x8 images, classes 0-2), `change`d."""
    arrays = {"x_train": RNG.random((40, 8, 8)), "y_train": RNG.integers(0, 3, 40),
              "x_test": RNG.random((8, 8, 8)), "y_test": RNG.integers(0, 3, 8)}
    return _npz(**{**arrays, **change})


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _members(change: dict, sizes: dict | None = None, flags: int = 0):
    """d.npz: a valid .npz whose `<key>.npy` members are replaced by the bytes in `change`
    (None: left out). The zip directory, written on close, can say otherwise than the members:
    `sizes` other sizes ({key: bytes}: a genuine file that large would hold the data), `flags`
    more flag bits for every member (0x1: encrypted)."""

    def setup(folder):
        arrays = np.load(folder.npz("valid.npz"))
        with zipfile.ZipFile(folder.path / "d.npz", "w") as archive:
            for key in ("x_train", "y_train", "x_test", "y_test"):
                content = change.get(key, _npy_bytes(arrays[key]))
                if content is not None:
                    archive.writestr(f"{key}.npy", content)
            for key, size in (sizes or {}).items():
                archive.getinfo(f"{key}.npy").file_size = size
            for info in archive.infolist():
                info.flag_bits |= flags

    return setup


def _declared(shapes: dict, member_size: int | None = None):
    """Members whose .npy headers declare `shapes` ({key: shape} of float64) over 80 bytes."""

    def npy(shape) -> bytes:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"shape": shape, "fortran_order": False, "descr": "<f8"})
        return header.getvalue() + bytes(80)

    return _members({key: npy(shape) for key, shape in shapes.items()},
                    {key: member_size for key in shapes} if member_size else None)


def _special(rel: str, kind: str):
    """`rel` made a folder, a FIFO, a link to /dev/zero or a dangling link."""

    def setup(folder):
        path = folder.path / rel
        if kind == "folder":
            path.mkdir()
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            folder.link(rel, "/dev/zero")
        else:
            folder.link(rel, folder.path / "gone.keras")

    return setup


def _keras_zip(*members: str):
    """m.keras as a zip holding a config.json and `members` (names as given)."""

    def setup(folder):
        with zipfile.ZipFile(folder.path / "m.keras", "w") as archive:
            archive.writestr("config.json", "{}")
            for name in members:
                archive.writestr(name, "written outside the folder\n")

    return setup


def _model_and(setup_data):
    """A real small .keras model (10 inputs, 1 output) as m.keras, and the data `setup_data`."""

    def setup(folder):
        import keras

        inputs = keras.Input((10,))
        keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(folder.path / "m.keras")
        setup_data(folder)

    return setup


def _both(*setups):
    def setup(folder):
        for one in setups:
            one(folder)

    return setup


def _write(rel: str, content):
    return lambda folder: folder.write(rel, content)


TEXT = "<html><body>404 Not Found</body></html>\n"
NO_VALUES = "so each sample holds no values"

CASES = [
    # ---- arrays whose shape, dtype or size crashed numpy or TensorFlow
    Case("data-train-zero-width-features", "x_train of shape (50, 0): no features (SIGABRT "
         "inside oneDNN)", TRAIN, 2, f"x_train has shape (50, 0), {NO_VALUES}",
         _npz(x_train=np.zeros((50, 0)), y_train=np.zeros(50), x_test=np.zeros((8, 0)))),
    Case("data-train-zero-width-image", "x_train images of shape (40, 8, 0)", TRAIN_CLASSES, 2,
         f"x_train has shape (40, 8, 0), {NO_VALUES}",
         _images(x_train=np.zeros((40, 8, 0)), x_test=np.zeros((8, 8, 0)))),
    Case("data-train-0d-x", "x_train is one number (a 0-d array)", TRAIN, 2,
         "x_train has shape (); expected (samples, features...)", _npz(x_train=np.array(5.0))),
    Case("data-train-empty-test", "x_test and y_test hold no samples", TRAIN, 2,
         "40 training and 0 test samples; expected at least 10 and 1",
         _npz(x_test=np.zeros((0, 10)), y_test=np.zeros(0))),
    Case("data-train-empty-train", "x_train and y_train hold no samples", TRAIN, 2,
         "0 training and 8 test samples; expected at least 10 and 1",
         _npz(x_train=np.zeros((0, 10)), y_train=np.zeros(0))),
    Case("data-train-declared-shape-1e12", "x_train's header declares shape (10^12, 10) over "
         "80 bytes of data (MemoryError)", TRAIN, 2,
         "x_train declares shape (1000000000000, 10) of float64 (80.0 TB) but holds",
         _declared({"x_train": (10**12, 10)})),
    Case("data-train-larger-than-memory", "x_train and y_train of 10^11 samples (16 TB), the "
         "zip directory agreeing", TRAIN, 2, "of memory to load",
         _declared({"x_train": (10**11, 10), "y_train": (10**11,)}, member_size=10**13)),
    Case("data-train-negative-size", "x_train's header declares shape (-1, 10)", TRAIN, 2,
         "x_train declares shape (-1, 10), with a negative size", _declared({"x_train": (-1, 10)})),
    # ---- what is not numbers
    Case("data-train-ragged-object", "x_train is a ragged list of samples (object array, "
         "pickled)", TRAIN, 2, "x_train holds Python objects (dtype object)",
         _npz(x_train=np.array([np.zeros(10), np.zeros(9)] * 20, dtype=object))),
    Case("data-train-structured", "x_train has a structured dtype (records)", TRAIN, 2,
         "x_train holds records (structured dtype",
         _npz(x_train=np.zeros((40, 10), dtype=[("a", "<f4"), ("b", "<i4")]))),
    Case("data-train-bool", "x_train holds booleans", TRAIN, 2,
         "x_train holds booleans (dtype bool)", _npz(x_train=np.zeros((40, 10), bool))),
    Case("data-train-complex", "x_test holds complex numbers", TRAIN, 2,
         "x_test holds complex numbers (dtype complex128)",
         _npz(x_test=np.zeros((8, 10), complex))),
    Case("data-train-datetime", "y_train holds dates", TRAIN, 2,
         "y_train holds dates (dtype datetime64[s])",
         _npz(y_train=np.zeros(40, "datetime64[s]"))),
    Case("data-train-strings", "x_train holds strings", TRAIN, 2,
         "x_train holds text (dtype <U1)", _npz(x_train=np.array([["a"] * 10] * 40))),
    Case("data-train-beyond-float32", "x_train holds 1e300 (inf once float32)", TRAIN, 2,
         "x_train has values beyond float32's range",
         _npz(x_train=np.where(np.arange(400).reshape(40, 10) == 123, 1e300, 0.5))),
    # ---- targets and labels
    Case("data-train-labels-out-of-range", "a class label of 10^9 (a 10^9-wide output layer)",
         TRAIN_CLASSES, 2, "the labels go up to 1000000000, so the classifier would have "
         "1000000001 outputs", _images(y_train=np.r_[np.zeros(39, int), 10**9])),
    Case("data-train-negative-labels", "a class label of -1", TRAIN_CLASSES, 2,
         "y_test must hold class indices 0, 1, 2, ...",
         _images(y_test=np.r_[np.zeros(7, int), -1])),
    Case("data-train-y-two-columns", "y_train of shape (40, 2) for a regression", TRAIN, 2,
         "y_train has shape (40, 2); expected one number per sample",
         _npz(y_train=np.zeros((40, 2)))),
    Case("data-train-y-0d", "y_train is one number (a 0-d array)", TRAIN, 2,
         "y_train has shape (); expected one target per sample, shape (40,)",
         _npz(y_train=np.array(1.0))),
    Case("data-train-y-fewer", "y_train has one sample fewer than x_train", TRAIN, 2,
         "x_train has 40 samples but y_train has 39", _npz(y_train=np.zeros(39))),
    Case("data-train-missing-array", "the .npz has no y_test", TRAIN, 2,
         "has no array 'y_test'", _members({"y_test": None})),
    # ---- not a .npz at all
    Case("data-train-text-file", "an HTML error page saved as d.npz", TRAIN, 2,
         "d.npz is not a .npz (zip) file: it starts with text '<html><body>404",
         _write("d.npz", TEXT)),
    Case("data-train-npy", "a single .npy array (numpy.save) named d.npz", TRAIN, 2,
         "it is a single .npy array (numpy.save)", _write("d.npz", _npy_bytes(np.zeros(3)))),
    Case("data-train-empty-file", "an empty d.npz", TRAIN, 2, "it is empty (0 bytes)",
         _write("d.npz", b"")),
    Case("data-train-truncated", "the first half of a .npz", TRAIN, 2,
         "it is a damaged zip archive",
         lambda folder: folder.write("d.npz", folder.npz().read_bytes()[:1500])),
    Case("data-train-member-not-npy", "y_test.npy in the zip is not a .npy", TRAIN, 2,
         "d.npz is damaged (the magic string is not correct",
         _members({"y_test": b"not an array"})),
    Case("data-train-encrypted", "a .npz whose members are encrypted (zip -e)", TRAIN, 2,
         "its zip members are encrypted or compressed in a way numpy.savez never writes",
         _members({}, flags=0x1)),
    Case("data-train-missing", "d.npz does not exist", TRAIN, 2, "Data file d.npz does not exist"),
    Case("data-train-folder", "d.npz is a folder", TRAIN, 2,
         "Data file d.npz is a folder, not a regular file", _special("d.npz", "folder")),
    Case("data-train-fifo", "d.npz is a FIFO (reading it would block for ever)", TRAIN, 2,
         "Data file d.npz is a FIFO (named pipe), not a regular file", _special("d.npz", "fifo")),
    Case("data-train-dev-zero", "d.npz links to /dev/zero (endless)", TRAIN, 2,
         "Data file d.npz is a character device", _special("d.npz", "device")),
    # ---- a user's model with bad data: `run` reads it before TensorFlow is imported
    Case("data-run-zero-width-features", "run --model with x_train of shape (40, 0)", RUN, 2,
         f"x_train has shape (40, 0), {NO_VALUES}",
         _model_and(_npz(x_train=np.zeros((40, 0)), x_test=np.zeros((8, 0))))),
    Case("data-run-labels-beyond-int32", "run --model with uint64 labels of 2^64-1", RUN, 2,
         "y_train must hold class indices 0, 1, 2, ... (one integer per sample, at most "
         "2147483647)", _model_and(_npz(y_train=np.full(40, 2**64 - 1, np.uint64),
                                        y_test=np.zeros(8, np.uint64)))),
    # ---- .keras files: refused before TensorFlow is imported
    Case("keras-check-missing", "check a .keras file that does not exist (imported TF for 16 s "
         "first)", ("check", "m.keras"), 2, "Model file m.keras does not exist"),
    Case("keras-check-dangling-link", "m.keras is a link to a file that is gone",
         ("check", "m.keras"), 2, "is a symbolic link to", _special("m.keras", "dangling")),
    Case("keras-check-folder", "m.keras is a folder", ("check", "m.keras"), 2,
         "Model file m.keras is a folder, not a regular file", _special("m.keras", "folder")),
    Case("keras-check-fifo", "m.keras is a FIFO (opening it would block for ever)",
         ("check", "m.keras"), 2, "Model file m.keras is a FIFO (named pipe), not a regular file",
         _special("m.keras", "fifo")),
    Case("keras-check-dev-zero", "m.keras links to /dev/zero", ("check", "m.keras"), 2,
         "Model file m.keras is a character device", _special("m.keras", "device")),
    Case("keras-check-text-file", "m.keras is a text file", ("check", "m.keras"), 2,
         "m.keras is not a .keras file (a .keras file is a zip archive; it starts with text",
         _write("m.keras", TEXT)),
    Case("keras-check-zip-slip", "m.keras holds a member named ../../evil.txt (zip slip: six "
         "UserWarnings)", ("check", "m.keras"), 2,
         "m.keras holds 1 member(s) whose names lead out of the folder it is extracted into "
         "('../../evil.txt')", _keras_zip("../../evil.txt")),
    Case("keras-check-absolute-member", "m.keras holds members named /tmp/evil.txt and "
         "..\\evil.txt", ("check", "m.keras"), 2, "holds 2 member(s) whose names lead out",
         _keras_zip("/tmp/evil.txt", "assets\\..\\..\\evil.txt")),
    Case("keras-check-no-config", "m.keras is a zip without config.json", ("check", "m.keras"),
         2, "m.keras is a zip archive but not a .keras model: it has no config.json",
         lambda folder: zipfile.ZipFile(folder.path / "m.keras", "w").close()),
    Case("keras-check-tflite-custom-objects", "check x.tflite --custom-objects missing.py "
         "(silently accepted)", ("check", "x.tflite", "--custom-objects", "missing.py"), 2,
         "--custom-objects applies only to .keras models", _write("x.tflite", b"")),
    Case("keras-check-tflite-unsafe", "check x.tflite --unsafe",
         ("check", "x.tflite", "--unsafe"), 2, "--unsafe applies only to .keras models",
         _write("x.tflite", b"")),
    Case("keras-check-custom-objects-missing", "check m.keras --custom-objects missing.py",
         ("check", "m.keras", "--custom-objects", "missing.py"), 2,
         "Custom objects file missing.py does not exist", _keras_zip()),
    Case("keras-check-custom-objects-fifo", "--custom-objects names a FIFO (importing it would "
         "block for ever)", ("check", "m.keras", "--custom-objects", "layers.py"), 2,
         "Custom objects file layers.py is a FIFO (named pipe)",
         _both(_keras_zip(), _special("layers.py", "fifo"))),
    Case("keras-run-zip-slip", "run --model with a zip-slip .keras", RUN, 2,
         "m.keras holds 1 member(s) whose names lead out",
         _both(_keras_zip("../../evil.txt"), _npz())),
]
