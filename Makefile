# tfnas: `make demo` and `make test` set everything up in .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[cpu,test]"
	touch $(STAMP)

install: $(STAMP)

# Two processes (pytest-xdist), one per core of the 2-core machines the suite is sized for; a
# file's tests stay in one process so its module fixtures (supernets, exports) are built once.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 -n 2 --dist loadfile --nbmake tests examples

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check .

demo: $(STAMP)
	$(BIN)/python -m tfnas.cli demo

clean:
	rm -rf $(VENV) build *.egg-info
