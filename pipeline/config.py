"""The run configuration: a TOML file where every key is optional and the defaults run.

    [run]
    models = ["mlp_swish", "cnn_step"]     # default: the whole zoo
    modes = ["float32", "int8"]            # default: all five
    targets = ["host", "host-ref"]         # default; also tflm, qemu-aarch64, ethos-u,
                                           # ssh://user@host[:port]  (README "Targets")
    seed = 0
    epochs = 300                           # maximum; early stopping ends most runs sooner
    rep_samples = 200
    # Your own trained models instead of the zoo (paths relative to this file); no training:
    # keras = ["my.keras"]                 # each model's name is its file name without .keras
    # data = "my.npz"                      # x_train (calibration), y_train, x_test, y_test
    # custom_objects = ["layers.py"]       # modules defining the models' custom layers
    # unsafe = false                       # true: Keras safe_mode off (Lambda layers)

    [tolerances.cnn_step.int8]             # override derived bounds for one model and mode
    max_abs = 0.5
    task_delta = 0.02

    [targets]                              # how to reach and bound the targets
    timeout = 1800                         # seconds per target
    entry_timeout = 300                    # seconds per entry (a hang fails only that entry)
    ssh_python = "python3"                 # the board's Python
    ssh_identity = "~/.ssh/id_ed25519"     # default: ssh's own (agent, ~/.ssh/config)
    ssh_options = ["-o", "ProxyJump=gw"]
    accelerator = "ethos-u55-256"          # ethos-u: Vela's --accelerator-config

    [budgets.tflm]                         # per target; a variant over budget fails
    max_model_bytes = 100_000
    max_arena_bytes = 65_536
    max_latency_ms = 5.0

Unknown keys are errors that suggest the nearest valid key.
"""

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ..converters.modes import QuantMode
from ..models.errors import EdgepipeError, unknown_name
from ..models.zoo import ZOO
from .budgets import BUDGET_KEYS, check_budget
from .targets import TargetOptions, check_target

DEFAULT_TARGETS = ("host", "host-ref")
TARGET_KEYS = tuple(f.name for f in dataclasses.fields(TargetOptions))
RUN_KEYS = ("models", "modes", "targets", "seed", "epochs", "rep_samples", "keras", "data",
            "custom_objects", "unsafe")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # a bundle entry id's characters


def user_model_name(path) -> str:
    """A user model's name in the run: its file name without `.keras`."""
    return Path(path).stem
TOLERANCE_KEYS = ("max_abs", "max_rel", "task_delta", "min_top1_agreement")


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...] = tuple(ZOO)
    modes: tuple[QuantMode, ...] = tuple(QuantMode)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    seed: int = 0
    epochs: int = 300
    rep_samples: int = 200
    # {model: {mode: {bound: value}}}: replaces the derived value of each bound named
    tolerances: dict = field(default_factory=dict)
    target_options: TargetOptions = TargetOptions()
    budgets: dict = field(default_factory=dict)  # {target: {budget key: value}}
    # The user's own trained models (paths to .keras files) and their data: no zoo, no training.
    keras: tuple[str, ...] = ()
    data: str | None = None
    custom_objects: tuple[str, ...] = ()  # .py files; see models/custom_objects.py
    unsafe: bool = False

    def __post_init__(self):
        for m in self.models:
            if m not in ZOO:
                raise unknown_name("model", m, ZOO)
        for t in self.targets:
            check_target(t)
        if not (self.models or self.keras) or not self.modes or not self.targets:
            raise EdgepipeError("Expected at least one model, mode and target in the run config.")
        self._check_user_models()
        for name in ("epochs", "rep_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EdgepipeError(f"Expected {name} to be a whole number >= 1. "
                                    f"Received: {name}={value!r}")

    @property
    def user_models(self) -> dict[str, str]:
        """{name: .keras path} of the user's models."""
        return {user_model_name(p): p for p in self.keras}

    def _check_user_models(self) -> None:
        if not isinstance(self.unsafe, bool):
            raise EdgepipeError(f"Expected unsafe to be true or false. Received: {self.unsafe!r}")
        if self.models and self.keras:
            raise EdgepipeError("Expected either zoo models (models) or your own .keras models "
                                "(keras / --model) in one run, not both; make two runs.")
        if not self.keras:
            if self.data is not None:
                raise EdgepipeError("data (--data) is the test and calibration data of your own "
                                    "models: give them with keras = [...] or --model my.keras; "
                                    "zoo models train on their built-in datasets.")
            return
        if self.data is None:
            raise EdgepipeError("Your own models need data: a .npz with x_train (calibration), "
                                "y_train, x_test, y_test; pass --data my.npz or set data in "
                                "[run].")
        names: dict[str, str] = {}
        for path in self.keras:
            name = user_model_name(path)
            if Path(path).suffix != ".keras":
                raise EdgepipeError(f"Expected a .keras model file. Received: {path}")
            if not Path(path).is_file():
                raise EdgepipeError(f"Model file {path} does not exist; check the path (--model"
                                    " or [run] keras).")
            if not _SAFE_NAME.match(name):
                raise EdgepipeError(f"Model name {name!r} (from {path}) may hold only letters, "
                                    "digits, '.', '_' and '-'; rename the file.")
            if name in names:
                raise EdgepipeError(f"Two models are named {name!r} ({names[name]} and {path}); "
                                    "rename one file: a model's name is its file name.")
            names[name] = path


def _unknown_key(key: str, valid, where: str) -> EdgepipeError:
    near = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else f" Valid keys: {', '.join(valid)}."
    return EdgepipeError(f"Unknown key {key!r} in {where}.{hint}")


