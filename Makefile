# fedbip-nvflare: `make demo` runs the main job, `make test` runs the test suite.
# Both create .venv when it is missing and install everything the project needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
WORKSPACE ?= $(CURDIR)/workspace

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install assets demo test export clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

assets: install
	$(PY) -m fedbip_nvflare.assets fetch

demo: assets
	$(PY) jobs/fedbip_text/job.py --num-clients 8 --num-rounds 3 --max-examples 160 --test-examples 200 \
		--max-length 64 --torch-threads 1 --workspace $(WORKSPACE)/demo --output $(WORKSPACE)/demo \
		--compare local
	@echo "plots and tables of this run: $(VENV)/bin/fedbip report $(WORKSPACE)/demo"

test: assets
	$(PY) -m pytest tests -q

# regenerate the exported job folders that `nvflare simulator` takes
export: install
	$(PY) jobs/fedbip_text/job.py --export --export-dir jobs/fedbip_text/job_folder
	$(PY) jobs/fedbip_vision/job.py --export --export-dir jobs/fedbip_vision/job_folder
	$(PY) jobs/fedbip_llm/job.py --export --export-dir jobs/fedbip_llm/job_folder

clean:
	rm -rf $(WORKSPACE) .pytest_cache
