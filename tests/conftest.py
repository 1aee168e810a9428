"""Shared fixtures and markers for edgepipe's own test suite."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest


def pytest_configure(config):
    # The test run is an entry point: quieten TensorFlow's C++ logs before anything imports it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    config.addinivalue_line("markers", "slow: long-running (full trainings, large fuzz runs)")
    config.addinivalue_line("markers", "emulator: needs the QEMU aarch64 sysroot")
    config.addinivalue_line("markers", "device: needs a real board or an SSH server")


def imported_modules(code: str, roots, timeout: float = 300) -> list[str]:
    """Run `code` in a fresh interpreter; return the modules it left imported whose top-level
    package is in `roots` (to prove that a light path never loads TensorFlow)."""
    script = f"{code}\nimport json as _json, sys as _sys\nprint(_json.dumps(sorted(_sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    names = json.loads(done.stdout.strip().splitlines()[-1])
    return [m for m in names if m.split(".")[0] in roots]


def small_slice(data, n_train=64, n_val=32, n_test=32):
    """The same dataset cut down, for tests that only need training to run, not to converge."""
    return dataclasses.replace(
        data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
        x_val=data.x_val[:n_val], y_val=data.y_val[:n_val],
        x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])


@pytest.fixture(scope="session")
def default_training(tmp_path_factory):
    """Train the models with a quality floor once, with the default settings, on full data."""
    from edgepipe.models.datasets import load_builtin
    from edgepipe.models.training import TrainConfig, train
    from edgepipe.models.zoo import ZOO

    out = tmp_path_factory.mktemp("zoo")
    records = {}
    for name in ("mlp_swish", "mlp_piecewise", "mlp_step",
                 "cnn_swish", "cnn_piecewise", "cnn_step"):
        spec = ZOO[name]
        records[name] = train(spec, load_builtin(spec.dataset), TrainConfig(), out)
    return out, records


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory):
    """Every zoo model trained for 2 epochs on a small slice: enough to convert and audit."""
    from edgepipe.models.datasets import load_builtin
    from edgepipe.models.training import TrainConfig, train
    from edgepipe.models.zoo import ZOO

    out = tmp_path_factory.mktemp("quick_zoo")
    data = {name: small_slice(load_builtin(name)) for name in ("diabetes", "digits")}
    records = {name: train(spec, data[spec.dataset], TrainConfig(epochs=2, patience=1), out)
               for name, spec in ZOO.items()}
    return out, records, data


@pytest.fixture(scope="session")
def converted_zoo(quick_zoo, tmp_path_factory):
    """Every zoo model in every mode, through the same code path as `edgepipe convert`."""
    from edgepipe.converters.modes import QuantMode
    from edgepipe.pipeline.conversion import convert_files

    out = tmp_path_factory.mktemp("tflite")
    variants, _ = convert_files([quick_zoo[0]], list(QuantMode), out, None, 200, debug=False)
    return out, {(v.model, v.mode.value): v.record for v in variants}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """(bundle folder, Keras models, data) of tests/tiny_bundle.py, built once. Copy it before
    editing it."""
    from tiny_bundle import build_bundle, make_data, make_models

    data = make_data()
    models = make_models(data)
    root = tmp_path_factory.mktemp("bundle")
    build_bundle(root, data, models)
    return root, models, data


def import_as(path, name):
    """Import a file the way a user's own script would (not on sys.path for Keras to find)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def needs(available: bool, reason: str) -> None:
    """Skip a test whose external tool (emulator sysroot, sshd, vela, tflite-micro) is missing,
    saying why; where CI installed them (EDGEPIPE_REQUIRE_TARGETS=1) a missing tool fails the
    test instead, so that CI can never pass by skipping."""
    if available:
        return
    if os.environ.get("EDGEPIPE_REQUIRE_TARGETS") == "1":
        pytest.fail(f"{reason} (EDGEPIPE_REQUIRE_TARGETS=1: CI must run this test)")
    pytest.skip(reason)


def run_user_model(keras_file, data, out, modes, targets):
    """`edgepipe run` on a user's .keras and .npz (one job), as the README shows it; the
    config beside `out`. The CLI result (exit 0: every check passed, 1: some failed)."""
    from typer.testing import CliRunner

    from edgepipe.pipeline.cli import app

    config = out.parent / f"{out.name}.toml"
    config.write_text(f"[run]\nmodes = {json.dumps(list(modes))}\n"
                      f"targets = {json.dumps(list(targets))}\n")
    result = CliRunner().invoke(app, ["run", "--model", str(keras_file), "--data", str(data),
                                      "--config", str(config), "--out", str(out), "--jobs",
                                      "1"], env={"COLUMNS": "200"})
    assert result.exit_code in (0, 1), result.output
    return result


def one_line(result, code: int, *fragments: str, prefix: str = "error: ") -> str:
    """Exit `code`, exactly one stderr line that holds every fragment, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


def config_error(folder, text: str) -> str:
    """The error `load_config` raises on a config file holding `text`, checked to be one line."""
    from edgepipe.core.errors import EdgepipeError
    from edgepipe.pipeline.config import load_config

    path = folder / "c.toml"
    path.write_text(text)
    with pytest.raises(EdgepipeError) as info:
        load_config(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def pytest_terminal_summary(terminalreporter):
    """The bad-input figure over the cases that ran; with EDGEPIPE_BAD_INPUTS_TABLE=FILE, and
    every case run, also the table (docs/bad-inputs.md, `make bad-inputs-table`)."""
    from bad_inputs import OUTCOMES, all_cases, counts, render_table

    if not OUTCOMES:
        return
    figure = ", ".join(f"{k} {v}" for k, v in counts(OUTCOMES).items())
    terminalreporter.write_line(f"bad inputs: {figure}")
    table = os.environ.get("EDGEPIPE_BAD_INPUTS_TABLE")
    if table:
        if len({o.case.id for o in OUTCOMES}) == len(all_cases()):
            with open(table, "w") as stream:
                stream.write(render_table(OUTCOMES))
            terminalreporter.write_line(f"wrote {table}")
        else:
            terminalreporter.write_line(f"not written: {table} needs every case run (-m '')")
