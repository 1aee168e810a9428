"""The run config: defaults that run, overrides, and unknown keys that suggest the right one."""

import re

import pytest
from conftest import config_error

from edgepipe.converters.modes import QuantMode
from edgepipe.core.errors import EdgepipeError
from edgepipe.models.zoo import ZOO
from edgepipe.pipeline.config import RunConfig, load_config, with_target_options
from edgepipe.pipeline.targets import TargetOptions


def test_no_config_covers_every_model_mode_and_both_host_targets():
    config = load_config(None)
    assert config.models == tuple(ZOO) and config.modes == tuple(QuantMode)
    assert config.targets == ("host", "host-ref")


def test_a_config_file_and_command_line_overrides(tmp_path):
    path = tmp_path / "edgepipe.toml"
    path.write_text('[run]\nmodels = ["cnn_step"]\nmodes = ["int8"]\nepochs = 5\n'
                    '[tolerances.cnn_step.int8]\nmax_abs = 0.5\n')
    config = load_config(path, epochs=7, targets=["host-ref"])
    assert config.models == ("cnn_step",) and config.modes == (QuantMode.INT8,)
    assert config.epochs == 7 and config.targets == ("host-ref",)
    assert config.tolerances == {"cnn_step": {"int8": {"max_abs": 0.5}}}


