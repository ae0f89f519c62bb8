# Two commands do all set-up on a fresh clone (only Python 3.11 needed):
#   make run    create .venv, install, start the app on the built-in demo night (http://127.0.0.1:7860)
#   make test   create .venv, install, run the tests offline
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED = False

.PHONY: run test install bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sleeplm-assistant serve --host 127.0.0.1 --port 7860

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV)
