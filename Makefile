# smtpbench developer tasks. `make test` is what CI runs (after .ci/run installs).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install test bench quickstart clean

install:
	$(PIP) install -q -e '.[test]'

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m benchmarks

quickstart: install
	$(PYTHON) -m smtpbench bench scenarios/quickstart.toml

clean:
	rm -rf reports/*/ results/ .pytest_cache build *.egg-info
