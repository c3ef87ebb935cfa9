# vidloom: `make demo` and `make test` set up everything on a fresh machine (idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidloom-installed
EXTRAS ?= video,flows,caption,text,dev,annotate
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export RAY_USAGE_STATS_ENABLED=0
export PREFECT_SERVER_ANALYTICS_ENABLED=false

.PHONY: demo test install system-deps prefect-server deploy bench lint clean devset

system-deps:
	@if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null \
	   || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] \
	   || [ ! -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || ! command -v chromium >/dev/null; then \
	  echo "installing ffmpeg, fonts and chromium (apt; chromium renders the report in tests)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg fonts-dejavu-core fonts-wqy-microhei chromium >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU torch wheel first (see ENVIRONMENT notes in the README)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: system-deps $(STAMP)

demo: install
	$(VENV)/bin/vidloom samples demo samples/demo
	PREFECT_HOME=$${PREFECT_HOME:-$(CURDIR)/.prefect} $(VENV)/bin/vidloom curate samples/demo --out out/demo --preset tiny --set filters.min_duration_s=1.5 --report out/demo/report.html
	$(VENV)/bin/vidloom train --preset tiny --data out/demo/shards --out out/demo/run --vae-steps 150 --steps 200 --quiet
	$(VENV)/bin/vidloom generate --ckpt out/demo/run --prompt "A red ball rolls across a blue floor." --out out/demo/generated.mp4
	@echo "demo video: out/demo/generated.mp4 (a tiny CPU model: blurry colour fields, see docs/trainers.md 'Training')"

test: install
	PREFECT_HOME=$$(mktemp -d) $(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: install
	PREFECT_HOME=$$(mktemp -d) $(PY) -m pytest -q $(PYTEST_ARGS)

prefect-server: install
	PREFECT_HOME=$(CURDIR)/.prefect $(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200

deploy: install
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} \
	  $(VENV)/bin/vidloom deploy $${WATCH:-samples/demo} --out $${OUT:-out/watch} --cron "$${CRON:-*/15 * * * *}" --preset tiny

# Real-footage development videos (about 60 MB), fetched once into a cache outside the repo and
# checked against bench/devset/MANIFEST.tsv; see bench/devset/README.md.
DEVSET ?= $(HOME)/.cache/vidloom/devset
devset:
	bash bench/devset/ensure.sh $(DEVSET)

# The CPU benchmarks bench/README.md quotes, each writing its JSON (command, date, machine, versions,
# precision, threads) under $(BENCH_OUT). Not here: `vidloom bench split --real` (make devset first)
# and the GPU figures (bench/gpu_check.sh on a GPU machine). About 30 min on 2 quiet cores.
BENCH_OUT ?= bench/results
bench: install
	$(VENV)/bin/vidloom bench split --json $(BENCH_OUT)/split_synthetic.json
	PREFECT_HOME=$$(mktemp -d) $(VENV)/bin/vidloom bench curate --json $(BENCH_OUT)/curate.json
	PREFECT_HOME=$$(mktemp -d) $(VENV)/bin/vidloom bench filters --json $(BENCH_OUT)/filters.json
	$(VENV)/bin/vidloom bench caption --json $(BENCH_OUT)/caption.json
	$(VENV)/bin/vidloom bench train --presets tiny --json $(BENCH_OUT)/train_cpu.json
	$(VENV)/bin/vidloom bench attention --threads 1 --budget-s 400 --json $(BENCH_OUT)/attention_cpu.json
	$(PY) bench/transnet_gpu.py --json $(BENCH_OUT)/transnet_cpu.json

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf out samples .prefect