@pytest.mark.parametrize("text, message", [
    pytest.param('[run]\nmodel = ["mlp_swish"]\n', "Unknown key 'model' in", id="run-key"),
    pytest.param('[runn]\n', "Unknown key 'runn' in", id="table"),
    pytest.param('[tolerances.mlp_swish.int8]\nmax_abss = 1\n', "Did you mean 'max_abs'?",
                 id="bound"),
    pytest.param('[tolerances.mlp_swish.int9]\nmax_abs = 1\n', "Did you mean 'int8'?",
                 id="mode"),
    pytest.param('[run]\nmodels = ["mlp_relu"]\n', "Unknown model 'mlp_relu'", id="model"),
    pytest.param('[run]\nmodes = ["int4"]\n', "Unknown mode 'int4'", id="mode-name"),
    pytest.param('[run]\ntargets = ["pi"]\n', "Unknown target 'pi'", id="target"),
    pytest.param('[run]\nepochs = 0\n', "Expected epochs in C [run] to be a whole number >= 1. "
                 "Received: 0.", id="epochs"),
    pytest.param('[tolerances.mlp_swish.int8]\nmax_abs = -1\n',
                 "Expected max_abs in C [tolerances.mlp_swish.int8] to be a finite number >= 0",
                 id="negative-bound"),
    pytest.param('[run\n', "is not valid TOML", id="toml"),
    pytest.param('[run]\ntargets = ["hots"]\n', "Did you mean 'host'?", id="target-typo"),
    pytest.param('[run]\ntargets = ["ssh://"]\n', "ssh://", id="ssh-no-host"),
    pytest.param('[targets]\ntimout = 5\n', "Did you mean 'timeout'?", id="targets-key"),
    pytest.param('[targets]\ntimeout = 0\n', "Expected timeout in C [targets] to be a finite "
                 "number > 0 and <= 604800. Received: 0.", id="timeout"),
    pytest.param('[targets]\nssh_options = "-v"\n', "Expected ssh_options in C [targets] to be "
                 "a list of strings", id="ssh-options"),
    pytest.param('[budgets.tflm]\nmax_arena = 1\n', "Did you mean 'max_arena_bytes'?",
                 id="budget-key"),
    pytest.param('[budgets.tflm]\nmax_latency_ms = -1\n', "Expected max_latency_ms in C "
                 "[budgets.tflm] to be a finite number > 0. Received: -1.", id="budget-value"),
    pytest.param('[budgets.host]\nmax_arena_bytes = 1000\n', "host has no tensor arena",
                 id="budget-arena-on-host"),
    pytest.param('[budgets.tlfm]\nmax_model_bytes = 1\n', "Did you mean 'tflm'?",
                 id="budget-target"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    assert message.replace("C [", f"{tmp_path / 'c.toml'} [") in config_error(tmp_path, text)


@pytest.mark.parametrize("text, message", [
    pytest.param('run = 5\n', "Expected [run] in C to be a table. Received: 5.",
                 id="run-not-table"),
    pytest.param('[tolerances]\nmlp_swish = 5\n',
                 "Expected [tolerances.mlp_swish] in C to be a table. Received: 5.",
                 id="tolerance-model-not-table"),
    pytest.param('[tolerances.mlp_swish]\nint8 = 0.5\n',
                 "Expected [tolerances.mlp_swish.int8] in C to be a table", id="bounds-not-table"),
    pytest.param('[budgets]\ntflm = 5\n', 'Expected [budgets."tflm"] in C to be a table',
                 id="budget-not-table"),
    pytest.param('[run]\ntargets = [1]\n', "Expected targets in C [run] to be a list of distinct "
                 'names, e.g. ["host", "tflm"]. Received: [1].', id="target-not-text"),
    pytest.param('[run]\nmodels = "mlp_swish"\n', "Expected models in C [run] to be a list of "
                 "distinct names", id="models-a-string"),
    pytest.param('[run]\nmodels = ["mlp_swish", "mlp_swish"]\n', "Received: ['mlp_swish', "
                 "'mlp_swish']: 'mlp_swish' more than once.", id="models-twice"),
    pytest.param('[run]\nmodes = ["float32", "float32"]\n', "Expected modes in C [run] to be a "
                 "list of distinct names", id="modes-twice"),
    pytest.param('[run]\ntargets = ["host", "host"]\n', "Expected targets in C [run]",
                 id="targets-twice"),
    pytest.param('[run]\nseed = "0"\n', "Expected seed in C [run] to be a whole number >= 0 and "
                 "<= 4294967295. Received: '0'.", id="seed-string"),
    pytest.param('[run]\nseed = -1\n', "Received: -1.", id="seed-negative"),
    pytest.param('[run]\nseed = 1.0\n', "Received: 1.0.", id="seed-float"),
    pytest.param('[run]\nseed = 4294967296\n', "Received: 4294967296.", id="seed-2**32"),
    pytest.param('[run]\nseed = true\n', "Received: True.", id="seed-bool"),
    pytest.param('[run]\nrep_samples = 0.5\n', "Expected rep_samples in C [run]",
                 id="rep-samples-float"),
    pytest.param('[tolerances.mlp_swish.int8]\nmax_abs = nan\n', "Expected max_abs in C "
                 "[tolerances.mlp_swish.int8] to be a finite number >= 0. Received: nan.",
                 id="bound-nan"),
    pytest.param('[tolerances.mlp_swish.int8]\nmax_rel = inf\n', "Received: inf.",
                 id="bound-inf"),
    pytest.param('[tolerances.mlp_swish.int8]\nmin_top1_agreement = 1.5\n',
                 "to be a finite number >= 0 and <= 1. Received: 1.5.", id="agreement-above-1"),
    pytest.param('[targets]\ntimeout = inf\n', "Expected timeout in C [targets]", id="timeout-inf"),
    pytest.param('[targets]\nentry_timeout = nan\n', "Expected entry_timeout in C [targets]",
                 id="entry-timeout-nan"),
    pytest.param('[targets]\ntimeout = 1e300\n', "Received: 1e+300.", id="timeout-huge"),
    pytest.param('[targets]\nssh_python = ""\n', "Expected ssh_python in C [targets] to be a "
                 "non-empty string", id="ssh-python-empty"),
    pytest.param('[targets]\nssh_options = ["-o", "a\\u0000b"]\n', "Expected ssh_options",
                 id="ssh-option-nul"),
    pytest.param('[targets]\naccelerator = "ethos-u55-255"\n', "Unknown accelerator "
                 "'ethos-u55-255'. Did you mean 'ethos-u55-256'?", id="accelerator"),
    pytest.param('[budgets.tflm]\nmax_latency_ms = inf\n', "Expected max_latency_ms in C "
                 "[budgets.tflm] to be a finite number > 0. Received: inf.", id="budget-inf"),
    pytest.param('[budgets.tflm]\nmax_model_bytes = 1.5\n', "Expected max_model_bytes in C "
                 "[budgets.tflm] to be a whole number >= 1", id="budget-bytes-float"),
])
def test_every_value_has_its_type_and_range_checked(tmp_path, text, message):
    """Each of these once got past the loader and ended in "internal error" (exit 1), trained
    everything first, or wrote NaN into manifest.json."""
    message = message.replace("C [", f"{tmp_path / 'c.toml'} [").replace(
        " in C to", f" in {tmp_path / 'c.toml'} to")
    assert message in config_error(tmp_path, text)


def test_the_edges_of_each_range_are_accepted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[run]\nmodels = ["mlp_swish"]\nseed = 4294967295\nrep_samples = 1\n'
                    '[tolerances.mlp_swish.int8]\nmax_abs = 0\nmin_top1_agreement = 1\n'
                    '[targets]\ntimeout = 604800\nentry_timeout = 0.5\n')
    config = load_config(path)
    assert config.seed == 2**32 - 1 and config.target_options.timeout == 604800
    assert config.tolerances["mlp_swish"]["int8"] == {"max_abs": 0, "min_top1_agreement": 1}


def test_a_file_that_is_not_utf8_text_or_not_a_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'\xff\xfe[run]\n')
    with pytest.raises(EdgepipeError, match=r"is not UTF-8 text \(byte 0xff at offset 0\); "
                                            "save it as UTF-8"):
        load_config(path)
    with pytest.raises(EdgepipeError, match="is not a regular file"):
        load_config(tmp_path)


def test_command_line_values_are_checked_as_the_file_is():
    with pytest.raises(EdgepipeError, match=r"Expected targets in the command line to be a list "
                                            r"of distinct names.*Received: \['host', 'host'\]"):
        load_config(None, targets=["host", "host"])
    with pytest.raises(EdgepipeError, match="Expected timeout in the command line"):
        with_target_options(load_config(None), timeout=float("inf"))


@pytest.mark.parametrize("build, message", [
    pytest.param(lambda: RunConfig(seed=-1), "Expected seed in the run config", id="seed"),
    pytest.param(lambda: RunConfig(models="mlp_swish"), "Expected models in the run config",
                 id="models-a-string"),
    pytest.param(lambda: RunConfig(unsafe="yes"), "Expected unsafe in the run config to be true "
                 "or false", id="unsafe"),
    pytest.param(lambda: TargetOptions(timeout=float("nan")), "Expected timeout in [targets]",
                 id="timeout"),
])
def test_the_dataclasses_refuse_bad_values_when_built(build, message):
    with pytest.raises(EdgepipeError, match=re.escape(message)):
        build()


def test_suggestion_names_the_nearest_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[run]\nrep_sample = 10\n')
    with pytest.raises(EdgepipeError, match="Did you mean 'rep_samples'"):
        load_config(path)


def test_config_dataclass_rejects_empty_lists():
    with pytest.raises(EdgepipeError, match="at least one model"):
        RunConfig(models=())


def test_targets_options_and_budgets(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[run]\ntargets = ["tflm", "ssh://pi@board:2222", "ethos-u"]\n'
                    '[targets]\ntimeout = 60\nssh_python = "/opt/py/bin/python3"\n'
                    'ssh_options = ["-o", "ProxyJump=gw"]\naccelerator = "ethos-u65-256"\n'
                    '[budgets.tflm]\nmax_arena_bytes = 65536\nmax_latency_ms = 2.5\n'
                    '[budgets."ssh://pi@board:2222"]\nmax_model_bytes = 100000\n')
    config = load_config(path)
    assert config.targets == ("tflm", "ssh://pi@board:2222", "ethos-u")
    options = config.target_options
    assert (options.timeout, options.ssh_python, options.ssh_options, options.accelerator) == (
        60, "/opt/py/bin/python3", ("-o", "ProxyJump=gw"), "ethos-u65-256")
    assert options.ssh_identity is None
    assert config.budgets == {"tflm": {"max_arena_bytes": 65536, "max_latency_ms": 2.5},
                              "ssh://pi@board:2222": {"max_model_bytes": 100000}}
