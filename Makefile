# Two entry points (see README Quick start).  Both create .venv on first use.
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip

.PHONY: setup demo test bench-quick clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[data,test,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/synthgrad run examples/mnist_dni.toml

test: setup
	$(VENV)/bin/python -m pytest -q

bench-quick: setup
	$(VENV)/bin/python benchmarks/wire.py --quick

clean:
	rm -rf $(VENV) runs
