# make install: a .venv with compress and its test tools (idempotent; fast when nothing changed)
# make run:     compress run pipelines/mnist.toml   (PIPELINE=... to pick another)
# make test:    the test suite
# make bench:   the performance benchmark
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PIPELINE ?= pipelines/mnist.toml
# Offline machines keep MNIST in ../shared/data; elsewhere torchvision downloads it into ./data.
DATA_ROOT ?= $(firstword $(wildcard ../shared/data))
DATA_FLAG := $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)
NO_DATA_NOTE := no ../shared/data: MNIST will be downloaded into ./data; set DATA_ROOT=/path/to/data to use a local copy

.PHONY: install run test bench lint clean

install: $(STAMP)

# editable_mode=strict: a path entry (a tree of links under build/), so that `import compress`
# finds this package even beside a folder named compress/ (a clone's); a module added or
# removed changes its folder, which installs again.
PACKAGE_DIRS := $(shell find compress models -type d -not -name __pycache__)

$(STAMP): pyproject.toml $(PACKAGE_DIRS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

run: install
	@$(if $(DATA_ROOT),:,echo "$(NO_DATA_NOTE)")
	$(BIN)/compress run $(PIPELINE) $(DATA_FLAG)

test: install
	$(BIN)/python -m pytest

bench: install
	@$(if $(DATA_ROOT),:,echo "$(NO_DATA_NOTE)")
	$(BIN)/python bench/run.py $(DATA_FLAG)

lint: install
	$(BIN)/ruff check compress models tests bench
	$(BIN)/ruff format --check compress models tests bench

clean:
	rm -rf runs .pytest_cache
