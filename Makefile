# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision versions that pair on Python 3.11 (see README, "Installation").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The embedded default (demo model, demo benchmark) under three methods: plain CLIP, MaskCLIP and SFP.
demo: $(VENV)/.installed
	$(PY) -m sfp.demo prepare
	$(PY) main.py -m method=clip,maskclip,sfp

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean-demo:
	rm -rf .cache/sfp/demo
