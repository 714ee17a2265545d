# make run   set up if needed, fetch the default model's weights if missing, serve on :6543
# make test  set up if needed, then run every test (slow and browser ones included)
VENV ?= .venv
PYTHON := $(VENV)/bin/python
CONFIG ?= configs/production.ini
MODEL ?= rtmdet_tiny

.PHONY: install run dev test bench clean
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt scripts/install.sh pyproject.toml
	bash scripts/install.sh

run: install
	$(PYTHON) mmdetectionl.py --config $(CONFIG) download $(MODEL)
	$(PYTHON) web.py $(CONFIG)

dev:
	$(MAKE) run CONFIG=configs/development.ini

test: install
	bash scripts/install-browser.sh
	bash scripts/install-redis.sh
	$(PYTHON) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf uploads/*.png uploads/*.json uploads/.queue uploads/.daemon.* uploads/.worker.*

bench: install
	$(PYTHON) bench/benchmark.py --output docs/benchmarks.md
	$(PYTHON) bench/scaling.py --output docs/scaling.md
	$(PYTHON) bench/runtimes.py --output docs/runtimes.md
	$(PYTHON) bench/tiles.py --output docs/tiles.md
	$(PYTHON) bench/long_jobs.py --output docs/long_jobs.md
