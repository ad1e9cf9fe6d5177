# The two commands of the README:
#   make demo   set up, then run the offline preset end to end (CPU, no download)
#   make test   set up, then lint, type-check and run the whole test suite
#   make test-fast  while working: lint and the tests not marked slow (a few minutes)
#
# Setup creates .venv once (again whenever pyproject.toml changes). Torch comes
# from the CPU wheel (torch==2.13.0) on machines without an NVIDIA driver and from
# the normal build where `nvidia-smi` exists; override with TORCH_SPEC=....

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup demo test test-fast lint presets browser

setup: $(VENV)/.installed

# Headless Chromium renders the HTML reports in the browser tests: Debian's package,
# installed when missing and running as root (as CI does); without it those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed: the report browser tests will skip"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,gemini,argilla,ray]"
	touch $@

demo: setup
	$(BIN)/agfsync generate --preset offline

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Test modules run on TEST_WORKERS processes (pytest-xdist), each module whole on one
# worker (--dist loadfile) so its fixtures are built once; `pytest` alone runs them one
# after the other.
TEST_WORKERS ?= auto
test: lint browser
	$(BIN)/pytest --numprocesses $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

test-fast: lint
	$(BIN)/pytest -m "not slow" --numprocesses $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

presets: setup
	$(BIN)/agfsync presets export
