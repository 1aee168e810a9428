"""Find a TFLite interpreter, wrap it, and run a whole set of inputs through one model.

Discovery order: `ai_edge_litert` -> `tflite_runtime` -> `tensorflow.lite` (TensorFlow is imported
only when the other two are missing, or when it is named). `tflite_micro` (TFLite Micro, see
tflm.py) is used only when named. Kernels: `default` is the runtime's
own resolver, which applies the XNNPACK delegate where the runtime ships it; `reference` is
`OpResolverType.BUILTIN_REF`, TFLite's reference kernels and no delegate.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
import time
import warnings

import numpy as np

from .isolation import stderr_captured

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
KERNELS = ("default", "reference")
PIP_HINT = "pip install ai-edge-litert, or pip install tflite-runtime 'numpy<2' (Python <= 3.11)"
# `python -m device_tests.runner --runtime ...` also accepts the pip names.
TFLM = "tflite_micro"
ALIASES = {"ai-edge-litert": "ai_edge_litert", "litert": "ai_edge_litert",
           "tflite-runtime": "tflite_runtime", "tf": "tensorflow", "tensorflow.lite": "tensorflow",
           "tflm": TFLM, "tflite-micro": TFLM}
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)' version '(\d+)'")
_CUSTOM_OP = re.compile(r"Encountered unresolved custom op: ([A-Za-z0-9_.\-]+)")
# A kernel that exists but not for this tensor type, e.g. ai-edge-litert 1.2.0 on an int16x8 GELU:
# "Only float32, int8 and uint8 supported currently, got INT16.Node number 1 (GELU) failed to
# invoke."
_NODE_FAILED = re.compile(r"Node number \d+ \(([A-Z0-9_]+)\) failed to (invoke|prepare)")
_TYPE_UNSUPPORTED = re.compile(r"[^.]*\bsupported\b[^.]*", re.IGNORECASE)
# Seconds of single-sample invokes that LoadedModel.latency_ms may spend on one model.
LATENCY_BUDGET = 0.5


class RuntimeUnavailable(Exception):
    """No usable TFLite interpreter, or the one named is not installed."""


class ModelError(Exception):
    """The model and the data do not fit together (shape, dtype, quantization), one line."""


class KernelMissing(ModelError):
    """The runtime has no kernel for an op the model uses: the target cannot run it."""


class PreserveUnavailable(Exception):
    """The runtime cannot keep intermediate tensors after invoke (no per-layer error here)."""


class Preserving:
    """A model loaded so that every tensor keeps its value after invoke (device_tests/layers.py):
    `model` (LoadedModel), `read(index)` (a tensor of subgraph 0 by index), `names` ({index:
    name}, or None where the runtime gives no names), `kernels` (what computed them)."""

    def __init__(self, model, read, names, kernels: str):
        self.model, self.read, self.names, self.kernels = model, read, names, kernels


def _module_version(module, dist_names) -> str:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return "unknown"
    for dist in dist_names:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _import_runtime(name: str):
    """(Interpreter class, OpResolverType, version) for one runtime; ImportError when absent."""
    if name == "ai_edge_litert":
        module = importlib.import_module("ai_edge_litert.interpreter")
        package = importlib.import_module("ai_edge_litert")
        version = _module_version(package, ("ai-edge-litert", "ai-edge-litert-nightly"))
        return module.Interpreter, module.OpResolverType, version
    if name == "tflite_runtime":
        module = importlib.import_module("tflite_runtime.interpreter")
        package = importlib.import_module("tflite_runtime")
        return module.Interpreter, module.OpResolverType, _module_version(
            package, ("tflite-runtime", "tflite-runtime-nightly"))
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, str(tf.__version__)
    raise ValueError(name)


def _import_failure(name: str, exc: Exception) -> str:
    top = name.split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == top:
        return f"{name} is not installed"
    return f"{name} is installed but does not import ({type(exc).__name__}: {exc})"


def _numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def _version_tuple(version: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _unusable(name: str, version: str) -> str | None:
    """Why an importable runtime cannot work here, or None."""
    # Every tflite-runtime wheel published (up to 2.14.0, 2023) was built against numpy 1: with
    # numpy 2 the interpreter's creation fails with "SystemError ... returned a result with an
    # exception set".
    if name == "tflite_runtime" and _numpy_major() >= 2 and _version_tuple(version) <= (2, 14):
        return (f"tflite_runtime {version} was built for numpy 1 and fails when the interpreter is "
                f"created with numpy {np.__version__}")
    return None


class Runtime:
    """One TFLite Python runtime with one choice of kernels."""

    # Whether it runs integer models integer-only: a float op left inside an int8 model is then
    # unsupported (runner.integer_only_refusal). LiteRT has float kernels beside the integer
    # ones and runs it; TFLite Micro (tflm.py) says True.
    integer_only = False

    def __init__(self, name: str, version: str, kernels: str, interpreter_class, resolver_type):
        self.name = name
        self.version = version
        self.kernels = kernels
        self._interpreter_class = interpreter_class
        self._resolver_type = resolver_type

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "kernels": self.kernels}

    def load(self, model_content: bytes) -> LoadedModel:
        """An interpreter for these `.tflite` bytes; KernelMissing when an op has no kernel."""
        kwargs = {"model_content": model_content}
        if self.kernels == "reference":
            kwargs["experimental_op_resolver_type"] = self._resolver_type.BUILTIN_REF
        try:
            with without_native_info():
                interpreter = self._interpreter_class(**kwargs)
                interpreter.allocate_tensors()
        except Exception as exc:
            raise explain_error(exc, self.label, "create the interpreter") from None
        return LoadedModel(interpreter, self.label)

    def load_preserving(self, model_content: bytes) -> Preserving:
        """These bytes in an interpreter that keeps every intermediate tensor, on this runtime's
        kernels. With the default resolver XNNPACK still applies; measured (ai-edge-litert 2.3.0,
        zoo int8/float16/dynamic variants): the tensors its nodes output hold the values it
        computed (they differ from BUILTIN kernels by XNNPACK's rounding, and the graph output
        equals the run without preservation), so the per-layer figures are this target's."""
        kwargs = {"model_content": model_content, "experimental_preserve_all_tensors": True}
        if self.kernels == "reference":
            kwargs["experimental_op_resolver_type"] = self._resolver_type.BUILTIN_REF
        try:
            with without_native_info(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "intended for debugging purposes"
                interpreter = self._interpreter_class(**kwargs)
                interpreter.allocate_tensors()
        except TypeError as exc:
            if "experimental_preserve_all_tensors" in str(exc):
                raise PreserveUnavailable(
                    f"{self.label} cannot preserve intermediate tensors (its Interpreter takes "
                    f"no experimental_preserve_all_tensors; a newer tflite-runtime or "
                    f"ai-edge-litert has it)") from None
            raise explain_error(exc, self.label, "create the interpreter") from None
        except Exception as exc:
            raise explain_error(exc, self.label, "create the interpreter") from None
        names = {int(d["index"]): str(d.get("name") or "")
                 for d in interpreter.get_tensor_details()}
        kernels = ("reference (BUILTIN_REF)" if self.kernels == "reference" else
                   "default (XNNPACK where it applies; its nodes' output tensors hold the "
                   "values it computed)")
        return Preserving(LoadedModel(interpreter, self.label),
                          lambda index: np.array(interpreter.get_tensor(index)), names, kernels)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.kernels} kernels)"


