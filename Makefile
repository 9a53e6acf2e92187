# femo: two commands.  `make test` builds .venv and runs the tests; `make report` runs the main job.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?=
TAG    ?= demo

.PHONY: test report venv models clean-venv bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(VENV)/bin/femo models fetch --face-weights
	touch $@

venv: $(VENV)/.installed

models: venv
	$(VENV)/bin/femo models fetch --face-weights

test: venv
	$(PY) -m pytest -q tests

report: venv
	$(VENV)/bin/femo pipeline $(if $(DATA),--data $(DATA)) --tag $(TAG)

bench: venv
	$(PY) benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
