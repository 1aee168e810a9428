"""Run every entry of a bundle on one TFLite runtime and write results.json (docs/bundle.md).

    python -m device_tests.runner BUNDLE --out results.json [--runtime NAME|tflite_micro]
        [--kernels default|reference] [--target NAME] [--only ID ...] [--save-outputs]
        [--entry-timeout SECONDS] [--in-process] [--isolate-blas] [--latency-budget SECONDS]
        [--debug]

Exit codes: 0 every entry passed or is unsupported; 1 an entry failed or could not run (error);
2 bad input (unusable bundle, no runtime, unknown --only id, an --out that is a folder, an
outputs folder that is a symbolic link), one line on stderr, before any entry runs.
The entries run in a worker process (isolation.py): an interpreter that crashes (a signal) or
runs longer than --entry-timeout (default 600 s) makes that entry an error naming the signal or
the limit, and the run goes on with the others. --in-process runs them in this process instead
(no containment, no time limit: for debugging the runtime itself). --isolate-blas computes each
entry's error metrics (numpy.dot, numpy.linalg.norm: BLAS) in a short-lived fork, so the process
that creates the interpreters never runs BLAS (the qemu-aarch64 target asks for it, see
`blas_apart`). --latency-budget: the seconds of single-sample invokes that time each entry's
latency_ms (default 0.5; at least 3 invokes, at most 50).
In-process: `run_bundle(bundle_dir, ...)` returns the results document as a dict.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import pickle
import platform
import secrets
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError, dataset_inputs, load_bundle, one_line
from .interpreters import (
    KERNELS,
    LATENCY_BUDGET,
    KernelMissing,
    Runtime,
    RuntimeUnavailable,
    find_runtime,
)
from .isolation import (
    DEFAULT_ENTRY_TIMEOUT,
    check_timeout,
    describe_status,
    fork_flushed,
    run_isolated,
)
from .layers import layer_record
from .metrics import check_bounds, error_metrics, fail_reason, read_bounds, task_metrics
from .schema import (
    OUTPUTS,
    ResultStatus,
    base_record,
    count_statuses,
    not_run,
    results_document,
    target_folder,
)

INTEGER_MODES = ("int8", "int16x8")


class UsageError(Exception):
    """A request the runner cannot serve (unknown entry id, bad option), one line."""


class EntryError(Exception):
    """One entry cannot be run; the run goes on with the next."""


def default_target(kernels: str, runtime: str | None = None) -> str:
    if runtime == "tflite_micro":
        return "tflm"
    return "host-ref" if kernels == "reference" else "host"


def output_folder(outputs_dir: Path, target: str) -> Path:
    """`outputs_dir/outputs/<target>`, each folder made when missing; UsageError when one is a
    symbolic link or not a folder: a run folder that was received could otherwise lead the
    runner's writes out of itself."""
    folder = outputs_dir
    for name in (OUTPUTS, target_folder(target)):
        folder = folder / name
        try:
            os.mkdir(folder)
        except FileExistsError:  # already there (or a link, refused below)
            pass
        except OSError as exc:
            raise UsageError(f"cannot make the outputs folder {folder} "
                             f"({exc.strerror or one_line(exc)}); check its permissions") from None
        if folder.is_symlink() or not folder.is_dir():
            what = "a symbolic link" if folder.is_symlink() else "not a folder"
            raise UsageError(f"{folder} is {what}; the runner writes outputs only into real "
                             f"folders inside {outputs_dir}: remove it, it is made anew")
    return folder


def write_atomic(path: Path, write) -> None:
    """`write(stream)` into a new file beside `path`, then renamed to `path`: readers never see
    half a file, and a killed run leaves none under its name. The temporary file is created with
    O_CREAT|O_EXCL|O_NOFOLLOW, so it is never a file or a link that was already there; the
    rename replaces a link at `path` itself, never what it points to."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    handle = os.open(temp, flags, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _platform() -> dict:
    return {"machine": platform.machine(), "system": platform.system(),
            "python": platform.python_version(), "numpy": np.__version__}


def _reference_sha(entry: dict, model: dict, rel: str) -> object:
    """The reference's sha256: the entry's own, or the model's when it names the same file."""
    if entry.get("reference_sha256"):
        return entry["reference_sha256"]
    if rel == model.get("reference"):
        return model.get("reference_sha256")
    return None


