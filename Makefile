# tfnas: `make demo` and `make test` set everything up in .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean bench

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[cpu,test]"
	$(BIN)/pip install --quiet --no-deps tensorflow-serving-api==2.21.0
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 --nbmake tests examples

demo: $(STAMP)
	$(BIN)/python -m tfnas.cli demo

clean:
	rm -rf $(VENV) build *.egg-info
