# smtpbench developer tasks. `make test` is what CI runs (after .ci/run installs).
#
# They install into BASE_PYTHON (the python3 first on PATH), or PYTHON if given. A distribution's own
# python3 (Debian 12, Ubuntu 23.04 and later) refuses pip installs (PEP 668: EXTERNALLY-MANAGED in its
# stdlib, unless it runs in a virtualenv); then they make and use a virtualenv, .venv, instead.
BASE_PYTHON ?= python3
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell $(BASE_PYTHON) -c 'import os, sys, sysconfig; print(".venv/bin/python" if sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else "$(BASE_PYTHON)")'),$(BASE_PYTHON))
endif
PIP ?= $(PYTHON) -m pip

.PHONY: install test bench quickstart clean

install:
	@if [ "$(PYTHON)" = .venv/bin/python ] && [ ! -x .venv/bin/python ]; then \
	  echo "$(BASE_PYTHON) is the system's own (PEP 668): installing into a virtualenv, .venv"; \
	  $(BASE_PYTHON) -m venv .venv || { echo "make: no venv module (Debian: apt-get install python3-venv)" >&2; exit 1; }; \
	fi
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