def _samples(array: np.ndarray) -> int:
    return array.shape[0] if array.ndim else 0


def _load_inputs(bundle: Bundle, dataset: dict, where: str) -> list:
    """[(manifest item, array)] of the dataset's test inputs, in the model's input order,
    every file verified."""
    loaded = []
    for i, item in enumerate(dataset_inputs(dataset)):
        named = item["name"] is not None
        field = f"{where}.input_files[{i}]" if named else f"{where}.inputs"
        array = bundle.array(item["path"], item["sha256"], field)
        if named and array.dtype.name != item.get("dtype"):
            raise EntryError(f"{item['path']} holds {array.dtype.name} but {field}.dtype says "
                             f"{item.get('dtype')}; rebuild the bundle")
        loaded.append((item, array))
    first, n = loaded[0][0]["path"], _samples(loaded[0][1])
    for item, array in loaded[1:]:
        if _samples(array) != n:
            raise EntryError(f"{item['path']} holds {_samples(array)} samples but {first} holds "
                             f"{n}; every model input needs the same samples, rebuild the bundle")
    return loaded


def _load_data(bundle: Bundle, entry: dict) -> tuple:
    """(dataset dict, inputs, labels, reference), every file verified. `inputs`: one array, or
    {Keras input name: array} for a model with several inputs (the dataset's input_files);
    the runtime's LoadedModel matches them to the interpreter's inputs."""
    model = bundle.model(entry.get("model"))
    dataset_name = entry.get("dataset") or model.get("dataset")
    dataset = bundle.dataset(dataset_name)
    where = f"datasets.{dataset_name}"
    loaded = _load_inputs(bundle, dataset, where)
    labels = bundle.array(dataset.get("labels"), dataset.get("labels_sha256"), f"{where}.labels")
    rel = entry.get("reference") or model.get("reference")
    reference = bundle.array(rel, _reference_sha(entry, model, rel),
                             f"entry {entry['id']} reference")
    first, n = loaded[0][0]["path"], _samples(loaded[0][1])
    for name, array in (("labels", labels), ("reference", reference)):
        if array.ndim == 0 or array.shape[0] != n:
            raise EntryError(f"{name} hold {array.shape[0] if array.ndim else 0} samples but "
                             f"{first} holds {n}; expected one per input sample, "
                             f"rebuild the bundle")
    if dataset.get("samples") is not None and dataset["samples"] != n:
        raise EntryError(f"{first} holds {n} samples but datasets."
                         f"{dataset_name}.samples says {dataset['samples']}; rebuild the bundle")
    if loaded[0][0]["name"] is None:
        inputs = loaded[0][1]
    else:
        inputs = {item["name"]: array for item, array in loaded}
    return dataset, inputs, labels, reference


# A reference whose every output spreads over the samples by no more than this many steps of
# its dtype (at the output's magnitude) is constant: float noise, not the model's response.
CONSTANT_STEPS = 8


