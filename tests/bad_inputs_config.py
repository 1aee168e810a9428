"""Bad run configs and command-line options: every value's type and range is checked before any
work starts (no training, no runner), and refused in one line that names the file and key."""

import os

from bad_inputs import Case

RUN = ("run", "--config", "c.toml", "--out", "out")


def _toml(text: str | bytes):
    def setup(folder):
        folder.write("c.toml", text)

    return setup


def _config(id: str, what: str, text: str | bytes, expect: str, argv=RUN) -> Case:
    return Case(f"config-{id}", what, argv, 2, expect, _toml(text))


def _option(id: str, what: str, argv: tuple, expect: str) -> Case:
    return Case(f"option-{id}", what, argv, 2, expect)


def _folder_as_config(folder):
    (folder.path / "c.toml").mkdir()


def _fifo_as_config(folder):
    os.mkfifo(folder.path / "c.toml")


CASES = [
    _config("run-not-a-table", "`run = 5`: a value where the [run] table belongs", "run = 5\n",
            "Expected [run] in c.toml to be a table. Received: 5."),
    _config("tolerance-model-not-a-table", "`[tolerances] mlp_swish = 5`",
            "[tolerances]\nmlp_swish = 5\n",
            "Expected [tolerances.mlp_swish] in c.toml to be a table. Received: 5."),
    _config("tolerance-mode-not-a-table", "`[tolerances.mlp_swish] int8 = 0.5`",
            "[tolerances.mlp_swish]\nint8 = 0.5\n",
            "Expected [tolerances.mlp_swish.int8] in c.toml to be a table. Received: 0.5."),
    _config("budget-not-a-table", "`[budgets] tflm = 5`", "[budgets]\ntflm = 5\n",
            'Expected [budgets."tflm"] in c.toml to be a table. Received: 5.'),
    _config("target-not-a-name", "`targets = [1]` in [run]", "[run]\ntargets = [1]\n",
            'Expected targets in c.toml [run] to be a list of distinct names, e.g. ["host", '
            '"tflm"]. Received: [1].'),
    _config("not-utf8", "a config file that is not UTF-8 text", b"\xff\xfe[run]\n",
            "Config file c.toml is not UTF-8 text (byte 0xff at offset 0); save it as UTF-8."),
    Case("config-is-a-folder", "a folder named as the config file", RUN, 2,
         "Config file c.toml is not a regular file", _folder_as_config),
    Case("config-is-a-fifo", "a FIFO as the config file (a read would wait for ever)", RUN, 2,
         "Config file c.toml is not a regular file", _fifo_as_config),
    _config("seed-string", '`seed = "0"` in [run]', '[run]\nseed = "0"\n',
            "Expected seed in c.toml [run] to be a whole number >= 0 and <= 4294967295. "
            "Received: '0'."),
    _config("seed-negative", "`seed = -1` in [run]", "[run]\nseed = -1\n",
            "Expected seed in c.toml [run] to be a whole number >= 0 and <= 4294967295. "
            "Received: -1."),
    _config("seed-float", "`seed = 1.5` in [run]", "[run]\nseed = 1.5\n",
            "Expected seed in c.toml [run] to be a whole number >= 0 and <= 4294967295. "
            "Received: 1.5."),
    _config("seed-2-32", "`seed = 4294967296` (2**32) in [run]", "[run]\nseed = 4294967296\n",
            "Expected seed in c.toml [run] to be a whole number >= 0 and <= 4294967295. "
            "Received: 4294967296."),
    _config("epochs-bool", "`epochs = true` in [run]", "[run]\nepochs = true\n",
            "Expected epochs in c.toml [run] to be a whole number >= 1. Received: True."),
    _config("unsafe-string", '`unsafe = "no"` in [run]', '[run]\nunsafe = "no"\n',
            "Expected unsafe in c.toml [run] to be true or false. Received: 'no'."),
    _config("models-a-string", '`models = "mlp_swish"`: a string where a list belongs',
            '[run]\nmodels = "mlp_swish"\n',
            'Expected models in c.toml [run] to be a list of distinct names, e.g. ["mlp_swish", '
            "\"cnn_step\"]. Received: 'mlp_swish'."),
    _config("models-twice", "a model listed twice in [run] models",
            '[run]\nmodels = ["mlp_swish", "cnn_step", "mlp_swish"]\n',
            "Expected models in c.toml [run] to be a list of distinct names, e.g. [\"mlp_swish\", "
            "\"cnn_step\"]. Received: ['mlp_swish', 'cnn_step', 'mlp_swish']: 'mlp_swish' more "
            "than once."),
    _config("modes-twice", '`modes = ["float32", "float32"]`',
            '[run]\nmodes = ["float32", "float32"]\n',
            "Expected modes in c.toml [run] to be a list of distinct names, e.g. [\"float32\", "
            "\"int8\"]. Received: ['float32', 'float32']: 'float32' more than once."),
    _config("targets-twice", '`targets = ["host", "host"]`', '[run]\ntargets = ["host", "host"]\n',
            "Expected targets in c.toml [run] to be a list of distinct names"),
    _config("max-abs-nan", "`max_abs = nan` (was written into manifest.json as bare NaN)",
            "[tolerances.mlp_swish.int8]\nmax_abs = nan\n",
            "Expected max_abs in c.toml [tolerances.mlp_swish.int8] to be a finite number >= 0. "
            "Received: nan."),
    _config("max-rel-inf", "`max_rel = inf`", "[tolerances.cnn_step.float16]\nmax_rel = inf\n",
            "Expected max_rel in c.toml [tolerances.cnn_step.float16] to be a finite number >= "
            "0. Received: inf."),
    _config("top1-above-1", "`min_top1_agreement = 1.5` (a fraction)",
            "[tolerances.cnn_step.int8]\nmin_top1_agreement = 1.5\n",
            "to be a finite number >= 0 and <= 1. Received: 1.5."),
    _config("timeout-inf", "TOML `timeout = inf` in [targets] (failed after the runners ran)",
            "[targets]\ntimeout = inf\n",
            "Expected timeout in c.toml [targets] to be a finite number > 0 and <= 604800. "
            "Received: inf."),
    _config("timeout-huge", "`timeout = 1e300` in [targets]", "[targets]\ntimeout = 1e300\n",
            "Expected timeout in c.toml [targets] to be a finite number > 0 and <= 604800. "
            "Received: 1e+300."),
    _config("entry-timeout-nan", "`entry_timeout = nan` in [targets]",
            "[targets]\nentry_timeout = nan\n",
            "Expected entry_timeout in c.toml [targets] to be a finite number > 0"),
    _config("parity-timeout-minus-inf", "`timeout = -inf` in the config of `parity`",
            "[targets]\ntimeout = -inf\n", "Expected timeout in c.toml [targets]",
            argv=("parity", "run", "--config", "c.toml")),
    _config("ssh-python-empty", '`ssh_python = ""` in [targets]', '[targets]\nssh_python = ""\n',
            "Expected ssh_python in c.toml [targets] to be a non-empty string. Received: ''."),
    _config("ssh-option-nul", "an ssh option holding a NUL character",
            '[targets]\nssh_options = ["-o", "User=pi\\u0000"]\n',
            "Expected ssh_options in c.toml [targets] to be a list of strings"),
    _config("accelerator-unknown", '`accelerator = "ethos-u55-255"` (was refused only when '
            "ethos-u ran)", '[targets]\naccelerator = "ethos-u55-255"\n',
            "Unknown accelerator 'ethos-u55-255'. Did you mean 'ethos-u55-256'?"),
    _config("pool-empty", "`pi4 = []` in [targets.pools]: a pool with no board",
            "[targets.pools]\npi4 = []\n",
            "Expected pool pi4 in c.toml [targets.pools] to list at least one board"),
    _config("pool-bad-board", '`pi4 = ["pi@board-a"]` in [targets.pools]: no ssh://',
            '[targets.pools]\npi4 = ["pi@board-a"]\n',
            "c.toml [targets.pools] pi4: Expected a target ssh://user@host[:port]. Received: "
            "'pi@board-a'"),
    _config("pool-board-twice", "the same board twice in one pool",
            '[targets.pools]\npi4 = ["ssh://pi@a", "ssh://pi@a:22"]\n',
            "Pool pi4 in c.toml [targets.pools] lists the board a:22 twice"),
    _config("pool-undefined", '`targets = ["pool:pi5"]` in [run], a pool the config does not '
            "define", '[run]\ntargets = ["pool:pi5"]\n[targets.pools]\npi4 = ["ssh://pi@a"]\n',
            "Unknown pool 'pi5'. Valid pools: pi4. Or list its boards in "
            "the run config (--config): [targets.pools] pi5 = "),
    _option("pool-no-config", "`--targets pool:pi4` without a config that defines it",
            ("run", "--targets", "pool:pi4", "--out", "out"),
            "Unknown pool 'pi4' (pool:pi4): the run config defines no pools"),
    _config("budget-inf", "`max_latency_ms = inf` in [budgets.tflm]",
            "[budgets.tflm]\nmax_latency_ms = inf\n",
            "Expected max_latency_ms in c.toml [budgets.tflm] to be a finite number > 0. "
            "Received: inf."),
    _config("budget-bytes-fraction", "`max_model_bytes = 0.5` in [budgets.tflm]",
            "[budgets.tflm]\nmax_model_bytes = 0.5\n",
            "Expected max_model_bytes in c.toml [budgets.tflm] to be a whole number >= 1. "
            "Received: 0.5."),
    _option("jobs-0", "`--jobs 0`", ("run", "--jobs", "0"),
            "Invalid value for '--jobs' / '-j': Expected a whole number >= 1 and <= 1024. "
            "Received: 0. See 'edgepipe run --help'."),
    _option("jobs-huge", "`-j 5000` (a chunk count that large made parity count for ever)",
            ("parity", "run", "-j", "5000"), "Expected a whole number >= 1 and <= 1024. "
            "Received: 5000."),
    _option("timeout-nan", "`--timeout nan`", ("run", "--timeout", "nan"),
            "Invalid value for '--timeout': Expected a finite number > 0 and <= 604800. "
            "Received: nan."),
    _option("timeout-inf", "`--timeout inf` (failed after the runners ran)",
            ("parity", "run", "--timeout", "inf"),
            "Invalid value for '--timeout': Expected a finite number > 0 and <= 604800. "
            "Received: inf."),
    _option("timeout-huge", "`--timeout 1e300`", ("run", "--timeout", "1e300"),
            "Received: 1e+300."),
    _option("seed-negative", "`--seed -1`", ("train", "mlp_swish", "--seed", "-1"),
            "Invalid value for '--seed': Expected a whole number >= 0 and <= 4294967295. "
            "Received: -1."),
    _option("seed-2-32", "`--seed 4294967296`", ("train", "--seed", "4294967296"),
            "Received: 4294967296."),
    _option("epochs-0", "`--epochs 0` on run", ("run", "--epochs", "0"),
            "Invalid value for '--epochs': Expected a whole number >= 1. Received: 0."),
    _option("epochs-abc", "`--epochs abc`", ("train", "--epochs", "abc"),
            "Invalid value for '--epochs': Input should be a valid integer"),
    _option("rep-samples-0", "`--rep-samples 0` on convert",
            ("convert", "m.keras", "--rep-samples", "0"),
            "Invalid value for '--rep-samples': Expected a whole number >= 1. Received: 0."),
    _option("check-rep-samples", "`--rep-samples -1` on check",
            ("check", "m.keras", "--rep-samples", "-1"),
            "Invalid value for '--rep-samples': Expected a whole number >= 1. Received: -1."),
    _option("unknown", "an option no command has", ("run", "--bogus"),
            "No such option: --bogus"),
    _option("missing-argument", "`parity` without its run folder", ("parity",),
            "Missing argument 'run_dir'. See 'edgepipe parity --help'."),
    _option("no-value", "`--epochs` with no value", ("train", "--epochs"),
            "Option '--epochs' requires an argument."),
    _option("unknown-command", "a command that does not exist", ("nosuch",),
            "No such command 'nosuch'. See 'edgepipe --help'."),
    _option("targets-twice", "`--targets host,host`", ("run", "--targets", "host,host"),
            "Expected targets in the command line to be a list of distinct names"),
    Case("option-train-model-twice", "the same model twice on the command line",
         ("train", "mlp_swish", "mlp_swish", "--out", "out"), 2,
         "Received mlp_swish more than once"),
    _config("executor-scheme", '`executor = "spark://a:7077"` in [run]',
            '[run]\nexecutor = "spark://a:7077"\n',
            "Expected an executor local or dask://HOST:PORT (e.g. dask://10.0.0.5:8786). "
            "Received: 'spark://a:7077'"),
    _option("executor-no-port", "`--executor dask://sched` without the scheduler's port",
            ("run", "--executor", "dask://sched"),
            "Expected an executor local or dask://HOST:PORT (e.g. dask://10.0.0.5:8786). "
            "Received: 'dask://sched'; the port is the Dask scheduler's (8786 by default)"),
    _option("executor-unreachable", "`--executor` naming a port where no scheduler listens",
            ("run", "--out", "out", "--executor", "dask://127.0.0.1:1"),
            "Cannot reach the Dask scheduler at dask://127.0.0.1:1"),
]
