# The two commands a new user needs: `make run` and `make test`.
MAKEFLAGS += --no-print-directory
BUILD ?= build
PYTHON := /usr/bin/python3
JOBS ?= $(shell nproc)
SAMPLE_REPO := $(BUILD)/sample-repo

.PHONY: all bootstrap build run test unit-test integration-test sample-repo test-models \
	format format-check lint clean

CXX_SOURCES = $(shell git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'bench/*.cpp')

all: build

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

sample-repo: bootstrap
	@scripts/make_sample_repo.sh $(SAMPLE_REPO)

run: build sample-repo
	@scripts/run_sample.sh $(BUILD)/perch $(SAMPLE_REPO)

test-models: bootstrap
	@$(PYTHON) tests/models/make_models.py $(BUILD)/test-models

unit-test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

integration-test: build test-models
	@PERCH_BIN=$(abspath $(BUILD))/perch PERCH_BUILD=$(abspath $(BUILD)) \
	  PERCH_TEST_MODELS=$(abspath $(BUILD))/test-models \
	  PERCH_WAKEWORD_MODELS=$(abspath .deps/openwakeword) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

test: unit-test integration-test

format:
	@clang-format -i $(CXX_SOURCES)

# Fails, listing the files, when a source is not formatted as .clang-format says.
format-check: bootstrap
	@clang-format --dry-run --Werror $(CXX_SOURCES)

lint: build
	@git ls-files 'src/*.cpp' | grep -v _test.cpp | xargs -P $(JOBS) -n 4 clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD)
