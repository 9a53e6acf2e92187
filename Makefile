# femo: two commands.  `make test` builds .venv and runs the tests; `make report` runs the main job.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?=
TAG    ?= demo
ANNOTATE ?=
EMBED  ?=

.PHONY: test report venv clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(VENV)/bin/femo models fetch --face-weights
	touch $@

venv: $(VENV)/.installed

# the test suite and every notebook as stored (nbval --nbval-lax: cells must run; outputs are not compared)
test: venv
	$(PY) -m pytest -q --nbval-lax tests notebooks

report: venv
	$(VENV)/bin/femo pipeline $(if $(DATA),--data $(DATA)) $(if $(EMBED),--embeddings $(EMBED)) $(if $(ANNOTATE),--annotate) --tag $(TAG)

clean-venv:
	rm -rf $(VENV)
