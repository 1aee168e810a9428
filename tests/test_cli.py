"""The CLI through typer's CliRunner: help, the registry, training, and one-line user errors."""

import json

import numpy as np
import pytest
from conftest import imported_modules
from typer.testing import CliRunner

from edgepipe.models.errors import EdgepipeError
from edgepipe.pipeline.cli import app

runner = CliRunner()


def test_importing_the_cli_and_help_do_not_import_tensorflow():
    code = ("from typer.testing import CliRunner\n"
            "from edgepipe.pipeline.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "assert r.exit_code == 0 and 'train' in r.stdout, r.stdout\n")
    assert imported_modules(code, ("tensorflow", "keras", "sklearn")) == []


def test_targets_lists_every_target_without_importing_tensorflow():
    code = ("from typer.testing import CliRunner\n"
            "from edgepipe.pipeline.cli import app\n"
            "r = CliRunner().invoke(app, ['targets'])\n"
            "assert r.exit_code == 0, r.output\n"
            "for name in ('host-ref', 'tflm', 'qemu-aarch64', 'ethos-u', 'ssh://'):\n"
            "    assert name in r.stdout, (name, r.stdout)\n")
    assert imported_modules(code, ("tensorflow", "keras", "sklearn")) == []


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "activations" in result.stdout and "train" in result.stdout


def test_activations_json_has_every_verdict():
    result = runner.invoke(app, ["activations", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"swish", "piecewise", "step", "hard_swish", "mish", "gelu_tanh"}
    assert rows["step"]["verdict"] == "dead gradient, surrogate in use (ste)"
    assert rows["piecewise"]["tflite_ops"] == ["LEAKY_RELU"]
    assert all(r["ok"] for r in rows.values())


def test_activations_table():
    result = runner.invoke(app, ["activations"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "dead gradient, surrogate in use (ste)" in result.stdout


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, fragments", [
    pytest.param(["train", "mlp_swish", "cnn_relu"],
                 ["Unknown model 'cnn_relu'. Valid models: cnn_gelu_tanh,", "mlp_swish"],
                 id="unknown-model"),
    pytest.param(["train", "mlp_swish", "--epochs", "0"],
                 ["Expected epochs to be a whole number >= 1. Received: epochs=0"],
                 id="epochs-0"),
    pytest.param(["train", "mlp_swish", "--data", "/nonexistent/d.npz"],
                 ["Data file /nonexistent/d.npz does not exist"], id="missing-data"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, fragments):
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    _one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_npz_missing_key_and_bad_shapes(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((20, 3)), y_train=np.zeros(20), x_test=np.zeros((4, 3)))
    _one_line_error(runner.invoke(app, ["train", "mlp_swish", "--data", str(path)]),
                    "has no array 'y_test'")
    np.savez(path, x_train=np.zeros((20, 3)), y_train=np.zeros(18), x_test=np.zeros((4, 3)),
             y_test=np.zeros(4))
    _one_line_error(runner.invoke(app, ["train", "mlp_swish", "--data", str(path)]),
                    "x_train has 20 samples but y_train has 18 (shapes (20, 3) and (18,))")
    np.savez(path, x_train=np.zeros((20, 3)), y_train=np.zeros(20, int), x_test=np.zeros((4, 3)),
             y_test=np.zeros(4, int))
    _one_line_error(runner.invoke(app, ["train", "cnn_swish", "--data", str(path)]),
                    "Model cnn_swish needs images of shape (height, width, channels)",
                    "got samples of shape (3,)")


def test_debug_shows_the_exception():
    result = runner.invoke(app, ["--debug", "train", "nope"])
    assert result.exit_code != 0
    assert isinstance(result.exception, EdgepipeError)


def test_train_on_user_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = x @ rng.normal(size=5) + 0.1 * rng.normal(size=120)
    data = tmp_path / "linear.npz"
    np.savez(data, x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    result = runner.invoke(app, ["train", "mlp_piecewise", "--data", str(data), "--epochs", "40",
                                 "--out", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "mlp_piecewise.json").read_text())
    assert record["dataset"]["name"] == "linear"
    assert record["dataset"]["samples"] == {"train": 80, "val": 20, "test": 20}
    assert record["metrics"]["test"]["r2"] > 0.8  # a linear target an MLP fits easily
    assert "mlp_piecewise" in result.stdout and "R²" in result.stdout
