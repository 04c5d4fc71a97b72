# schedagent: the two commands for a fresh machine are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo bench deps venv image lint unit vm clean

## test: install what is missing, lint and type-check, run the host unit tests, then the VM tests
test: deps venv lint unit vm

## demo: boot the sched_ext testbed and run the demo inside it
demo: deps venv image
	@$(STAMP); $(BIN)/schedagent sandbox run -- sh scripts/demo.sh && $(TOOK)

## bench: every workload x policy against EEVDF in one testbed boot (long: not part of test)
RUNS ?= 5
bench: deps venv image
	mkdir -p out
	$(BIN)/schedagent sandbox run --timeout-s 14400 -- schedagent bench suite --runs $(RUNS) \
		--md out/bench-suite.md --plot-dir out/bench-plots --out-dir out/bench

deps:
	sh scripts/install-host-deps.sh

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,testbed]'
	touch $@

# Each stage prints its wall time, so a slow stage on a fresh machine shows itself.
STAMP = s=$$(date +%s)
TOOK = echo "make: $@ took $$(( $$(date +%s) - s )) s"

image: deps venv
	@$(STAMP); $(BIN)/schedagent sandbox build && $(TOOK)

## lint: ruff (lint and format check) and mypy --strict; the layering test runs with the unit tests
LINTED := schedagent mcp_server scripts tests
lint: venv
	@$(STAMP); $(BIN)/ruff check $(LINTED) && $(BIN)/ruff format --check $(LINTED) \
		&& $(BIN)/mypy schedagent mcp_server scripts && $(TOOK)

unit: venv
	@$(STAMP); $(BIN)/python -m pytest tests/unit tests/mcp -q -p no:cacheprovider && $(TOOK)

vm: image
	@$(STAMP); sh scripts/sandbox-selftest.sh && sh scripts/run-vm-tests.sh && $(TOOK)

clean:
	rm -rf $(VENV) out build *.egg-info