def load_config(path: Path | None, **overrides) -> RunConfig:
    """Read `path` (or nothing), then apply command-line overrides that are not None."""
    data: dict = {}
    where = str(path)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise EdgepipeError(f"Config file {path} does not exist.") from None
        except tomllib.TOMLDecodeError as e:
            raise EdgepipeError(f"Config file {path} is not valid TOML: {e}.") from None
    sections = ("run", "tolerances", "targets", "budgets")
    for key in data:
        if key not in sections:
            raise _unknown_key(key, sections, where)
    run = dict(data.get("run", {}))
    for key in run:
        if key not in RUN_KEYS:
            raise _unknown_key(key, RUN_KEYS, f"{where} [run]")
    if "keras" in run and "models" in run:
        raise EdgepipeError(f"{where} [run] has both models (zoo) and keras (your own models); "
                            "keep one of them: make two runs.")
    base = Path(path).parent if path is not None else Path(".")
    for key in ("keras", "data", "custom_objects"):  # paths in the file: relative to the file
        if key in run:
            run[key] = _paths(run[key], key, base, f"{where} [run]", many=key != "data")
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("keras"):  # --model on the command line replaces the file's models
        run.pop("models", None)
    run.update(given)
    if "modes" in run:
        try:
            run["modes"] = tuple(QuantMode(m) for m in run["modes"])
        except ValueError:
            bad = next(m for m in run["modes"] if m not in {q.value for q in QuantMode})
            raise unknown_name("mode", bad, [q.value for q in QuantMode]) from None
    for key in ("models", "targets", "keras", "custom_objects"):
        if key in run:
            run[key] = tuple(str(p) for p in run[key]) if key in ("keras", "custom_objects") \
                else tuple(run[key])
    if run.get("keras"):
        run.setdefault("models", ())
    if "data" in run and run["data"] is not None:
        run["data"] = str(run["data"])
    names = [*ZOO, *(user_model_name(p) for p in run.get("keras", ()))]
    tolerances = data.get("tolerances", {})
    for model, per_mode in tolerances.items():
        if model not in names:
            raise unknown_name("model", model, names)
        for mode, bounds in per_mode.items():
            if mode not in {q.value for q in QuantMode}:
                raise _unknown_key(mode, [q.value for q in QuantMode],
                                   f"{where} [tolerances.{model}]")
            for key, value in bounds.items():
                if key not in TOLERANCE_KEYS:
                    raise _unknown_key(key, TOLERANCE_KEYS,
                                       f"{where} [tolerances.{model}.{mode}]")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise EdgepipeError(f"Expected a number >= 0 for {key} in "
                                        f"[tolerances.{model}.{mode}]. Received: {value!r}")
    return RunConfig(**run, tolerances=tolerances,
                     target_options=_target_options(data.get("targets", {}), where),
                     budgets=_budgets(data.get("budgets", {}), where))


def _paths(value, key: str, base: Path, where: str, many: bool):
    """A path (data) or a list of paths (keras, custom_objects) from the config file, made
    relative to the file's folder."""
    values = [value] if many and isinstance(value, str) else value
    ok = (all(_is_text(v) for v in values) if many and isinstance(values, list)
          else not many and _is_text(values))
    if not ok:
        what = "a list of paths" if many else "a path"
        raise EdgepipeError(f"Expected {what} for {key} in {where}. Received: {value!r}")
    resolve = lambda v: str(base / Path(v).expanduser())  # noqa: E731
    return [resolve(v) for v in values] if many else resolve(values)


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value)


# [targets] key -> (what it must be, test)
_TARGET_VALUES = {
    "timeout": ("a number > 0", lambda v: not isinstance(v, bool)
                and isinstance(v, (int, float)) and v > 0),
    "entry_timeout": ("a number > 0", lambda v: not isinstance(v, bool)
                      and isinstance(v, (int, float)) and v > 0),
    "ssh_python": ("a non-empty string", _is_text),
    "ssh_identity": ("a non-empty string", lambda v: v is None or _is_text(v)),
    "ssh_options": ("a list of strings", lambda v: isinstance(v, (list, tuple))
                    and all(isinstance(x, str) for x in v)),
    "accelerator": ("a non-empty string", _is_text),
}


def with_target_options(config: RunConfig, **overrides) -> RunConfig:
    """The config with command-line [targets] options (those not None) applied over it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    merged = {**dataclasses.asdict(config.target_options), **given}
    return dataclasses.replace(config, target_options=_target_options(
        merged, "the command line" if given else "the config"))


def _target_options(table: dict, where: str) -> TargetOptions:
    for key, value in table.items():
        if key not in _TARGET_VALUES:
            raise _unknown_key(key, TARGET_KEYS, f"{where} [targets]")
        expected, test = _TARGET_VALUES[key]
        if not test(value):
            raise EdgepipeError(f"Expected {expected} for {key} in {where} [targets]. "
                                f"Received: {value!r}")
    return TargetOptions(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in table.items()})


def _budgets(table: dict, where: str) -> dict:
    for target, budget in table.items():
        check_target(target)
        if not isinstance(budget, dict):
            raise EdgepipeError(f"Expected a table [budgets.\"{target}\"] in {where}.")
        for key in budget:
            if key not in BUDGET_KEYS:
                raise _unknown_key(key, BUDGET_KEYS, f"{where} [budgets.{target}]")
        check_budget(target, budget, f"{where} [budgets.{target}]")
    return dict(table)
