"""The run config: defaults that run, overrides, and unknown keys that suggest the right one."""

import pytest
from conftest import config_error

from edgepipe.converters.modes import QuantMode
from edgepipe.models.errors import EdgepipeError
from edgepipe.models.zoo import ZOO
from edgepipe.pipeline.config import RunConfig, load_config


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
    pytest.param('[run]\nepochs = 0\n', "Expected epochs to be a whole number >= 1", id="epochs"),
    pytest.param('[tolerances.mlp_swish.int8]\nmax_abs = -1\n', "Expected a number >= 0",
                 id="negative-bound"),
    pytest.param('[run\n', "is not valid TOML", id="toml"),
    pytest.param('[run]\ntargets = ["hots"]\n', "Did you mean 'host'?", id="target-typo"),
    pytest.param('[run]\ntargets = ["ssh://"]\n', "ssh://", id="ssh-no-host"),
    pytest.param('[targets]\ntimout = 5\n', "Did you mean 'timeout'?", id="targets-key"),
    pytest.param('[targets]\ntimeout = 0\n', "Expected a number > 0 for timeout", id="timeout"),
    pytest.param('[targets]\nssh_options = "-v"\n', "Expected a list of strings",
                 id="ssh-options"),
    pytest.param('[budgets.tflm]\nmax_arena = 1\n', "Did you mean 'max_arena_bytes'?",
                 id="budget-key"),
    pytest.param('[budgets.tflm]\nmax_latency_ms = -1\n', "Expected a number > 0",
                 id="budget-value"),
    pytest.param('[budgets.host]\nmax_arena_bytes = 1000\n', "host has no tensor arena",
                 id="budget-arena-on-host"),
    pytest.param('[budgets.tlfm]\nmax_model_bytes = 1\n', "Did you mean 'tflm'?",
                 id="budget-target"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    assert message in config_error(tmp_path, text)


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