@contextlib.contextmanager
def without_native_info():
    """Native writes to fd 2 go to a temporary file for the moment; then every line of it but
    the runtime's INFO notices is passed on to stderr: warnings and errors stay. TFLite's C++
    prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` when the interpreter first
    allocates its tensors, where no Python or TF_CPP_MIN_LOG_LEVEL setting reaches it.
    In the runner's worker, fd 2 is left as it is: the parent drops those notices, and what a
    runtime prints before it aborts must reach the parent, not a file that dies with it."""
    if stderr_captured():
        yield
        return
    try:
        capture = tempfile.TemporaryFile()
    except OSError:  # no writable temporary folder: leave stderr as it is
        yield
        return
    with capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not line.startswith("INFO: ")]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def explain_error(exc: Exception, runtime: str, doing: str) -> Exception:
    """A runtime's exception as one line; KernelMissing when it says a kernel is missing."""
    text = " ".join(str(exc).split())
    found = _MISSING_OP.search(text)
    if found:
        return KernelMissing(f"{runtime} has no kernel for {found.group(1)} version "
                             f"{found.group(2)}")
    found = _CUSTOM_OP.search(text)
    if found:
        return KernelMissing(f"{runtime} has no kernel for custom op {found.group(1)}")
    found, why = _NODE_FAILED.search(text), _TYPE_UNSUPPORTED.search(text)
    if found and why:
        return KernelMissing(f"{runtime} has no {found.group(1)} kernel for these tensor types "
                             f"({why.group(0).strip()})")
    return ModelError(f"{runtime} failed to {doing}: {text or type(exc).__name__}")


