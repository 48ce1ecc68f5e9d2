# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision versions that pair on Python 3.11 (see README, "Installation").
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-slow venv clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The embedded default: the demo CLIP (shipped in sfp/assets/demo) on the synthetic demo benchmark.
# Every method preset (a VFM-assisted one reads the demo CLIP's own image tower: vfm=demo), then SFP's 2^3
# component sweep; prints both tables and the reference points.
DEMO_RUNS := outputs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
DEMO_PRESETS ?= glob(*)

demo: $(VENV)/.installed
	$(PY) -m sfp.demo prepare
	$(PY) main.py -m 'method=$(DEMO_PRESETS)' vfm=demo hydra.sweep.dir=$(DEMO_RUNS)/presets
	$(PY) main.py -m mitigator=on,off enhancer=on,off integrator=on,off hydra.sweep.dir=$(DEMO_RUNS)/components
	@echo; echo "== method presets on the demo benchmark (mIoU, %) =="
	$(PY) -m analysis main --no-published --runs $(DEMO_RUNS)/presets
	@echo; echo "== SFP component ablation on the demo benchmark (mIoU, %) =="
	$(PY) -m analysis components --runs $(DEMO_RUNS)/components
	@echo; echo "== reference points =="
	$(PY) -m sfp.demo reference

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The tests marked `slow` (the installed-wheel check); `make test` leaves them out.
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

clean-demo:
	rm -rf .cache/sfp/demo
