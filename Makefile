# The two commands a new user runs: `make demo` (the main job) and `make test`.
# Each creates its own virtual environment in .venv and installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py setup.cfg
	python3 -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull the newest (CUDA) build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,ros-wheels,fleet]'
	touch $@

demo: venv
	$(VENV)/bin/ee-seg demo

test: venv
	$(PY) -m pytest -q test

clean:
	rm -rf $(VENV) build *.egg-info
