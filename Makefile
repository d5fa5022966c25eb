# The two commands a new user needs: `make run` and `make test`.
MAKEFLAGS += --no-print-directory
BUILD ?= build
PYTHON := /usr/bin/python3
JOBS ?= $(shell nproc)
SAMPLE_REPO := $(BUILD)/sample-repo

.PHONY: all bootstrap build run test unit-test integration-test sample-repo test-models \
	format format-check lint clean bootstrap-ci check-switches asan-build asan tsan fuzz soak

CXX_SOURCES = $(shell git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'bench/*.cpp')

all: build

bootstrap:
	@scripts/bootstrap.sh

# WERROR=ON turns warnings into errors (CI does).
WERROR ?= OFF

build: bootstrap
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERCH_WERROR=$(WERROR) >/dev/null
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

# The long run of issue 19 (docs/durability.md): an agent, a hub and a broker
# behind flapping links for HOURS hours; samples in build/soak/.
HOURS ?= 2
soak: build test-models
	@PERCH_BIN=$(abspath $(BUILD))/perch PERCH_BUILD=$(abspath $(BUILD)) \
	  PERCH_TEST_MODELS=$(abspath $(BUILD))/test-models \
	  $(PYTHON) tests/soak/soak.py --hours $(HOURS)

format:
	@clang-format -i $(CXX_SOURCES)

# Fails, listing the files, when a source is not formatted as .clang-format says.
format-check: bootstrap
	@clang-format --dry-run --Werror $(CXX_SOURCES)

lint: build
	@git ls-files 'src/*.cpp' | grep -v _test.cpp | xargs -P $(JOBS) -n 4 clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(SWITCH_BUILDS) build-ccache

# --- The analysers CI runs after `make test` (docs/testing.md) -------------

bootstrap-ci:
	@scripts/bootstrap.sh ci

# Each PERCH_WITH_* switch off in turn, building the perch binary: -O0 and no
# tests, since only "does it compile and link" is asked. ccache (in a cache
# of its own) shares the objects the three builds have in common.
SWITCHES := GRPC MQTT HUB
SWITCH_BUILDS := $(foreach s,$(SWITCHES),build-no$(shell echo $(s) | tr A-Z a-z))
SWITCH_CCACHE := CCACHE_DIR=$(CURDIR)/build-ccache CCACHE_BASEDIR=$(CURDIR) CCACHE_NOHASHDIR=1

check-switches: bootstrap-ci
	@failed=""; for switch in $(SWITCHES); do \
	  dir=build-no$$(echo $$switch | tr A-Z a-z); \
	  echo "check-switches: perch with PERCH_WITH_$$switch=OFF in $$dir"; \
	  $(SWITCH_CCACHE) cmake -S . -B $$dir -DPERCH_WITH_$$switch=OFF -DPERCH_BUILD_TESTS=OFF \
	    -DPERCH_WERROR=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0 \
	    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null \
	  && $(SWITCH_CCACHE) cmake --build $$dir -j $(JOBS) --target perch \
	  || failed="$$failed PERCH_WITH_$$switch=OFF"; \
	done; \
	if [ -n "$$failed" ]; then echo "check-switches: perch does not build with$$failed"; exit 1; fi

# The clang builds: -O1 with line tables for readable reports, warnings as
# errors, -Wthread-safety (always on with clang), lld to link faster.
CLANG_CMAKE := -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
	"-DCMAKE_CXX_FLAGS_DEBUG=-O1 -gline-tables-only" -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld \
	-DPERCH_WERROR=ON -DPERCH_BUILD_BENCH=OFF
SANITIZERS := $(CURDIR)/tests/sanitizers

# One build serves AddressSanitizer with UndefinedBehaviorSanitizer, the
# thread-safety analysis and the fuzzers: every library is instrumented for
# libFuzzer too, which costs the tests a little time and CI a whole build.
ASAN_BUILD := build-asan
ASAN_LOGS := $(abspath $(ASAN_BUILD))/sanitizer-logs
# A report stops the process and is also written under ASAN_LOGS, so reports
# of a server the integration harness kills still fail the run.
ASAN_ENV := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=0:log_path=$(ASAN_LOGS)/report \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_LOGS)/report \
	LSAN_OPTIONS=suppressions=$(SANITIZERS)/lsan.supp:print_suppressions=0
