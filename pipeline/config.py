"""The run configuration: a TOML file where every key is optional and the defaults run.

    [run]
    models = ["mlp_swish", "cnn_step"]     # default: the whole zoo
    modes = ["float32", "int8"]            # default: all five
    targets = ["host", "host-ref"]         # default; also tflm, qemu-aarch64, ethos-u,
                                           # ssh://user@host[:port]  (README "Targets")
    seed = 0
    epochs = 300                           # maximum; early stopping ends most runs sooner
    rep_samples = 200
    layer_samples = 32                     # test samples of every layer's Keras output in the
                                           # bundle (per-layer error; fewer for large layers);
                                           # 0 turns per-layer error off
    executor = "local"                     # or "dask://HOST:PORT": a Dask cluster (README
                                           # "Running on a cluster"); --executor
    # Your own trained models instead of the zoo (paths relative to this file); no training:
    # keras = ["my.keras"]                 # each model's name is its file name without .keras
    # data = "my.npz"                      # x_train (calibration), y_train, x_test, y_test
    # custom_objects = ["layers.py"]       # modules defining the models' custom layers
    # tflite = ["my_int8.tflite"]          # files you already have, checked against their model
    # unsafe = false                       # true: Keras safe_mode off (Lambda layers)

    [tolerances.cnn_step.int8]             # override derived bounds for one model and mode
    max_abs = 0.5
    task_delta = 0.02
    min_top1_agreement = 0.95              # classifiers; default 0.97 in int8 and int16x8

    [targets]                              # how to reach and bound the targets
    timeout = 1800                         # seconds per target
    entry_timeout = 300                    # seconds per entry (a hang fails only that entry)
    ssh_python = "python3"                 # the board's Python
    ssh_identity = "~/.ssh/id_ed25519"     # default: ssh's own (agent, ~/.ssh/config)
    ssh_options = ["-o", "ProxyJump=gw"]
    accelerator = "ethos-u55-256"          # ethos-u: Vela's --accelerator-config

    [targets.pools]                        # boards of one kind as one target, pool:NAME
    pi4 = ["ssh://pi@board-a", "ssh://pi@board-b:2222"]   # (README "Board pools")

    [budgets.tflm]                         # per target; a variant over budget fails
    max_model_bytes = 100_000
    max_arena_bytes = 65_536
    max_latency_ms = 5.0

    [repair]                               # a variant that fails or that a target refuses
    enabled = true                         # (pipeline/repair_settings.py; --no-repair)
    max_conversions = 8
    precisions = ["int16", "float32"]

Unknown keys are errors that suggest the nearest valid key. Every value's type and range is
checked before any work, by the rule its key has in RUN_RULES, TOLERANCE_RULES, TARGET_RULES
(pipeline/targets/options.py) or BUDGET_RULES (pipeline/budgets.py): lists hold distinct names,
seed is 0 ... 2**32 - 1, every float is finite (NaN and inf are refused), timeouts are at most a
week.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ..converters.modes import QuantMode
from ..core.errors import EdgepipeError, unknown_key, unknown_name
from ..models.loading import SAVED_MODEL, model_kind
from ..models.zoo import ZOO
from .budgets import BUDGET_KEYS, check_budget
from .executors import FORMS as EXECUTORS
from .executors import LOCAL, check_executor
from .repair_settings import RepairSettings, check_repair, repair_settings
from .targets import TARGET_RULES, TargetOptions, check_target, get_target
from .targets.pool import check_pools
from .values import COUNT, FLAG, SEED, TABLE, Rule, check_table, is_text, names, number

DEFAULT_TARGETS = ("host", "host-ref")
TARGET_KEYS = tuple(f.name for f in dataclasses.fields(TargetOptions))
SECTIONS = ("run", "tolerances", "targets", "budgets", "repair")
# [run] key -> what it must be; keras, tflite, data and custom_objects are paths (`_paths`).
RUN_RULES = {
    "models": names('["mlp_swish", "cnn_step"]'),
    "modes": names('["float32", "int8"]'),
    "targets": names('["host", "tflm"]'),
    "seed": SEED,
    "epochs": COUNT,
    "rep_samples": COUNT,
    "layer_samples": number(0, whole=True),
    "unsafe": FLAG,
    "executor": Rule(f"{EXECUTORS}, e.g. dask://10.0.0.5:8786", is_text),
}
RUN_KEYS = (*RUN_RULES, "keras", "tflite", "data", "custom_objects")
# [tolerances.<model>.<mode>] key -> what it must be (written into manifest.json: JSON has no
# NaN or Infinity)
TOLERANCE_RULES = {"max_abs": number(0), "max_rel": number(0), "task_delta": number(0),
                   "min_top1_agreement": number(0, 1)}
TOLERANCE_KEYS = tuple(TOLERANCE_RULES)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")  # a bundle entry id's characters


def user_model_name(path) -> str:
    """A user model's name in the run: its file name without `.keras`."""
    return Path(path).stem


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...] = tuple(ZOO)
    modes: tuple[QuantMode, ...] = tuple(QuantMode)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    seed: int = 0
    epochs: int = 300
    rep_samples: int = 200
    layer_samples: int = 32  # per-layer references: at most this many test samples; 0: off
    # {model: {mode: {bound: value}}}: replaces the derived value of each bound named
    tolerances: dict = field(default_factory=dict)
    target_options: TargetOptions = TargetOptions()
    budgets: dict = field(default_factory=dict)  # {target: {budget key: value}}
    # The user's own trained models (paths to .keras files) and their data: no zoo, no training.
    keras: tuple[str, ...] = ()
    data: str | None = None
    custom_objects: tuple[str, ...] = ()  # .py files; see models/custom_objects.py
    unsafe: bool = False
    # .tflite files the user already has, each checked against the Keras model it came from
    tflite: tuple[str, ...] = ()
    repair: dict = field(default_factory=dict)  # the [repair] table (repair_settings.py)
    no_repair: bool = False  # --no-repair: no model is repaired, whatever [repair] says
    executor: str = LOCAL  # where model jobs and portable parity chunks run (executors.py)

    def __post_init__(self):
        check_table(RUN_RULES, vars(self), "the run config")
        check_executor(self.executor)
        for m in self.models:
            if m not in ZOO:
                raise unknown_name("model", m, ZOO)
        for t in self.targets:
            get_target(t).check_options(self.target_options)  # e.g. a pool it defines
        if not (self.models or self.keras) or not self.modes or not self.targets:
            raise EdgepipeError("Expected at least one model, mode and target in the run config.")
        self._check_user_models()
        self.given_tflite  # noqa: B018 (refuses a file no model claims, before any work)

    def repair_for(self, model: str) -> RepairSettings:
        return repair_settings(self.repair, model, False if self.no_repair else None)

    @property
    def user_models(self) -> dict[str, str]:
        """{name: .keras path} of the user's models."""
        return {user_model_name(p): p for p in self.keras}

    @property
    def given_tflite(self) -> dict[str, tuple[str, ...]]:
        """{model name: its .tflite files}: with one model, every file is its; with several, a
        file belongs to the model whose name its file name starts with (the longest)."""
        if self.tflite and not self.keras:
            raise EdgepipeError("--tflite files are checked against the Keras model they came "
                                "from: give it with --model my.keras (and --data).")
        given: dict[str, list] = {}
        names = sorted(self.user_models, key=len, reverse=True)
        for path in self.tflite:
            if Path(path).suffix != ".tflite" or not Path(path).is_file():
                raise EdgepipeError(f"Expected an existing .tflite file for --tflite. Received: "
                                    f"{path}")
            stem = Path(path).stem
            owner = names[0] if len(names) == 1 else next(
                (n for n in names if stem.startswith(n)), None)
            if owner is None:
                raise EdgepipeError(f"{path}: no --model claims it; with several models, a "
                                    "--tflite file's name must start with its model's name "
                                    f"({', '.join(sorted(names))}).")
            given.setdefault(owner, []).append(path)
        return {name: tuple(paths) for name, paths in given.items()}

    def _check_user_models(self) -> None:
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
        seen: dict[str, str] = {}
        for path in self.keras:
            name = user_model_name(path)
            if model_kind(Path(path)) != SAVED_MODEL and not Path(path).is_file():
                raise EdgepipeError(f"Model file {path} does not exist; check the path (--model"
                                    " or [run] keras).")
            if not _SAFE_NAME.match(name):
                raise EdgepipeError(f"Model name {name!r} (from {path}) may hold only letters, "
                                    "digits, '.', '_' and '-'; rename the file.")
            if name in seen:
                raise EdgepipeError(f"Two models are named {name!r} ({seen[name]} and {path}); "
                                    "rename one file: a model's name is its file name.")
            seen[name] = path


