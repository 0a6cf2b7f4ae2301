# The README's two set-up commands are `make demo` and `make test`; both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheels of these two import together on our CI machines; override elsewhere,
# e.g. `make install TORCH_SPEC="torch torchvision --index-url ..."`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo table1 lint format clean bench bench-quick cluster-test

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

# scripts/slurm/train.sbatch on a real SLURM (tests/test_slurm.py): starts a throwaway
# one-node cluster (installs slurm-wlm, slurmdbd, munge and mariadb-server with apt-get when
# missing; needs root), runs the tests, stops it (docs/cluster.md). About 10 min on 2 cores.
cluster-test: install
	scripts/slurm/local_cluster.sh run $(PY) -m pytest -q -m slurm tests/test_slurm.py

demo: install
	$(VENV)/bin/landslide-lit demo

# Table 1 over seeds with intervals (results/<name>/table.md); needs the real cubes unless
# TABLE1_ARGS="--synthetic --model.encoder_weights null" (see README).
table1: install
	$(VENV)/bin/landslide-lit reproduce $(TABLE1_ARGS)

# Benchmarks against the performance targets (docs/performance.md); results in
# build/bench/results.md, ending with the table of targets. About 21 min on 2 CPU cores (the first
# run writes a 2.9 GB cube and 640 MB of GeoTIFFs); bench-quick runs smaller models and data.
bench: install
	$(PY) bench/run_all.py

bench-quick: install
	$(PY) bench/run_all.py --quick

lint: install
	$(VENV)/bin/ruff check landslide_lit tests bench
	$(VENV)/bin/ruff format --check landslide_lit tests bench
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix landslide_lit tests bench
	$(VENV)/bin/ruff format landslide_lit tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
