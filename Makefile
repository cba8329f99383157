# Set-up, quickstart and tests. Every target installs what it needs into a project-local virtual environment.
.PHONY: install quickstart test test-fast quality style clean

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines: the small CPU build of torch. On GPU machines: `make install TORCH_SPEC=torch` (a CUDA build).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)
export HF_HUB_DISABLE_TELEMETRY := 1

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(STAMP)

# The offline quickstart pipeline on its embedded defaults (local hub in outputs/hub).
quickstart: install
	HF_HUB_OFFLINE=1 $(BIN)/vital pipeline --config recipes/quickstart/pipeline.yaml

# The suite runs under .ci/clean_checkout.py, which fails the run if a test wrote into the checkout (tmp_path only).
test: install
	HF_HUB_OFFLINE=1 $(BIN)/python .ci/clean_checkout.py -- $(BIN)/python -m pytest tests

# For development: the suite without the tests marked slow (each over ~7 s); `make test` stays the test command.
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python .ci/clean_checkout.py -- $(BIN)/python -m pytest tests -m "not slow"

# Qwen2-VL's processors need torchvision, which does not import beside torch 2.13.0+cpu: a second environment with
# a working pair (a CUDA build, about 6 GB, that also runs on CPU) runs the tests that need it.
.PHONY: test-torchvision
TV_VENV ?= .venv-torchvision
TV_STAMP := $(TV_VENV)/.installed-dev

$(TV_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TV_VENV)/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(TV_VENV)/bin/python -m pip install --quiet -e ".[dev,biomedclip]"
	touch $@

test-torchvision: $(TV_STAMP)
	HF_HUB_OFFLINE=1 $(TV_VENV)/bin/python -m pytest tests/testing/test_tiny_qwen2_vl.py tests/testing/test_qwen2_vl_resume.py \
		tests/selector/test_biomedclip.py

quality: install
	$(BIN)/ruff check vital recipes tests
	$(BIN)/ruff format --check vital recipes tests

style: install
	$(BIN)/ruff check --fix vital recipes tests
	$(BIN)/ruff format vital recipes tests

clean:
	rm -rf $(VENV) .venv-torchvision outputs .pytest_cache .ruff_cache
