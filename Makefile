# smtpbench developer tasks. `make test` is what CI runs (after .ci/run installs).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install test bench quickstart clean

install:
	$(PIP) install -q -e '.[test]'
	@# An editable install compiles no bytecode, and with PYTHONDONTWRITEBYTECODE set every
	@# command would compile smtpbench again (~0.4 s a start on this machine).
	$(PYTHON) -m compileall -q smtpbench >/dev/null

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) -m benchmarks

quickstart: install
	$(PYTHON) -m smtpbench bench scenarios/quickstart.toml

clean:
	rm -rf reports/*/ results/ .pytest_cache build *.egg-info