def constant_reference(reference: np.ndarray) -> str | None:
    """Why a comparison with this reference is empty, one line, or None: every output (column)
    is the same for every sample, to within CONSTANT_STEPS of its dtype's resolution (an
    untrained model: a softmax over equal logits gives 1/classes everywhere). One sample alone
    is not constant; per-sample equal outputs across classes are fine."""
    n = reference.shape[0] if reference.ndim else 0
    if n < 2 or reference.size == 0:
        return None
    flat = reference.reshape(n, -1)
    wide = flat.astype(np.float64)
    if not np.all(np.isfinite(wide)):
        return None
    spread = wide.max(axis=0) - wide.min(axis=0)
    if flat.dtype.kind == "f":
        steps = np.spacing(np.abs(flat).max(axis=0)).astype(np.float64)
    else:
        steps = np.zeros_like(spread)
    if np.any(spread > CONSTANT_STEPS * steps):
        return None
    values = wide[0] if not spread.any() else wide.mean(axis=0)
    if np.all(np.abs(values - values[0]) <= CONSTANT_STEPS * steps.max()):
        what = f"every output is {values[0]:.6g}"
    else:
        shown = ", ".join(f"{v:.6g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        what = f"the outputs are ({shown})"
    within = (f" to within {int(np.ceil((spread / np.where(steps > 0, steps, 1)).max()))} "
              f"{flat.dtype.name} steps" if spread.any() else "")
    return (f"the Keras reference is constant: nothing is compared ({what}{within} for all {n} "
            f"samples; is the model trained?)")


def integer_only_refusal(entry: dict, who: str) -> str | None:
    """Why `who`, which runs integer models integer-only (no float kernels beside the integer
    ones: TFLite Micro, Ethos-U), reports this entry unsupported: the float ops the audit found
    inside it (the manifest entry's `findings`), each named, with the rewrite when one is known.
    None when it has none."""
    findings = entry.get("findings") or []
    if not findings:
        return None
    ops = "; ".join(f"op {f['index']} {f['op']} computes in float "
                    f"({', '.join(f.get('types') or ())})" for f in findings)
    rewrites = list(dict.fromkeys(f["rewrite"] for f in findings if f.get("rewrite")))
    return (f"{who} runs integer-only {entry.get('mode')} models; {ops}"
            + "".join(f"; {r}" for r in rewrites))


def blas_apart(function, *args):
    """`function(*args)` computed in a short-lived fork of this process: its value is returned
    (its exception raised) here, and nothing it ran stays in this process.

    Why: on the emulated board (qemu-user 7.2, `-cpu max`), numpy's OpenBLAS picks its SVE
    kernels (armv8sve), and once a process has run them every TFLite interpreter it creates
    afterwards runs 5-15x slower (measured: a digits CNN's 359-sample invoke 0.8 s -> 12 s, a
    single-sample invoke 5 ms -> 80 ms; both kernels, default and reference). The runner's worker
    creates an interpreter per entry and computes error_metrics (numpy.dot, numpy.linalg.norm)
    after each, so every entry after the first paid it. OPENBLAS_CORETYPE=ARMV8 avoids it too
    but changes numpy.dot's summation, hence the cosine's last digits; a fork keeps the same
    kernels and the same figures. A fork costs ~12 ms under the emulator, ~3 ms natively."""
    read_fd, write_fd = os.pipe()
    pid = fork_flushed()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(read_fd)
            try:
                answer = pickle.dumps((True, function(*args)))
            except Exception as exc:  # raised in the parent, as if computed there
                try:
                    answer = pickle.dumps((False, exc))
                except Exception:  # an exception that does not pickle: its message
                    answer = pickle.dumps((False, EntryError(one_line(exc))))
            with os.fdopen(write_fd, "wb") as stream:
                stream.write(answer)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as stream:
            answer = stream.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if not answer:
        raise EntryError(f"the process computing {function.__name__} {describe_status(status)} "
                         f"before it answered")
    ok, value = pickle.loads(answer)  # our own child's bytes
    if not ok:
        raise value
    return value


def _run_entry(bundle: Bundle, entry: dict, runtime: Runtime, target: str,
               outputs_dir: Path | None, isolate_blas: bool = False,
               latency_budget: float = LATENCY_BUDGET) -> dict:
    record = not_run(entry, target)  # entry["status"]: load_bundle checked every field
    if record is not None:
        return record
    record = base_record(entry, target)
    refusal = integer_only_refusal(entry, target) if runtime.integer_only else None
    if refusal:
        record["status"], record["reason"] = ResultStatus.UNSUPPORTED, refusal
        return record
    bounds = read_bounds(entry.get("tolerance"))
    dataset, inputs, labels, reference = _load_data(bundle, entry)
    mode = entry.get("mode")
    files = [item["path"] for item in dataset_inputs(dataset)]
    arrays = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
    for i, array in enumerate(arrays):  # integer inputs (token ids) are always finite
        if mode in INTEGER_MODES and not np.all(np.isfinite(array)):
            bad = np.argwhere(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1))
            raise EntryError(f"inputs {files[i]} hold NaN or Inf (first at sample "
                             f"{int(bad[0][0])}) and mode {mode} quantizes its input: NaN has no "
                             f"integer value; run this entry on finite inputs")
    data = bundle.read(entry.get("tflite"), entry.get("sha256"), f"entry {entry['id']} tflite")
    if entry.get("bytes") is not None and entry["bytes"] != len(data):
        raise EntryError(f"{entry.get('tflite')} has {len(data)} bytes but the manifest says "
                         f"{entry['bytes']}; rebuild the bundle")
    model = runtime.load(data)
    outputs, record["invoke"] = model.run(inputs)  # NaN into a quantized input: ModelError
    if outputs.shape != reference.shape:
        if outputs.size == reference.size and outputs.shape[0] == reference.shape[0]:
            outputs = outputs.reshape(reference.shape)
        else:
            raise EntryError(f"the model's outputs have shape {outputs.shape} but the reference "
                             f"{entry.get('reference')} has {reference.shape}")
    step = model.output_step
    if step is None and mode in INTEGER_MODES:
        step = (entry.get("tolerance") or {}).get("output_step")
    if isolate_blas:
        metrics = blas_apart(error_metrics, outputs, reference, step)
    else:
        metrics = error_metrics(outputs, reference, step)
    metrics["task"] = task_metrics(dataset.get("task"), labels, reference, outputs,
                                   dataset.get("y_std"))
    metrics["latency_ms"] = model.latency_ms(inputs, latency_budget)
    record["invoke_seconds"] = round(model.invoke_seconds, 6)
    metrics.update(model.facts)
    packed = None
    if hasattr(runtime, "compressed"):  # TFLite Micro: the flash after its compression tool
        metrics["compressed"], packed = runtime.compressed(data, inputs, outputs)
    record["metrics"] = metrics
    record["checks"] = check_bounds(bounds, metrics)
    failed = fail_reason(record["checks"])
    record["status"] = ResultStatus.FAIL if failed else ResultStatus.PASS
    record["reason"] = failed
    constant = constant_reference(reference)
    if constant:  # max|Δ| 0 against a dead reference proves nothing: never a pass
        record["status"], record["reason"] = ResultStatus.ERROR, constant
    block = bundle.model(entry.get("model")).get("layers")
    if entry.get("layers") and block:  # diagnostic: never changes the status
        record["layers"] = layer_record(bundle, entry, block, inputs, runtime, data)
    if outputs_dir is not None:
        folder = output_folder(outputs_dir, target)
        write_atomic(folder / f"{entry['id']}.npy",
                     lambda stream: np.save(stream, outputs.astype(np.float32)))
        record["outputs"] = f"{OUTPUTS}/{folder.name}/{entry['id']}.npy"
        if packed is not None:  # the file to flash
            write_atomic(folder / f"{entry['id']}.lut.tflite", lambda stream: stream.write(packed))
            metrics["compressed"]["file"] = f"{OUTPUTS}/{folder.name}/{entry['id']}.lut.tflite"
    return record


