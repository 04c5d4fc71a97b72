# schedagent: the two commands for a fresh machine are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo bench deps venv image unit vm clean

## test: install what is missing, run the host unit tests, then the VM tests in the testbed
test: deps venv unit vm

## demo: boot the sched_ext testbed and run the demo inside it
demo: deps venv image
	$(BIN)/schedagent sandbox run -- sh scripts/demo.sh

## bench: every workload x policy against EEVDF in one testbed boot (long: not part of test)
RUNS ?= 5
bench: deps venv image
	mkdir -p out
	$(BIN)/schedagent sandbox run --timeout-s 14400 -- schedagent bench suite --runs $(RUNS) \
		--md out/bench-suite.md --plot-dir out/bench-plots --out-dir out/bench

deps:
	sh scripts/install-host-deps.sh

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,testbed]'
	touch $@

image: deps venv
	$(BIN)/schedagent sandbox build

unit: venv
	$(BIN)/python -m pytest tests/unit tests/mcp -q -p no:cacheprovider

vm: image
	sh scripts/sandbox-selftest.sh
	sh scripts/run-vm-tests.sh

clean:
	rm -rf $(VENV) out build *.egg-info