# Every integration test but the two files whose tests wait out broker and
# agent restarts on timers (about 2.5 of the suite's 5 minutes under ASan).
# test_dashboard drives a browser: its C++ path (static files, the fleet
# API) is sanitized by the other tests.
ASAN_INTEGRATION_SKIP := test_mqtt_durability test_fleet test_dashboard test_flapping_links

asan-build: bootstrap-ci
	@cmake -S . -B $(ASAN_BUILD) $(CLANG_CMAKE) -DPERCH_SANITIZE=address,undefined \
	  -DPERCH_FUZZ=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

asan: asan-build test-models
	@rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	@status=0; \
	(cd $(ASAN_BUILD) && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS)) || status=1; \
	$(ASAN_ENV) PERCH_BIN=$(abspath $(ASAN_BUILD))/perch PERCH_BUILD=$(abspath $(ASAN_BUILD)) \
	  PERCH_TEST_MODELS=$(abspath $(BUILD))/test-models \
	  PERCH_WAKEWORD_MODELS=$(abspath .deps/openwakeword) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration \
	  $(foreach t,$(ASAN_INTEGRATION_SKIP),--ignore=tests/integration/$(t).py) || status=1; \
	$(SANITIZERS)/check_logs.sh $(ASAN_LOGS) || status=1; \
	exit $$status

# ThreadSanitizer over the unit tests of the concurrent core: every *_test
# of models/, outbox/, mqtt/ and batch/ that CMake declares.
TSAN_BUILD := build-tsan
TSAN_LOGS := $(abspath $(TSAN_BUILD))/sanitizer-logs
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(SANITIZERS)/tsan.supp:log_path=$(TSAN_LOGS)/report

tsan: bootstrap-ci
	@cmake -S . -B $(TSAN_BUILD) $(CLANG_CMAKE) -DPERCH_SANITIZE=thread >/dev/null
	@tests=$$(cmake --build $(TSAN_BUILD) --target help \
	  | sed -n -E 's/^\.\.\. ((models|outbox|mqtt|batch)_[a-z0-9_]+_test)$$/\1/p'); \
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target $$tests || exit 1; \
	rm -rf $(TSAN_LOGS) && mkdir -p $(TSAN_LOGS); \
	status=0; for test in $$tests; do \
	  echo "tsan: $$test"; \
	  $(TSAN_ENV) $$(find $(TSAN_BUILD)/src -name $$test -type f -perm -u+x) --gtest_brief=1 \
	    || { echo "tsan: $$test FAILED"; status=1; }; \
	done; \
	$(SANITIZERS)/check_logs.sh $(TSAN_LOGS) || status=1; \
	exit $$status

# Each libFuzzer harness for FUZZ_SECONDS from its corpus in tests/fuzz/corpus,
# two at a time. New inputs go to a scratch folder, not into the tree; a crash
# is saved under $(ASAN_BUILD)/fuzz/crashes (add it to the corpus once fixed).
FUZZ_SECONDS ?= 45

fuzz: asan-build
	@mkdir -p $(ASAN_BUILD)/fuzz/crashes $(ASAN_BUILD)/fuzz/logs
	@ls $(ASAN_BUILD)/fuzz/*_fuzzer | xargs -P $(JOBS) -I{} sh -c '\
	  name=$$(basename {} _fuzzer); scratch=$(ASAN_BUILD)/fuzz/new/$$name; mkdir -p $$scratch; \
	  if {} -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	       -artifact_prefix=$(ASAN_BUILD)/fuzz/crashes/$$name- $$scratch tests/fuzz/corpus/$$name \
	       >$(ASAN_BUILD)/fuzz/logs/$$name.log 2>&1; then \
	    echo "fuzz: $$name: $$(grep -m1 -o "stat::number_of_executed_units: *[0-9]*" \
	      $(ASAN_BUILD)/fuzz/logs/$$name.log | grep -o "[0-9]*$$") runs, no crash"; \
	  else echo "fuzz: $$name FAILED:"; tail -n 60 $(ASAN_BUILD)/fuzz/logs/$$name.log; exit 1; fi'