def find_runtime(name: str | None = None, kernels: str = "default") -> Runtime:
    """The named runtime, or the first one installed in discovery order."""
    if kernels not in KERNELS:
        raise RuntimeUnavailable(f"Expected kernels 'default' or 'reference'. Received: "
                                 f"kernels={kernels!r}")
    if name is not None:
        name = ALIASES.get(name, name)
        if name == TFLM:
            return _tflm_runtime()
        if name not in RUNTIMES:
            raise RuntimeUnavailable(f"Expected a runtime among {', '.join(RUNTIMES)}. "
                                     f"Received: runtime={name!r}")
        try:
            interpreter_class, resolver, version = _import_runtime(name)
        except Exception as exc:  # a broken install raises more than ImportError
            raise RuntimeUnavailable(f"{_import_failure(name, exc)}; install it, or leave "
                                     f"--runtime out to use another one. {PIP_HINT}") from None
        why = _unusable(name, version)
        if why:
            raise RuntimeUnavailable(f"{why}; pip install 'numpy<2', or use ai-edge-litert")
        return Runtime(name, version, kernels, interpreter_class, resolver)
    why_not = []
    for candidate in RUNTIMES:
        try:
            interpreter_class, resolver, version = _import_runtime(candidate)
        except Exception as exc:  # a broken install raises more than ImportError
            why_not.append(_import_failure(candidate, exc))
            continue
        why = _unusable(candidate, version)
        if why:
            why_not.append(why)
            continue
        return Runtime(candidate, version, kernels, interpreter_class, resolver)
    raise RuntimeUnavailable(f"no usable TFLite interpreter in this Python ({'; '.join(why_not)})."
                             f" To run bundles: {PIP_HINT}")


def _tflm_runtime():
    from .tflm import TflmRuntime, import_tflm

    try:
        module, version = import_tflm()
    except Exception as exc:  # a broken install raises more than ImportError
        raise RuntimeUnavailable(f"{_import_failure('tflite_micro', exc)}; pip install "
                                 f"tflite-micro (x86-64 Linux, Python 3.10-3.13)") from None
    return TflmRuntime(module, version)