def _checked_only(bundle: Bundle, only) -> list:
    if not only:
        return list(bundle.entries)
    known = bundle.entry_ids
    for wanted in only:
        if wanted not in known:
            near = difflib.get_close_matches(wanted, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(known)}"
            raise UsageError(f"--only {wanted!r} is not an entry id of this bundle{hint}")
    return [entry for entry in bundle.entries if entry["id"] in set(only)]


def _run_one(bundle: Bundle, entry: dict, runtime: Runtime, target: str,
             outputs_dir: Path | None, debug: bool, isolate_blas: bool = False,
             latency_budget: float = LATENCY_BUDGET) -> dict:
    """One entry's record; a problem with the entry never raises (its status is an error)."""
    started = time.perf_counter()
    try:
        record = _run_entry(bundle, entry, runtime, target, outputs_dir, isolate_blas,
                            latency_budget)
    except KernelMissing as exc:
        record = base_record(entry, target)
        record["status"], record["reason"] = ResultStatus.UNSUPPORTED, one_line(exc)
        fixed = f"{entry['id']}.batch1"  # made where the dynamic batch added what is missing
        if fixed in bundle.entry_ids:
            record["reason"] += f"; the batch-1 export {fixed} is made for this target"
    except Exception as exc:  # one entry's failure must not stop the run
        if debug:
            traceback.print_exc()
        record = base_record(entry, target)
        record["reason"] = one_line(exc)
    record["seconds"] = round(time.perf_counter() - started, 4)
    return record


