"""The CLI through typer's CliRunner: help, the registry, training, and one-line user errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import imported_modules
from typer.testing import CliRunner

from edgepipe.core.errors import EdgepipeError
from edgepipe.pipeline.cli import app, main

runner = CliRunner()


def edgepipe(capsys, *args) -> tuple[int, str, str]:
    """`edgepipe ARGS` as the console script runs it (`main`, which also makes Typer's own
    usage errors one line): (exit code, stdout, stderr)."""
    handler = signal.getsignal(signal.SIGINT)  # main ignores Ctrl-C once the command is done
    try:
        code = main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGINT, handler)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(code: int, stderr: str, *fragments) -> str:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for f in fragments:
        assert f in lines[0]
    return lines[0]


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
                 ["Invalid value for '--epochs': Expected a whole number >= 1. Received: 0. "
                  "See 'edgepipe train --help'."], id="epochs-0"),
    pytest.param(["train", "mlp_swish", "--data", "/nonexistent/d.npz"],
                 ["Data file /nonexistent/d.npz does not exist"], id="missing-data"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, args, fragments):
    code, _, stderr = edgepipe(capsys, *args, "--out", tmp_path / "out")
    _one_line(code, stderr, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("args, fragments", [
    pytest.param(["run", "--jobs", "0"], ["Invalid value for '--jobs' / '-j': Expected a whole "
                 "number >= 1 and <= 1024. Received: 0. See 'edgepipe run --help'."], id="jobs-0"),
    pytest.param(["parity", "run", "-j", "5000"], ["Received: 5000."], id="jobs-5000"),
    pytest.param(["run", "--timeout", "nan"], ["Invalid value for '--timeout': Expected a finite "
                 "number > 0 and <= 604800. Received: nan."], id="timeout-nan"),
    pytest.param(["parity", "run", "--timeout", "inf"], ["Received: inf."], id="timeout-inf"),
    pytest.param(["run", "--timeout", "1e300"], ["Received: 1e+300."], id="timeout-huge"),
    pytest.param(["run", "--epochs", "0"], ["Invalid value for '--epochs'"], id="run-epochs-0"),
    pytest.param(["train", "--epochs", "abc"], ["Invalid value for '--epochs': Input should be a "
                 "valid integer"], id="epochs-not-a-number"),
    pytest.param(["train", "--seed", "-1"], ["Invalid value for '--seed': Expected a whole number "
                 ">= 0 and <= 4294967295. Received: -1."], id="seed-negative"),
    pytest.param(["train", "--seed", str(2**32)], ["Received: 4294967296."], id="seed-2**32"),
    pytest.param(["convert", "m.keras", "--rep-samples", "0"], ["Invalid value for "
                 "'--rep-samples': Expected a whole number >= 1. Received: 0."],
                 id="convert-rep-samples-0"),
    pytest.param(["check", "m.keras", "--rep-samples", "-1"], ["Received: -1."],
                 id="check-rep-samples"),
    pytest.param(["run", "--bogus"], ["No such option: --bogus", "See 'edgepipe run --help'."],
                 id="unknown-option"),
    pytest.param(["parity"], ["Missing argument 'run_dir'. See 'edgepipe parity --help'."],
                 id="missing-argument"),
    pytest.param(["train", "--epochs"], ["Option '--epochs' requires an argument."],
                 id="option-without-value"),
    pytest.param(["nosuch"], ["No such command 'nosuch'. See 'edgepipe --help'."],
                 id="unknown-command"),
    pytest.param(["run", "--targets", "host,host"], ["Expected targets in the command line to "
                 "be a list of distinct names"], id="targets-twice"),
])
def test_option_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, fragments):
    """Typer's own usage errors were 5-6-line boxes; out-of-range numbers (a negative seed, an
    infinite timeout) got past it and failed after the work had started."""
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = edgepipe(capsys, *args)
    _one_line(code, stderr, *fragments)
    assert stdout == "" and list(tmp_path.iterdir()) == []


def test_help_and_a_clean_exit_keep_their_codes(capsys):
    code, stdout, stderr = edgepipe(capsys, "--help")
    assert code == 0 and "Usage: edgepipe" in stdout and stderr == ""
    code, stdout, stderr = edgepipe(capsys)  # no command: the help, and exit 2
    assert code == 2 and "Usage: edgepipe" in stdout and stderr == ""
    code, stdout, stderr = edgepipe(capsys, "targets")
    assert code == 0 and "host-ref" in stdout


@pytest.fixture
def read_only_run(tiny_bundle, tmp_path, capsys):
    """A finished run folder (parity on host, reports written) on a tmpfs remounted read-only:
    chmod does not stop root, who runs these tests here."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only mount needs root and mount(8)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        run = shutil.copytree(tiny_bundle[0], mnt / "run")
        assert edgepipe(capsys, "parity", run, "--target", "host")[0] == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield run
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_read_only_run_folder_gets_advice_that_fits_the_command(read_only_run, capsys):
    """parity and report have no --out: the advice is to copy the run folder."""
    code, _, stderr = edgepipe(capsys, "report", read_only_run)
    _one_line(code, stderr, f"Cannot write {read_only_run}: read-only file system. Copy the run "
              "folder to a writable disk and run `edgepipe report` on the copy.")
    code, _, stderr = edgepipe(capsys, "parity", read_only_run, "--target", "host")
    _one_line(code, stderr, f"Cannot write {read_only_run}: read-only file system. Copy the run "
              "folder to a writable disk and run `edgepipe parity` on the copy.")


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


@pytest.mark.parametrize("tensorflow", [True, False], ids=["tensorflow-loaded", "without"])
def test_the_command_exits_with_its_code_its_output_and_exit_handlers(tmp_path, tensorflow):
    """The console script skips the interpreter's teardown once TensorFlow is loaded (it took
    1-2 s): the exit code, what was printed and the exit handlers (a temporary folder's
    removal) are as a normal exit leaves them."""
    script = textwrap.dedent(f"""
        import atexit, sys, tempfile
        {"import tensorflow" if tensorflow else ""}
        from edgepipe.pipeline.cli import _exit
        kept = tempfile.TemporaryDirectory(dir={str(tmp_path)!r})
        atexit.register(lambda: print("handler ran", file=sys.stderr))
        print("printed", end="")
        _exit(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "printed"
    assert done.stderr.rstrip().endswith("handler ran")
    assert list(tmp_path.iterdir()) == []  # the TemporaryDirectory's finalizer ran


def test_a_profiled_command_still_writes_its_profile(tmp_path):
    """`python -m cProfile -o F -m edgepipe.pipeline.cli ...` once TensorFlow is loaded: the
    command exits the normal way, so the profiler writes F after it."""
    script = tmp_path / "command.py"
    script.write_text("import tensorflow\nfrom edgepipe.pipeline.cli import _exit\n_exit(0)\n")
    profile = tmp_path / "command.prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), str(script)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0