def _quant(details: dict) -> tuple:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """float -> integer as TFLite's QUANTIZE does: round half away from zero, then clip."""
    scaled = np.asarray(x, dtype=np.float64) / scale
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + zero_point
    info = np.iinfo(dtype)
    return np.clip(rounded, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((np.asarray(q, dtype=np.float64) - zero_point) * scale).astype(np.float32)


_TENSOR_INDEX = re.compile(r":\d+$")


def input_for(tensor_name: str, names) -> str | None:
    """The bundle input (a Keras input name among `names`) that the interpreter's input tensor
    `tensor_name` takes: a .tflite converted from a SavedModel names a signature's input
    `<signature>_<name>:0` (`serving_default_image:0`), and lists its inputs in an order of its
    own, not the model's. The longest name that matches wins (`big_image` over `image`)."""
    base = _TENSOR_INDEX.sub("", tensor_name or "")
    found = [n for n in names if base == n or base.endswith("_" + n)]
    return max(found, key=len) if found else None


class ModelInput:
    """One input tensor of an interpreter, and how a bundle array is fed to it: float32
    samples to a float input, quantized to a quantized integer input; integers (token ids,
    indices: an integer input without quantization, which the converter leaves as it is in
    every mode) fed as given."""

    def __init__(self, details: dict, position: int):
        self.index = details["index"]
        self.name = str(details.get("name") or "")
        self.position = position
        self.dtype = np.dtype(details["dtype"])
        signature = details.get("shape_signature")
        if signature is None or len(signature) == 0:
            signature = details["shape"]
        self.signature = [int(d) for d in signature]
        self.shape = [int(d) for d in details["shape"]]  # its current shape
        self.quant = _quant(details)

    @property
    def label(self) -> str:
        return self.name or f"#{self.position}"

    @property
    def quantized(self) -> bool:
        return self.dtype.kind in "iu" and self.quant[0] != 0.0

    @property
    def raw_integer(self) -> bool:
        return self.dtype.kind in "iu" and self.quant[0] == 0.0

    def fits(self, x: np.ndarray) -> bool:
        return x.ndim == len(self.signature) and all(
            self.signature[i] in (-1, x.shape[i]) for i in range(1, x.ndim))

    def check(self, x: np.ndarray, what: str) -> None:
        """Raise ModelError (expected vs got) when `x` cannot feed this input; `what` names
        the bundle's array ("inputs", or "input 'image'")."""
        expected = "(" + ", ".join("N" if i == 0 else ("any" if d == -1 else str(d))
                                   for i, d in enumerate(self.signature)) + ")"
        if self.raw_integer:
            if x.dtype.kind not in "iu":
                raise ModelError(f"{what} must be integers (the model's input {self.label} is "
                                 f"{self.dtype.name}, token ids or indices fed as given). "
                                 f"Received: {x.dtype.name}")
        elif x.dtype != np.float32:
            raise ModelError(f"{what} must be float32 (the model takes {self.dtype.name}, "
                             f"fed from float32). Received: {x.dtype.name}")
        if not self.fits(x):
            verb = "have" if what == "inputs" else "has"
            raise ModelError(f"{what} {verb} shape {tuple(x.shape)} but the model's input "
                             f"{'' if what == 'inputs' else self.label + ' '}expects {expected}")
        if x.shape[0] == 0:
            raise ModelError(f"{what} hold 0 samples; expected at least one")
        if self.raw_integer and x.size:
            info = np.iinfo(self.dtype)
            if x.min() < info.min or x.max() > info.max:
                raise ModelError(f"{what} hold values from {x.min()} to {x.max()}, beyond the "
                                 f"model's {self.dtype.name} input {self.label}")
        if self.quantized and not np.all(np.isfinite(x)):
            bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
            raise ModelError(f"{what} hold NaN or Inf (first at sample {int(np.argmax(bad))}) "
                             f"and the model's input is {self.dtype.name}: NaN has no integer "
                             f"value")

    def feed(self, x: np.ndarray) -> np.ndarray:
        if self.quantized:
            scale, zero_point = self.quant
            return quantize(x, scale, zero_point, self.dtype)
        return x.astype(self.dtype, copy=False)


def arrange_inputs(inputs: list, x, label: str = "the interpreter") -> list:
    """The arrays for the interpreter's inputs (`inputs`: ModelInput, in its order) from `x`:
    one array (a model with one input) or {Keras input name: array}. Matched by the tensors'
    names; where the runtime names none (TFLite Micro), by each sample's shape when that tells
    the inputs apart."""
    if not isinstance(x, dict):
        if len(inputs) != 1:
            raise ModelError(f"the model takes {len(inputs)} inputs "
                             f"({', '.join(i.label for i in inputs)}) but the bundle gives one "
                             f"array; expected one per input (the dataset's input_files)")
        return [x]
    if len(x) != len(inputs):
        raise ModelError(f"the model takes {len(inputs)} input(s) "
                         f"({', '.join(i.label for i in inputs)}) but the bundle gives {len(x)} "
                         f"({', '.join(map(repr, x))})")
    if len(x) == 1:
        return list(x.values())
    chosen = [input_for(i.name, x) for i in inputs]
    if None in chosen or len(set(chosen)) != len(chosen):
        chosen = []
        for i in inputs:
            fits = [name for name, a in x.items() if i.fits(a)
                    and (a.dtype.kind in "iu") == i.raw_integer]
            if len(fits) != 1:
                raise ModelError(
                    f"{label} does not name the model's input {i.label} after a bundle input, "
                    f"and {len(fits)} of the bundle's inputs ({', '.join(map(repr, x))}) fit "
                    f"its shape {i.signature}: cannot tell which feeds it")
            chosen.append(fits[0])
        if len(set(chosen)) != len(chosen):
            raise ModelError(f"{label} does not name its inputs and several of them take the "
                             f"same bundle input ({', '.join(map(repr, chosen))}): cannot tell "
                             f"which feeds which")
    return [x[name] for name in chosen]


class LoadedModel:
    """One interpreter with one output and any number of inputs, fed from the bundle's arrays
    (float32 samples, or integers for integer inputs) and read back as float32."""

    def __init__(self, interpreter, label: str = "the interpreter"):
        self.interpreter = interpreter
        self.label = label
        details = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if not details or len(outputs) != 1:
            raise ModelError(f"expected a model with inputs and one output. Received: "
                             f"{len(details)} inputs, {len(outputs)} outputs")
        self.inputs = [ModelInput(d, i) for i, d in enumerate(details)]
        self.output = outputs[0]
        self.output_dtype = np.dtype(self.output["dtype"])
        self.facts: dict = {}  # what the runtime measured on loading (TFLM: the arena)
        self.invoke_seconds = 0.0  # spent inside invoke(): the kernels' time, parity's floor
        self.output_quant = _quant(self.output)
        for i in self.inputs:
            if i.dtype.kind not in "iuf":
                raise ModelError(f"the model's input {i.label} is {i.dtype.name}; expected "
                                 f"float32, float16, a quantized integer type or integers "
                                 f"(token ids)")
        scale = self.output_quant[0]
        if self.output_dtype.kind in "iu" and scale == 0.0:
            raise ModelError(f"the model's output is {self.output_dtype.name} without "
                             f"quantization parameters (scale 0); expected a quantized or float "
                             f"output")
        if self.output_dtype.kind not in "iuf":
            raise ModelError(f"the model's output is {self.output_dtype.name}; expected float32, "
                             f"float16 or a quantized integer type")

    @property
    def signature(self) -> list:
        """The first input's shape signature (its batch size is every input's)."""
        return self.inputs[0].signature

    @property
    def output_step(self) -> float | None:
        """The output tensor's quantization scale when the output is an integer tensor."""
        return self.output_quant[0] if self.output_dtype.kind in "iu" else None

    @property
    def batched(self) -> bool:
        return all(len(i.signature) > 0 and i.signature[0] == -1 for i in self.inputs)

    def feeds(self, x) -> list:
        """`x` (one array, or {Keras input name: array}) as one checked array per interpreter
        input, in its order; ModelError (expected vs got, naming the input) when one does not
        fit."""
        arrays = arrange_inputs(self.inputs, x, self.label)
        several = len(arrays) > 1
        names = {id(a): n for n, a in x.items()} if isinstance(x, dict) else {}
        for i, a in enumerate(arrays):  # no zip(strict=): Python 3.9
            what = f"input {names.get(id(a), self.inputs[i].label)!r}" if several else "inputs"
            self.inputs[i].check(a, what)
        if len({a.shape[0] for a in arrays}) > 1:
            raise ModelError(f"the inputs hold different numbers of samples "
                             f"({', '.join(str(a.shape[0]) for a in arrays)}); expected the "
                             f"same samples of every input")
        return arrays

    def check_inputs(self, x) -> None:
        """Raise ModelError (expected vs got) when `x` does not fit the model's inputs."""
        self.feeds(x)

    def _read(self) -> np.ndarray:
        raw = self.interpreter.get_tensor(self.output["index"])
        if self.output_dtype.kind in "iu":
            scale, zero_point = self.output_quant
            return dequantize(raw, scale, zero_point)
        return np.array(raw, dtype=np.float32)

    def _invoke(self, batches: list) -> np.ndarray:
        resized = False
        pairs = [(self.inputs[n], batch) for n, batch in enumerate(batches)]
        for i, batch in pairs:
            if i.shape != list(batch.shape):
                try:
                    self.interpreter.resize_tensor_input(i.index, list(batch.shape), strict=True)
                except Exception as exc:
                    raise explain_error(exc, self.label,
                                        f"resize the input to {list(batch.shape)}") from None
                i.shape, resized = list(batch.shape), True
        if resized:
            try:
                self.interpreter.allocate_tensors()
            except Exception as exc:
                shapes = ", ".join(str(list(b.shape)) for b in batches)
                raise explain_error(exc, self.label, f"resize the input to {shapes}") from None
        for i, batch in pairs:
            self.interpreter.set_tensor(i.index, i.feed(batch))
        started = time.perf_counter()
        try:
            self.interpreter.invoke()
        except Exception as exc:
            raise explain_error(exc, self.label, "invoke") from None
        finally:
            self.invoke_seconds += time.perf_counter() - started
        return self._read()

    def latency_ms(self, x, budget_s: float = LATENCY_BUDGET, most: int = 50) -> float:
        """Median wall time of one single-sample invoke, after one warm-up invoke; as many
        invokes as fit in `budget_s` (at least 3, at most `most`). Only invoke() is timed,
        the input being set once before: the kernels' time, not the Python that quantizes the
        input and reads the output (which would make every integer model look slower).
        `x`: as `run` takes it."""
        self._invoke([a[:1] for a in arrange_inputs(self.inputs, x, self.label)])
        invoke = self.interpreter.invoke
        times: list = []
        spent = 0.0
        while len(times) < 3 or (len(times) < most and spent < budget_s):
            start = time.perf_counter()
            invoke()
            times.append(time.perf_counter() - start)
            spent += times[-1]
        self.invoke_seconds += spent
        return float(np.median(times) * 1000.0)

    def run(self, x, tap=None) -> tuple:
        """(float32 outputs for every sample, "batch" | "per-sample"). `x`: one array (a model
        with one input) or {Keras input name: array} (the bundle's input_files).

        One invoke for the whole set when every input's batch dimension is dynamic (-1 in its
        shape_signature); otherwise one invoke per fixed-size batch (per sample when it is 1; a
        last partial batch is padded with zeros and the padding dropped).
        `tap(real)`, when given, is called after every invoke with the number of real samples
        in that batch (device_tests/layers.py reads the intermediate tensors there).
        """
        arrays = self.feeds(x)
        if self.batched:
            outputs = self._invoke(arrays)
            if tap is not None:
                tap(arrays[0].shape[0])
            return outputs, "batch"
        size = max(1, self.signature[0])
        pieces = []
        for start in range(0, arrays[0].shape[0], size):
            chunk = [a[start:start + size] for a in arrays]
            real = chunk[0].shape[0]
            if real < size:
                chunk = [np.concatenate([c, np.zeros((size - real,) + c.shape[1:], c.dtype)])
                         for c in chunk]
            pieces.append(self._invoke(chunk)[:real])
            if tap is not None:
                tap(real)
        return np.concatenate(pieces), "per-sample"
