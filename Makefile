# crowdtune: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0

.PHONY: setup demo test lint bench clean

$(BIN)/crowdtune: pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null)
	@# fluidsynth + the FluidR3 GM SoundFont render the starter corpus (model/scores.py).
	@command -v fluidsynth >/dev/null && test -f /usr/share/sounds/sf2/FluidR3_GM.sf2 || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends \
			fluidsynth fluid-soundfont-gm >/dev/null)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# The CPU build of torch first where there is no GPU: a bare `torch` pulls CUDA (GBs).
	@if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; \
		else $(BIN)/pip install -q torch==$(TORCH_VERSION); fi
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

setup: $(BIN)/crowdtune

demo: setup
	$(BIN)/crowdtune pretrain
	$(BIN)/crowdtune simulate --quick
	$(BIN)/crowdtune generate --guild demo -n 2 --out out/demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_quality.py
	$(BIN)/python bench/bench_round.py
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_loop_lag.py

clean:
	rm -rf out .pytest_cache
