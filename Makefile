# Two commands for a newcomer: `make pipeline` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= artifacts

.PHONY: setup pipeline test test-all lint bench emulator device-test bad-inputs-table clean distclean

# Byte-compile edgepipe's own modules each time (fast when fresh): pip compiles what it installs,
# but not an editable install, and where PYTHONDONTWRITEBYTECODE is set (CI, containers) every
# process (each command, worker, runner) compiled them again: `edgepipe --help` 0.40 -> 0.27 s.
setup: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 core models converters pipeline device_tests > /dev/null

# Re-install when the project's dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu install the venv module" \
	       "(apt-get install python3-venv), or set PYTHON=/path/to/python3.11." >&2; exit 2; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,micro,npu,cluster]"
	@touch $(STAMP)

pipeline: setup
	$(BIN)/edgepipe run --out $(OUT)/run

# What a contributor runs before each commit (a few minutes): every test but those marked slow.
test: setup
	$(BIN)/python -m pytest -m "not slow"

# All of it: also the slow tests (full trainings, kills, large fuzz runs, the bench). CI runs
# this with the target packages installed and EDGEPIPE_REQUIRE_TARGETS=1 (.ci/run).
test-all: setup
	$(BIN)/python -m pytest

# The emulated Arm board: an arm64 Debian sysroot with Python 3.11, numpy and ai-edge-litert, in
# ~/.cache/edgepipe (EDGEPIPE_CACHE). Needs qemu-user-static and debootstrap (apt).
emulator: setup
	$(BIN)/edgepipe emulator setup

# Parity of the last `make pipeline` run on a board: make device-test DEVICE=ssh://pi@board
device-test: setup
	@test -n "$(DEVICE)" || { echo "error: set DEVICE, e.g. make device-test DEVICE=ssh://pi@raspberrypi.local" >&2; exit 2; }
	$(BIN)/edgepipe parity $(OUT)/run --target $(DEVICE)

lint: setup
	$(BIN)/ruff check .

# Speed figures, each a ratio to a baseline measured in the same run (bench/bench.py): three
# cold/warm runs of the zoo, then the light commands and the invokes. Writes bench/results.json.
bench: setup
	$(BIN)/python -m bench.bench

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

# docs/bad-inputs.md from the bad-input cases (tests/bad_inputs_*.py), each run as the real command.
bad-inputs-table: setup
	EDGEPIPE_BAD_INPUTS_TABLE=docs/bad-inputs.md $(BIN)/python -m pytest -q -m "" tests/test_bad_input_table.py::test_bad_input