def run_bundle(bundle_dir, runtime: str | None = None, kernels: str = "default",
               target: str | None = None, only=None, outputs_dir=None,
               debug: bool = False, entry_timeout: float | None = None,
               isolate: bool = True, isolate_blas: bool = False,
               latency_budget: float = LATENCY_BUDGET) -> dict:
    """Run every (or every `only`) entry of the bundle; returns the results document.

    `target` defaults to "host" for default kernels and "host-ref" for reference kernels.
    `outputs_dir`: when set, each variant's dequantized outputs are saved as
    `outputs_dir/outputs/<target>/<id>.npy` and the record's "outputs" holds that relative path
    (`outputs` and `<target>` must be real folders, not links: UsageError before any entry runs).
    `isolate` (default): the entries run in a worker process (isolation.py), so that an
    interpreter that crashes, or runs longer than `entry_timeout` seconds (default 600), makes
    that entry an error naming the signal or the limit; `isolate=False` runs them in this
    process (no containment; `entry_timeout` is then refused).
    `isolate_blas`: each entry's error metrics are computed in a short-lived fork (`blas_apart`:
    the emulated board's numpy BLAS slows every interpreter created after it); same figures.
    `latency_budget`: seconds of single-sample invokes that time each entry's latency_ms (an
    emulator, whose latency says little of a board's, spends less).
    Raises BundleError (unusable bundle), RuntimeUnavailable, UsageError; a problem with one
    entry never raises: that entry gets status "error" and the run goes on (`debug` prints its
    traceback to stderr).
    """
    started = time.perf_counter()
    if kernels not in KERNELS:
        raise UsageError(f"Expected kernels 'default' or 'reference'. Received: {kernels!r}")
    if not isolate and entry_timeout is not None:
        raise UsageError("an entry time limit needs the entries run in a worker process "
                         "(isolate=True; not --in-process): one running here cannot be stopped")
    try:
        limit = check_timeout(DEFAULT_ENTRY_TIMEOUT if entry_timeout is None else entry_timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not (isinstance(latency_budget, (int, float)) and 0 < latency_budget < math.inf):
        raise UsageError(f"Expected a latency budget in seconds > 0. Received: "
                         f"{latency_budget!r}")
    bundle = load_bundle(bundle_dir)
    entries = _checked_only(bundle, only)
    chosen = find_runtime(runtime, kernels)
    target = target or default_target(kernels, chosen.name)
    out_dir = Path(outputs_dir) if outputs_dir is not None else None
    if out_dir is not None:  # refused now, not after every entry ran
        out_dir.mkdir(parents=True, exist_ok=True)
        output_folder(out_dir, target)

    def run_one(i: int) -> dict:
        return _run_one(bundle, entries[i], chosen, target, out_dir, debug, isolate_blas,
                        latency_budget)

    def failed(i: int, reason: str, seconds: float) -> dict:
        record = base_record(entries[i], target)
        record["reason"], record["seconds"] = reason, round(seconds, 4)
        return record

    if isolate:
        results = run_isolated(len(entries), run_one, failed, limit, fault_dumps=debug)
    else:
        results = [run_one(i) for i in range(len(entries))]
    return results_document(target, bundle.manifest_sha256, results, runtime=chosen.describe(),
                            platform=_platform(), seconds=time.perf_counter() - started)


def _json_safe(value):
    """NaN and infinities as null: results.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_json_atomic(document: dict, path) -> None:
    """`document` as strict JSON, written by `write_atomic`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_safe(document), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def exit_code(document: dict) -> int:
    bad = [r for r in document["results"] if not ResultStatus(r["status"]).ok]
    return 1 if bad else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device_tests.runner",
        description="Run a bundle's TFLite variants and compare them with the Keras reference.")
    parser.add_argument("bundle", help="the bundle folder (holds manifest.json)")
    parser.add_argument("--out", required=True, help="where to write results.json")
    parser.add_argument("--runtime", default=None,
                        help="ai_edge_litert | tflite_runtime | tensorflow (default: the first "
                             "installed, in that order), or tflite_micro (TFLite Micro)")
    parser.add_argument("--kernels", default="default", choices=KERNELS,
                        help="default (XNNPACK where the runtime applies it) or reference "
                             "(BUILTIN_REF)")
    parser.add_argument("--target", default=None,
                        help="name recorded in the results (default: host, or host-ref with "
                             "--kernels reference)")
    parser.add_argument("--only", nargs="+", metavar="ID", default=None,
                        help="run only these entry ids")
    parser.add_argument("--save-outputs", action="store_true",
                        help="save each variant's dequantized outputs as "
                             "outputs/<target>/<id>.npy beside results.json")
    parser.add_argument("--entry-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"time limit for each entry (default {DEFAULT_ENTRY_TIMEOUT:g}): "
                             f"past it the entry is an error and the run goes on")
    parser.add_argument("--in-process", action="store_true",
                        help="run the entries in this process, not in a worker: an interpreter "
                             "crash then ends the run (for debugging the runtime)")
    parser.add_argument("--isolate-blas", action="store_true",
                        help="compute each entry's error metrics in a short-lived fork, so that "
                             "this process never runs numpy's BLAS (on the emulated board it "
                             "slows every interpreter created after it); same figures")
    parser.add_argument("--latency-budget", type=float, default=LATENCY_BUDGET,
                        metavar="SECONDS",
                        help=f"seconds of single-sample invokes that time each entry's "
                             f"latency_ms (default {LATENCY_BUDGET:g}; at least 3, at most 50)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _summary_line(document: dict) -> str:
    counts = count_statuses(document["results"])
    runtime = document["runtime"]
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return (f"{document['target']} ({runtime['name']} {runtime['version']}, {runtime['kernels']} "
            f"kernels): {parts}")


def _exit_on_sigterm(number, frame):
    """SIGTERM (a time limit, the ssh target's clean-up) ends the run through `finally`, so
    the worker is killed too."""
    raise SystemExit(128 + number)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        return _main(args)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be written before any entry runs."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the path of the results file to write, "
                         f"e.g. --out {out / 'results.json'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: its folder cannot be made "
                         f"({exc.strerror or one_line(exc)}); choose another --out") from None


def _main(args) -> int:
    out = Path(args.out)
    try:
        _check_out(out)
        document = run_bundle(args.bundle, runtime=args.runtime, kernels=args.kernels,
                              target=args.target, only=args.only,
                              outputs_dir=out.parent if args.save_outputs else None,
                              debug=args.debug, entry_timeout=args.entry_timeout,
                              isolate=not args.in_process, isolate_blas=args.isolate_blas,
                              latency_budget=args.latency_budget)
        try:
            write_json_atomic(document, out)
        except OSError as exc:
            raise UsageError(f"cannot write --out {out} ({exc.strerror or one_line(exc)}); "
                             f"choose another --out") from None
    except (BundleError, RuntimeUnavailable, UsageError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {one_line(exc, limit=1000)}", file=sys.stderr)
        return 2
    for record in document["results"]:
        if not ResultStatus(record["status"]).ok or args.debug:
            print(f"{record['id']}: {record['status']} {record['reason']}".rstrip(),
                  file=sys.stderr)
    print(_summary_line(document), file=sys.stderr)
    return exit_code(document)


if __name__ == "__main__":
    sys.exit(main())
