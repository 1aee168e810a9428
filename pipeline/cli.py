"""The `edgepipe` command line.

Importing this module must not import TensorFlow (so `edgepipe --help` answers at once): every
import of a TF-using module happens inside the command that needs it.
"""

import errno
import functools
import inspect
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..core.errors import EdgepipeError
from ..core.files import writable_folder
from ..device_tests.schema import ConversionStatus, RunFolder
from ..models.zoo import ZOO, check_input_shape, get_model_spec
from .quiet import import_tensorflow, quiet_tensorflow
from .report.console import deployable_table, ops_table, parity_table, trained_table, variants_table
from .values import COUNT, SECONDS, SEED, Rule, number

app = typer.Typer(
    help="Train Keras models with custom activations, convert them to TFLite and prove that "
         "what runs on the device computes what Keras computed.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
JOBS = number(1, 1024, whole=True)  # more processes than that is a typo, not a machine


def _within(rule: Rule):
    """A typer callback that refuses a number `rule` does not allow before the command starts:
    a usage error, one line (`main`), exit 2."""

    def callback(value):
        if value is not None and not rule.test(value):
            raise typer.BadParameter(f"Expected {rule.expected}. Received: {value!r}.")
        return value

    return callback


# The options of every command that loads Keras models (convert, check, run).
CustomObjects = Annotated[list[str] | None, typer.Option(
    "--custom-objects", metavar="PATH.py", show_default=False,
    help="A Python file defining the models' custom layers (every keras.layers.Layer subclass "
         "in it, and its CUSTOM_OBJECTS dict, load by name). Repeat it or give a comma list.")]
Unsafe = Annotated[bool, typer.Option(
    "--unsafe", help="Turn Keras safe_mode off to load Lambda layers (runs their Python code: "
                     "only for files you trust).")]


@app.callback()
def _options(ctx: typer.Context, debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks and TensorFlow's own logs.")] = False) -> None:
    ctx.obj = {"debug": debug}
    quiet_tensorflow(debug)


def _debug(ctx: typer.Context | None) -> bool:
    """--debug, as given before the command (the commands' contexts inherit its `obj`)."""
    return bool(ctx is not None and (ctx.obj or {}).get("debug"))


def _elsewhere(fn) -> str | None:
    """What a user of command `fn` can do when its folder is full or read-only: the advice
    follows the folder it writes (an --out of its own, or the run folder it was given)."""
    params = inspect.signature(fn).parameters
    if "out_dir" in params:
        return "choose another --out"
    if "run_dir" in params:
        return (f"copy the run folder to a writable disk and run `edgepipe {fn.__name__}` on "
                "the copy")
    return None


def _os_error(e: OSError, elsewhere: str | None, folder: Path | None = None) -> str | None:
    """One line for the write errors a user can fix (a full or read-only folder)."""
    where = folder or e.filename or "the output folder"
    also = f" or {elsewhere}" if elsewhere else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left on the device while writing to {where}: free some space{also}."
    if e.errno == errno.EROFS:
        return (f"Cannot write {where}: read-only file system."
                + (f" {elsewhere[0].upper()}{elsewhere[1:]}." if elsewhere else ""))
    if e.errno in (errno.EACCES, errno.EPERM) and e.filename:
        return f"Cannot access {e.filename}: {e.strerror}. Check its permissions{also}."
    return None


def _error_line(message: str) -> None:
    err.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)


def guarded(fn):
    """A command whose user errors print one line and exit 2 (tracebacks: --debug)."""
    elsewhere = _elsewhere(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _debug(kwargs.get("ctx")):
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except EdgepipeError as e:
            _error_line(str(e))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except OSError as e:
            message = _os_error(e, elsewhere, kwargs.get("out_dir") or kwargs.get("run_dir"))
            if message is None:
                raise _internal(e) from None
            _error_line(message)
            raise typer.Exit(2) from None
        except Exception as e:  # a bug: still one line, the traceback is one flag away
            raise _internal(e) from None

    return wrapper


def _internal(e: Exception) -> typer.Exit:
    err.print(Text.assemble(("internal error: ", "red"), f"{type(e).__name__}: {e} "
                            "(rerun with --debug for the traceback)"), soft_wrap=True)
    return typer.Exit(1)


def command(fn):
    return app.command()(guarded(fn))


@command
def activations(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the activation registry with each gradient-audit verdict (exit 1 if one fails)."""
    import_tensorflow(_debug(ctx))
    from ..models.gradient_audit import audit_all
    from ..models.registry import ACTIVATIONS

    verdicts = audit_all()
    if as_json:
        rows = [{"name": v.activation, "class": ACTIVATIONS[v.activation].class_name,
                 "formula": ACTIVATIONS[v.activation].formula, "gradient": v.gradient.value,
                 "tflite_ops": list(ACTIVATIONS[v.activation].tflite_ops), "ok": v.ok,
                 "verdict": v.verdict, "config": v.config,
                 "max_training_vs_autodiff": v.max_training_vs_autodiff,
                 "max_autodiff_vs_finite_differences": v.max_autodiff_vs_finite,
                 "grid_points": v.points,
                 "at_kinks": {str(k): g for k, g in v.at_kinks.items()}} for v in verdicts]
        print(json.dumps(rows, indent=2))
    else:
        table = Table(title="Activation registry and gradient audit")
        for col in ("name", "formula", "gradient", "TFLite ops", "audit"):
            table.add_column(col)
        for v in verdicts:
            spec = ACTIVATIONS[v.activation]
            mark = "[green]ok[/]" if v.ok else "[red]FAIL[/]"
            table.add_row(f"{spec.name}\n[dim]{spec.class_name}[/]", spec.formula,
                          v.gradient.value, ", ".join(spec.tflite_ops), f"{mark} {v.verdict}")
        out.print(table)
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


@command
def train(
    ctx: typer.Context,
    models: Annotated[list[str] | None, typer.Argument(
        metavar="[MODEL]...", show_default=False,
        help=f"Zoo models to train (default: all): {', '.join(ZOO)}.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "artifacts/models"),
    epochs: Annotated[int | None, typer.Option(
        callback=_within(COUNT),
        help="Maximum epochs (early stopping on validation loss may end sooner).")] = None,
    seed: Annotated[int, typer.Option(
        callback=_within(SEED), help="Seed for splits, initialisation and shuffling.")] = 0,
    data: Annotated[Path | None, typer.Option(
        help="Your own data: a .npz with x_train, y_train, x_test, y_test.")] = None,
) -> None:
    """Train zoo models; save OUT/<model>.keras and a JSON training record for each."""
    from ..models.datasets import load_builtin, load_npz
    from ..models.train_config import TrainConfig

    # Every input is checked before anything is written or TensorFlow is imported.
    specs = [get_model_spec(name) for name in (models or ZOO)]
    twice = sorted({s.name for s in specs if specs.count(s) > 1})
    if twice:  # two trainings would write the same files at once
        raise EdgepipeError(f"Expected each model once. Received {', '.join(twice)} more than "
                            "once; name each model once.")
    config = TrainConfig(seed=seed) if epochs is None else TrainConfig(epochs=epochs, seed=seed)

    loaded, jobs = {}, []  # each dataset loaded once, however many models share it
    for spec in specs:
        key = spec.family.task if data else spec.dataset
        if key not in loaded:
            loaded[key] = (load_npz(data, spec.family.task, seed) if data
                           else load_builtin(spec.dataset, seed))
        check_input_shape(spec, loaded[key].input_shape)
        jobs.append((spec, loaded[key]))
    writable_folder(out_dir)

    import_tensorflow(_debug(ctx))
    from .training_progress import train_with_progress

    records = train_with_progress(jobs, config, out_dir, err)
    out.print(trained_table(records, out_dir))


@command
def convert(
    ctx: typer.Context,
    models: Annotated[list[Path], typer.Argument(
        metavar="MODEL...", show_default=False,
        help="Keras models: .keras or .h5 files, SavedModel folders, or folders of .keras and "
             ".h5 files (e.g. the output of `edgepipe train`).")],
    mode: Annotated[str, typer.Option(
        help="float32, float16, dynamic, int8, int16x8, a comma-separated list, or all.")] = "all",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "artifacts/tflite"),
    rep_data: Annotated[Path | None, typer.Option(
        help="Representative samples (.npy, shape (N, *input_shape); a model with several "
             "inputs: a .npz of one array per Keras input name) for int8 and int16x8. "
             "Default: the training split named by the record beside each model.")] = None,
    rep_samples: Annotated[int, typer.Option(
        callback=_within(COUNT),
        help="How many representative samples calibrate the integer modes.")] = 200,
    custom_objects: CustomObjects = None,
    unsafe: Unsafe = False,
) -> None:
    """Convert models to .tflite in each mode; audit and record every variant.

    Exit 0 when every variant converted or is a documented TFLite limit (unsupported), 1 when
    one failed (an op TFLite builtins lack, a degenerate quantization scale, a forward mismatch)
    or keeps a float op inside an integer model (a finding, printed with its rewrite).
    """
    from ..converters.modes import parse_modes
    from ..models.custom_objects import custom_object_files

    modes = parse_modes(mode)
    files = custom_object_files(custom_objects)
    writable_folder(out_dir)
    import_tensorflow(_debug(ctx))
    from ..models.loading import load_options
    from .conversion import convert_files

    with load_options(_load_options(files, unsafe)), err.status("converting...") as status:
        variants, notes = convert_files(
            models, modes, out_dir, rep_data, rep_samples, _debug(ctx),
            on_variant=lambda v: status.update(f"converted {v.model}.{v.mode.value}"))
    for note in notes:
        err.print(f"note: {note}", highlight=False)
    out.print(variants_table([v.record for v in variants], out_dir))
    failed = {}  # one line per model and reason, with the modes it failed in
    for v in variants:
        if v.status == ConversionStatus.FAILED:
            failed.setdefault((v.model, v.reason), []).append(v.mode.value)
    for (model, reason), failed_modes in failed.items():
        err.print(f"failed: {model} ({', '.join(failed_modes)}): {reason}", markup=False,
                  highlight=False, soft_wrap=True)
    # A float op inside an integer variant: converted and runnable on LiteRT, but not the
    # integer-only file the mode promises, so it still fails the command.
    found = [(v, f) for v in variants for f in v.record.get("findings") or ()]
    for v, finding in found:
        err.print(f"finding: {v.model}.{v.mode.value}: {_finding(finding)}", markup=False,
                  highlight=False, soft_wrap=True)
    if failed or found:
        raise typer.Exit(1)


@command
def check(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(
        help="A .tflite file, or a Keras model (.keras, .h5 or a SavedModel folder).")],
    target: Annotated[str | None, typer.Option(
        help="Judge against one target's op set: litert or tflm (default: show both).")] = None,
    mode: Annotated[str, typer.Option(
        help="For a Keras model: the modes to convert and audit.")] = "float32",
    rep_data: Annotated[Path | None, typer.Option(
        help="For a Keras model in int8/int16x8: representative samples (.npy).")] = None,
    rep_samples: Annotated[int, typer.Option(
        callback=_within(COUNT), help="Representative samples to use.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    custom_objects: CustomObjects = None,
    unsafe: Unsafe = False,
) -> None:
    """Audit a model's ops: kinds, tensor types, per-target support (exit 1 if a check fails).

    A .tflite is read directly (no TensorFlow). A Keras model is converted first; the report
    then also shows that custom gradients were dropped and that the float32 file reproduces
    the Keras forward on the test set.
    """
    from .check import check_keras, check_tflite, failed, parse_targets

    targets = parse_targets(target)
    if path.suffix == ".tflite" and (custom_objects or unsafe):
        option = "--custom-objects" if custom_objects else "--unsafe"
        raise EdgepipeError(f"{option} applies only to .keras models (it is about loading "
                            f"their Python layers); {path} is a .tflite file: drop {option}.")
    if path.suffix == ".tflite":
        records = [check_tflite(path, targets)]
    else:
        from ..converters.modes import parse_modes
        from ..models.custom_objects import custom_object_files
        from ..models.loading import check_model

        check_model(path)  # a wrong path or format is answered before TensorFlow's import (~15 s)
        modes = parse_modes(mode)
        files = custom_object_files(custom_objects)
        import_tensorflow(_debug(ctx))
        from ..models.loading import load_options

        with load_options(_load_options(files, unsafe)):
            records = check_keras(path, modes, rep_data, rep_samples, _debug(ctx))
    if as_json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=2))
    else:
        for record in records:
            _print_check(record, targets, failed(record, targets, target is not None))
    bad = [r for r in records if failed(r, targets, strict_target=target is not None)]
    for record in bad:  # the verdict also on stderr: --json keeps stdout for the JSON
        err.print(f"failed: {_check_name(record)}: {_check_reason(record, targets)}",
                  markup=False, highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)


# The [targets] options on the command line, shared by `run` and `parity`.
SshIdentity = Annotated[Path | None, typer.Option(
    help="ssh:// targets: the private key to log in with (default: ssh's own).")]
SshPython = Annotated[str | None, typer.Option(
    help="ssh:// targets: the board's Python command (default: python3).")]
Jobs = Annotated[int | None, typer.Option(
    "--jobs", "-j", show_default=False, callback=_within(JOBS),
    help="Worker processes for the models, the parity runners and the report's plots "
         "(default: the number of cores).")]
Timeout = Annotated[float | None, typer.Option(
    callback=_within(SECONDS), help="Seconds each target may take (default: 1800).")]
Executor = Annotated[str | None, typer.Option(
    help="Where model jobs and host parity runners run: local (default: --jobs processes "
         "here) or dask://HOST:PORT, a Dask cluster (README \"Running on a cluster\").")]
Strict = Annotated[bool, typer.Option(
    "--strict", help="Exit 1 when any plain variant fails or errs, even when a repaired "
                     "variant of its mode passes.")]


def _with_targets(config, ssh_identity: Path | None, ssh_python: str | None,
                  timeout: float | None):
    from .config import with_target_options

    return with_target_options(config, ssh_identity=str(ssh_identity) if ssh_identity else None,
                               ssh_python=ssh_python, timeout=timeout)


@command
def run(
    ctx: typer.Context,
    config_path: Annotated[Path | None, typer.Option(
        "--config", help="A TOML run config (every key optional; see README).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="The run folder.")] = Path(
        "artifacts/run"),
    targets: Annotated[str | None, typer.Option(
        help="Comma-separated targets (default: host,host-ref); `edgepipe targets` lists "
             "them.")] = None,
    epochs: Annotated[int | None, typer.Option(
        callback=_within(COUNT), help="Maximum training epochs.")] = None,
    ssh_identity: SshIdentity = None,
    ssh_python: SshPython = None,
    timeout: Timeout = None,
    model: Annotated[list[Path] | None, typer.Option(
        "--model", metavar="MODEL", show_default=False,
        help="Your own trained Keras model (.keras or .h5) instead of the zoo (repeatable); "
             "not trained again. Needs --data.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="With --model: a .npz with x_train (calibration), y_train, x_test, y_test, as "
             "the model takes them (several inputs: x_train_<input name>, x_test_<input "
             "name>); integer labels mean classification.")] = None,
    tflite: Annotated[list[Path] | None, typer.Option(
        "--tflite", metavar="FILE.tflite", show_default=False,
        help="With --model: a .tflite you already have, checked against the Keras model it came "
             "from as its own entry (its mode read from the file; repeatable).")] = None,
    custom_objects: CustomObjects = None,
    unsafe: Unsafe = False,
    jobs: Jobs = None,
    executor: Executor = None,
    force: Annotated[bool, typer.Option(
        help="Redo every stage, even those whose inputs did not change.")] = False,
    no_repair: Annotated[bool, typer.Option(
        "--no-repair", help="Do not build repaired variants (selective precision, lowering) "
                            "for variants that fail or that a target refuses.")] = False,
    strict: Strict = False,
) -> None:
    """Train, audit, convert every mode, bundle, check parity on each target, report.

    With --model (or \\[run] keras in the config), your own models go through the same stages
    without training. A stage whose inputs (code, config, data, upstream artifacts) did not
    change since the last run in the same --out folder is reused; --force redoes everything.

    Exit 0 when every model has a passing variant (plain or repaired) for every mode each
    target supports (a mode a target refuses, unsupported, does not count); 1 otherwise, and
    with --strict also when any plain variant failed or errored; 2 on bad input.
    """
    from .config import load_config
    from .run import RunContext, run

    config = _with_targets(
        load_config(config_path, epochs=epochs, targets=targets.split(",") if targets else None,
                    keras=[str(m) for m in model] if model else None,
                    tflite=[str(t) for t in tflite] if tflite else None,
                    data=str(data) if data else None,
                    custom_objects=list(custom_objects) if custom_objects else None,
                    unsafe=True if unsafe else None, no_repair=True if no_repair else None,
                    executor=executor),
        ssh_identity, ssh_python, timeout)
    _finish(run(RunContext.for_run(config, out_dir, err, _debug(ctx), jobs, force)), out_dir,
            strict)


@command
def parity(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by `edgepipe run`.")],
    target: Annotated[str | None, typer.Option(
        help="Comma-separated targets (default: the config's, else host,host-ref); "
             "`edgepipe targets` lists them.")] = None,
    config_path: Annotated[Path | None, typer.Option(
        "--config", help="A TOML run config: its \\[targets] options and \\[budgets].")] = None,
    ssh_identity: SshIdentity = None,
    ssh_python: SshPython = None,
    timeout: Timeout = None,
    jobs: Jobs = None,
    executor: Executor = None,
    strict: Strict = False,
) -> None:
    """Run parity on an existing run folder (any targets), and rewrite its reports.

    Exit codes as for `run`: 0 when every model has a passing variant for every mode each
    target supports, 1 otherwise (--strict: also when a plain variant failed), 2 on bad input.
    """
    from .config import load_config
    from .run import RunContext, parity

    config = _with_targets(load_config(config_path, targets=target.split(",") if target else None,
                                       executor=executor),
                           ssh_identity, ssh_python, timeout)
    _finish(parity(RunContext.for_folder(config, run_dir, err, _debug(ctx), jobs)), run_dir,
            strict)


@command
def targets(ctx: typer.Context) -> None:
    """List the parity targets and whether each can run on this machine."""
    from .targets import listing

    table = Table(title="Parity targets")
    for col in ("target", "what it is", "here"):
        table.add_column(col)
    for name, what, why in listing():
        table.add_row(name, what, "[green]ready[/]" if why is None else f"[yellow]{why}[/]")
    out.print(table)


emulator_app = typer.Typer(help="The emulated Arm board (qemu-aarch64 target).",
                           no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")


@emulator_app.command("setup")
@guarded
def emulator_setup(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option(help="Rebuild even when the cache is ready.")] = False,
) -> None:
    """Build the emulated board's arm64 sysroot in the cache (once; then it says it is ready)."""
    from .targets.emulator import setup

    setup(say=lambda text: err.print(text, highlight=False), force=force)


@command
def report(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A run folder made by `edgepipe run`.")],
    jobs: Jobs = None,
) -> None:
    """Regenerate report.html (and junit.xml) from a run folder's results.json."""
    from .report import write_report
    from .run import require_run_folder
    from .workers import default_jobs

    require_run_folder(run_dir)
    if not RunFolder(run_dir).results.is_file():
        raise EdgepipeError(f"{run_dir} has no results.json: run `edgepipe parity {run_dir}` "
                            "first.")
    out.print(f"wrote {write_report(run_dir, junit=True, workers=jobs or default_jobs())}",
              highlight=False)


def _finish(merged: dict, run_dir: Path, strict: bool = False) -> None:
    folder = RunFolder(run_dir)
    out.print(parity_table(merged))
    out.print(deployable_table(merged["deployable"]))
    out.print(f"wrote {folder.results}, {folder.junit}, {folder.report}", highlight=False)
    # deployable.ok: a repaired variant that passes stands for its mode; --strict asks that
    # every plain variant pass too.
    if not merged["deployable"]["strict_ok" if strict else "ok"]:
        raise typer.Exit(1)


def _check_name(record: dict) -> str:
    return record.get("file") or f"{record['model']}.{record['mode']}"


def _finding(finding: dict) -> str:
    """A float op inside an integer model, and the rewrite that fixes it when one is known."""
    return finding["message"] + (f"; {finding['rewrite']}" if finding.get("rewrite") else "")


def _check_reason(record: dict, targets) -> str:
    if record["status"] == ConversionStatus.FAILED:
        return record["reason"]
    if record.get("findings"):
        return "; ".join(f"finding: {_finding(f)}" for f in record["findings"])
    bad = [u for t in targets for u in record["audit"]["targets"][t]["unsupported_ops"]]
    return f"{', '.join(targets)} cannot run every op: {'; '.join(bad)}"


def _print_check(record: dict, targets, check_failed: bool) -> None:
    name = _check_name(record)
    if "audit" not in record:  # the conversion itself did not happen
        out.print(f"[yellow]{name}: {record['status']}[/]: {record['reason']}", highlight=False)
        return
    out.print(ops_table(record))
    for t in targets:
        said = record["audit"]["targets"][t]
        bad, unknown = said["unsupported_ops"], said.get("unknown_ops") or []
        out.print(f"{t}: " + ("[red]unsupported: " + escape("; ".join(bad)) + "[/]" if bad
                              else "[green]all ops supported[/]" if not unknown
                              else "[green]no op refused[/]"), highlight=False)
        if unknown:
            out.print(f"{t}: [yellow]not measured[/] (not a failure): "
                      + escape("; ".join(unknown)), highlight=False)
    if "litert" in record:  # a .tflite: did LiteRT load it (pipeline/check.py)?
        litert = record["litert"]
        if litert is None:
            said = "[yellow]not tried[/] (ai-edge-litert is not installed)"
        elif litert["loads"] is None:
            said = f"[yellow]not tried[/]: {escape(litert['reason'])}"
        else:
            said = (f"{'[green]loads[/]' if litert['loads'] else '[red]refused[/]'} "
                    f"(ai-edge-litert {litert['version']})")
        out.print(f"LiteRT load: {said}", highlight=False)
    grads = record.get("custom_gradients")
    if grads:
        carried = ", ".join(g["op_type"] for g in grads["saved_model"]) or "none"
        out.print(f"custom gradients: SavedModel carried {len(grads['saved_model'])} ({carried});"
                  f" .tflite has {grads['tflite_subgraphs']} subgraph, no gradient function: "
                  + ("[green]dropped[/]" if grads["dropped"] else "[red]NOT dropped[/]"),
                  highlight=False)
    fwd = record.get("forward_check")
    if fwd:
        out.print(f"float32 forward vs Keras on {fwd['data']}: max relative error "
                  f"{fwd['max_rel_error']:.2e} (bound {fwd['bound']:g}) "
                  + ("[green]equal[/]" if fwd["ok"] else "[red]DIFFERENT[/]"), highlight=False)
    findings = record.get("findings") or ()
    for finding in findings:
        out.print(f"[yellow]finding[/]: {escape(_finding(finding))}", highlight=False)
    reason = (f"{len(findings)} finding(s) above" if findings and record["status"] !=
              ConversionStatus.FAILED else _check_reason(record, targets))
    verdict = "[green]pass[/]" if not check_failed else f"[red]fail[/]: {escape(reason)}"
    out.print(f"{name}: {verdict}", highlight=False)


def _load_options(files, unsafe: bool):
    """Import the --custom-objects files (TensorFlow is imported by now); warn about --unsafe."""
    from ..models.loading import LoadOptions

    options = LoadOptions.from_files(files, unsafe)
    if unsafe:
        _unsafe_warning()
    return options


def _unsafe_warning() -> None:
    from .run import warn_unsafe

    warn_unsafe(err)


def main(args: list[str] | None = None) -> int:
    """`edgepipe ARGS` (default: the command line); returns the exit code. Typer's usage
    errors (an unknown option, a bad or missing value) are one line and exit 2, as every other
    bad input is, instead of its box."""
    try:
        return app(args=args, prog_name="edgepipe", standalone_mode=False) or 0
    except typer.TyperException as e:  # Click's UsageError and kin: raised, not shown
        message = e.format_message()
        if message:  # empty for `edgepipe` alone, whose help is printed already
            ctx = getattr(e, "ctx", None)
            hint = f" See '{ctx.command_path} --help'." if ctx is not None else ""
            _error_line(message.rstrip(".") + "." + hint)
        return e.exit_code
    finally:
        # The command has finished and reported (an interrupt during it exits 130). Interpreter
        # shutdown (TensorFlow's threads) can take a second, and Python restores the default
        # SIGINT action there: a Ctrl-C in that window would kill the process (-SIGINT) after
        # the work was done. Ignore it instead; the exit code stays the command's.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def entry() -> None:
    """The `edgepipe` command: main(), then exit with its code."""
    _exit(main())


def _exit(code: int) -> None:
    """Exit with `code`. Once TensorFlow is loaded, the interpreter's teardown of its modules
    took 1-2 s after the work was done: the exit handlers run (temporary folders, pools,
    logging), the streams are flushed, and the process ends without that teardown. The normal
    exit is kept with another Python thread alive that is not a daemon (tqdm's monitor is one:
    the exit would wait for it), and under a profiler or a tracer (`python -m cProfile` writes
    its file after this returns)."""
    waited = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if "tensorflow" not in sys.modules or waited or watched:
        sys.exit(code)
    import atexit

    from ..device_tests.isolation import flush_streams

    atexit._run_exitfuncs()
    flush_streams()
    os._exit(code)


if __name__ == "__main__":
    entry()
