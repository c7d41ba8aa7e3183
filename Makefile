# The README's two Quick start commands: `make demo` and `make test`.  Both set up .venv on
# first use (torch pinned to the local CPU build through constraints.txt).
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip

.PHONY: setup demo test system-data clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[data,test,dev,rl]'
	@$(MAKE) -s system-data
	touch $@

setup: $(VENV)/.installed

# Fashion-MNIST ships as a Debian package (nothing downloads at run time).
system-data:
	@if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	      || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST runs will say how"; \
	  else echo "note: for Fashion-MNIST run: sudo apt-get install dataset-fashion-mnist"; fi; \
	fi

demo: setup
	$(VENV)/bin/synthgrad run examples/mnist_cdni.toml

test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs
