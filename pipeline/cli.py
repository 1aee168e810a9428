"""The `edgepipe` command line.

Importing this module must not import TensorFlow (so `edgepipe --help` answers at once): every
import of a TF-using module happens inside the command that needs it.
"""

import functools
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..models.errors import EdgepipeError
from ..models.zoo import ZOO, check_input_shape, get_model_spec
from .quiet import import_tensorflow, quiet_tensorflow

app = typer.Typer(
    help="Train Keras models with custom activations, convert them to TFLite and prove that "
         "what runs on the device computes what Keras computed.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _options(debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks and TensorFlow's own logs.")] = False) -> None:
    _state["debug"] = debug
    quiet_tensorflow(debug)


def command(fn):
    """Register a command whose user errors print one line and exit 2 (tracebacks: --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _state["debug"]:
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except EdgepipeError as e:
            err.print(f"[red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # a bug: still one line, the traceback is one flag away
            err.print(f"[red]internal error:[/] {type(e).__name__}: {e} "
                      "(rerun with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return app.command()(wrapper)


@command
def activations(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the activation registry with each gradient-audit verdict (exit 1 if one fails)."""
    import_tensorflow(_state["debug"])
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
    models: Annotated[list[str] | None, typer.Argument(
        metavar="[MODEL]...", show_default=False,
        help=f"Zoo models to train (default: all): {', '.join(ZOO)}.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "artifacts/models"),
    epochs: Annotated[int | None, typer.Option(
        help="Maximum epochs (early stopping on validation loss may end sooner).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    data: Annotated[Path | None, typer.Option(
        help="Your own data: a .npz with x_train, y_train, x_test, y_test.")] = None,
) -> None:
    """Train zoo models; save OUT/<model>.keras and a JSON training record for each."""
    specs = [get_model_spec(name) for name in (models or ZOO)]  # all names checked before work
    from ..models.datasets import load_builtin, load_npz

    datasets = {}
    for spec in specs:
        key = spec.family.task if data else spec.dataset
        if key not in datasets:
            datasets[key] = (load_npz(data, spec.family.task, seed) if data
                             else load_builtin(spec.dataset, seed))
        check_input_shape(spec, datasets[key].input_shape)
    _writable(out_dir)

    import_tensorflow(_state["debug"])
    from ..models.training import TrainConfig
    from .training_progress import train_with_progress

    config = TrainConfig(seed=seed) if epochs is None else TrainConfig(epochs=epochs, seed=seed)
    records = train_with_progress(
        [(spec, datasets[spec.family.task if data else spec.dataset]) for spec in specs],
        config, out_dir, err)
    out.print(_metrics_table(records, out_dir))


def _metrics_table(records: list[dict], out_dir: Path) -> Table:
    table = Table(title=f"Trained models in {out_dir}")
    for col in ("model", "data", "epochs (best)", "test metrics", "seconds"):
        table.add_column(col)
    for r in records:
        test = r["metrics"]["test"]
        shown = (f"accuracy {test['accuracy']:.3f}" if "accuracy" in test
                 else f"R² {test['r2']:.3f}  MAE {test['mae']:.1f}")
        table.add_row(r["model"], r["dataset"]["name"],
                      f"{r['training']['epochs_run']} ({r['training']['best_epoch']})",
                      f"{shown}  loss {test['loss']:.3f}", f"{r['training']['seconds']:.1f}")
    return table


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgepipeError(f"Cannot create output folder {folder}: {e.strerror}. "
                            "Choose another --out.") from None


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