def load_config(path: Path | None, **overrides) -> RunConfig:
    """Read `path` (or nothing), then apply command-line overrides that are not None. Every
    value's type and range is checked here, before any work, with the file and key named."""
    data = _read(path) if path is not None else {}
    where = str(path)
    for key, value in data.items():
        if key not in SECTIONS:
            raise unknown_key(key, SECTIONS, where)
        TABLE.check(f"[{key}]", value, where)
    run = dict(data.get("run", {}))
    for key in run:
        if key not in RUN_KEYS:
            raise unknown_key(key, RUN_KEYS, f"{where} [run]")
    check_table(RUN_RULES, run, f"{where} [run]")
    if "keras" in run and "models" in run:
        raise EdgepipeError(f"{where} [run] has both models (zoo) and keras (your own models); "
                            "keep one of them: make two runs.")
    base = Path(path).parent if path is not None else Path(".")
    for key in ("keras", "tflite", "data", "custom_objects"):  # relative to the file
        if key in run:
            run[key] = _paths(run[key], key, base, f"{where} [run]", many=key != "data")
    given = {k: v for k, v in overrides.items() if v is not None}
    check_table(RUN_RULES, given, "the command line")
    if given.get("keras"):  # --model on the command line replaces the file's models
        run.pop("models", None)
    run.update(given)
    if "modes" in run:
        try:
            run["modes"] = tuple(QuantMode(m) for m in run["modes"])
        except ValueError:
            bad = next(m for m in run["modes"] if m not in {q.value for q in QuantMode})
            raise unknown_name("mode", bad, [q.value for q in QuantMode]) from None
    for key in ("models", "targets", "keras", "tflite", "custom_objects"):
        if key in run:
            run[key] = tuple(str(p) for p in run[key])
    if run.get("keras"):
        run.setdefault("models", ())
    if "data" in run:
        run["data"] = str(run["data"])
    names = [*ZOO, *(user_model_name(p) for p in run.get("keras", ()))]
    tolerances = data.get("tolerances", {})
    _check_tolerances(tolerances, names, where)
    repair = data.get("repair", {})
    check_repair(repair, names, where)
    return RunConfig(**run, tolerances=tolerances, repair=repair,
                     target_options=_target_options(data.get("targets", {}), where),
                     budgets=_budgets(data.get("budgets", {}), where))


