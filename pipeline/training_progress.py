"""Train several models with a live progress display (one bar per model, epochs on a bar).

On a terminal the bars update in place; in a log (CI) each model gets one line when it ends.
"""

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..models.training import TrainConfig, train


def train_with_progress(jobs, config: TrainConfig, out_dir: Path, console: Console) -> list[dict]:
    records = []
    columns = (TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    live = console.is_terminal
    with Progress(*columns, console=console, disable=not live) as progress:
        for spec, data in jobs:
            task = progress.add_task(spec.name, total=config.epochs, status="")

            def on_epoch(epoch, logs, task=task):
                progress.update(task, completed=epoch,
                                status=f"loss {logs.get('loss', 0):.4f} "
                                       f"val_loss {logs.get('val_loss', 0):.4f}")

            record = train(spec, data, config, out_dir, on_epoch=on_epoch)
            t = record["training"]
            status = f"best epoch {t['best_epoch']}" + (" (early stop)" if t["early_stopped"]
                                                          else "")
            progress.update(task, total=t["epochs_run"], completed=t["epochs_run"], status=status)
            if not live:
                console.print(f"trained {spec.name}: {t['epochs_run']} epochs, {status}, "
                              f"{t['seconds']:.1f} s", highlight=False)
            records.append(record)
    return records
