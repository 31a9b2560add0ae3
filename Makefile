# Two commands a newcomer needs:
#   make demo   set everything up, shard the bundled genomes, train configs/tiny.yaml on 2 CPU ranks
#   make test   set everything up and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel of torch; an unpinned torch pulls a multi-GB CUDA build. GPU users: see README.
TORCH_SPEC ?= torch==2.13.0
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: setup test test-torch211 demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	# deepspeed's setup.py imports torch: build it against the torch installed above
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q

# the kernel-glue tests under the GPU image's torch 2.11 (CPU run; docs/gpu.md)
test-torch211: setup
	PYTHON=$(PY) bash bench/gpu/torch211_venv.sh

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash launch/demo.sh

clean:
	rm -rf $(VENV) .cache runs
