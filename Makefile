# One command to set up and run the main job, one to set up and run the tests.
# Both create (or reuse) a local virtual environment in $(VENV).
#
# torch: reused if the base Python already has one (a GPU build stays a GPU build);
# otherwise the CUDA build on machines with nvidia-smi, and the CPU build
# $(TORCH_CPU) everywhere else (on the project's machines that pin is the CPU wheel).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU ?= torch==2.13.0
STAMP := $(VENV)/.hf-faithful-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow lint format clean space-wheels

install: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "reusing the base Python's torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q $(TORCH_CPU); fi
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# Main job: prune the bundled reference model to 50% sparsity on the bundled
# calibration text, save the smaller model with its card, then evaluate it.
DEMO_OUTPUT ?= outputs/reference-pruned-50

demo: $(STAMP)
	$(VENV)/bin/hf-faithful prune --output $(DEMO_OUTPUT)
	$(VENV)/bin/hf-faithful evaluate $(DEMO_OUTPUT) --no-perplexity --tasks hff_cloze

test: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Spaces deployable as is: Hugging Face installs a Space's requirements.txt BEFORE it copies
# the Space's files (the file alone is mounted into the build), so neither a wheel in the
# folder nor an unpublished git URL can be pip-installed there. This builds the hf-faithful
# wheel (offline, from this checkout) and unpacks it next to each app.py (hf_faithful/ and
# its .dist-info), which is what `import hf_faithful` finds first; requirements.txt lists
# hf-faithful's own dependencies. Then: hf upload <user>/<space> spaces/<name> --repo-type space
SPACES_DIR ?= spaces
SPACE_NAMES = $(notdir $(patsubst %/app.py,%,$(wildcard $(SPACES_DIR)/*/app.py)))
SPACE_PY = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
SPACE_WHEEL_DIR ?= build/space-wheel

space-wheels:
	rm -rf $(SPACE_WHEEL_DIR)
	$(SPACE_PY) -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(SPACE_WHEEL_DIR) .
	@wheel=$$(ls $(SPACE_WHEEL_DIR)/hf_faithful-*-py3-none-any.whl); \
	for space in $(SPACE_NAMES); do \
	  dest=$(SPACES_DIR)/$$space; \
	  rm -rf $$dest/hf_faithful $$dest/hf_faithful-*.dist-info; \
	  $(SPACE_PY) -m zipfile -e $$wheel $$dest || exit 1; \
	  echo "$$dest: $$(basename $$wheel) unpacked next to app.py"; \
	done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