def _read(path: Path) -> dict:
    """The config file's TOML, or one line saying why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise EdgepipeError(f"Config file {path} does not exist.")
    if not path.is_file():  # a folder, or a FIFO that would block the read for ever
        raise EdgepipeError(f"Config file {path} is not a regular file; give a .toml file.")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise EdgepipeError(f"Cannot read config file {path}: {e.strerror}.") from None
    except UnicodeDecodeError as e:
        raise EdgepipeError(f"Config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x}"
                            f" at offset {e.start}); save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as e:
        raise EdgepipeError(f"Config file {path} is not valid TOML: {e}.") from None
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        raise EdgepipeError(f"Config file {path} nests arrays or tables hundreds of levels "
                            "deep; no edgepipe key takes more than a list of names.") from None


def _check_tolerances(tolerances: dict, names: list[str], where: str) -> None:
    """[tolerances.<model>.<mode>]: known models and modes, each bound a finite number."""
    modes = [q.value for q in QuantMode]
    for model, per_mode in tolerances.items():
        if model not in names:
            raise unknown_name("model", model, names)
        TABLE.check(f"[tolerances.{model}]", per_mode, where)
        for mode, bounds in per_mode.items():
            if mode not in modes:
                raise unknown_key(mode, modes, f"{where} [tolerances.{model}]")
            table = f"[tolerances.{model}.{mode}]"
            TABLE.check(table, bounds, where)
            for key in bounds:
                if key not in TOLERANCE_RULES:
                    raise unknown_key(key, TOLERANCE_KEYS, f"{where} {table}")
            check_table(TOLERANCE_RULES, bounds, f"{where} {table}")


def _paths(value, key: str, base: Path, where: str, many: bool):
    """A path (data) or a list of paths (keras, custom_objects) from the config file, made
    relative to the file's folder."""
    values = [value] if many and isinstance(value, str) else value
    ok = (all(is_text(v) for v in values) if many and isinstance(values, list)
          else not many and is_text(values))
    if not ok:
        what = "a list of paths" if many else "a path"
        raise EdgepipeError(f"Expected {key} in {where} to be {what}. Received: {value!r}.")
    resolve = lambda v: str(base / Path(v).expanduser())  # noqa: E731
    return [resolve(v) for v in values] if many else resolve(values)


def with_target_options(config: RunConfig, **overrides) -> RunConfig:
    """The config with command-line [targets] options (those not None) applied over it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    check_table(TARGET_RULES, given, "the command line")
    return dataclasses.replace(config, target_options=dataclasses.replace(
        config.target_options, **given))


def _target_options(table: dict, where: str) -> TargetOptions:
    for key in table:
        if key not in TARGET_RULES:
            raise unknown_key(key, TARGET_KEYS, f"{where} [targets]")
    check_table(TARGET_RULES, table, f"{where} [targets]")
    table = dict(table)
    if "pools" in table:
        check_pools(table["pools"], f"{where} [targets.pools]")
        table["pools"] = {name: tuple(boards) for name, boards in table["pools"].items()}
    return TargetOptions(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in table.items()})


def _budgets(table: dict, where: str) -> dict:
    for target, budget in table.items():
        check_target(target)
        TABLE.check(f'[budgets."{target}"]', budget, where)
        for key in budget:
            if key not in BUDGET_KEYS:
                raise unknown_key(key, BUDGET_KEYS, f"{where} [budgets.{target}]")
        check_budget(target, budget, f"{where} [budgets.{target}]")
    return dict(table)
