# The two commands a new user needs: `make run` and `make test`.
MAKEFLAGS += --no-print-directory
# ARCH=arm64 cross-compiles for 64-bit Arm into build-arm64 (docs/install.md).
ARCH ?= amd64
ifeq ($(ARCH),arm64)
BUILD ?= build-arm64
ARCH_CMAKE = $(ARM64_CMAKE)
BOOTSTRAP_MODE := arm64
else
BUILD ?= build
endif
PYTHON := /usr/bin/python3
JOBS ?= $(shell nproc)
SAMPLE_REPO := $(BUILD)/sample-repo

.PHONY: all bootstrap build run test unit-test integration-test sample-repo test-models \
	bench flapping-links format format-check lint clean bootstrap-ci check-switches check-each-switch asan-build asan tsan fuzz soak \
	arm64-build arm64-test package package-test

CXX_SOURCES = $(shell git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'bench/*.cpp')

all: build

bootstrap:
	@scripts/bootstrap.sh $(BOOTSTRAP_MODE)

# WERROR=ON turns warnings into errors (CI does).
WERROR ?= OFF

build: bootstrap
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERCH_WERROR=$(WERROR) $(ARCH_CMAKE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

sample-repo: bootstrap
	@scripts/make_sample_repo.sh $(SAMPLE_REPO)

run: build sample-repo
	@scripts/run_sample.sh $(BUILD)/perch $(SAMPLE_REPO)

test-models: bootstrap
	@$(PYTHON) tests/models/make_models.py $(BUILD)/test-models

unit-test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Both run the 10-minute flapping-link run of issue 19 (docs/durability.md)
# beside them: scripts/run_tests.sh.
integration-test: build test-models
	@PYTHON=$(PYTHON) scripts/run_tests.sh integration $(BUILD) $(JOBS)

test: build test-models
	@PYTHON=$(PYTHON) scripts/run_tests.sh all $(BUILD) $(JOBS)

# The long run of issue 19 (docs/durability.md): an agent, a hub and a broker
# behind flapping links for HOURS hours; samples in build/soak/.
HOURS ?= 2
soak: build test-models
	@PERCH_BIN=$(abspath $(BUILD))/perch PERCH_BUILD=$(abspath $(BUILD)) \
	  PERCH_TEST_MODELS=$(abspath $(BUILD))/test-models \
	  $(PYTHON) tests/soak/soak.py --hours $(HOURS)

# Every benchmark (bench/README.md), each measuring perch and its baseline in
# interleaved pairs and rewriting its own section of bench/RESULTS.md: hours,
# on a machine with nothing else running. BENCHES="core batch" runs a subset
# (core: bench/run.py all; the others: bench/NAME/run.py).
BENCHES ?= core batch bundles durability fleet http_layer memory mqtt network_local \
	network_local/forwarding pipelines runtimes signing store
bench: build
	@scripts/bootstrap.sh bench
	@failed=""; for name in $(BENCHES); do \
	  echo "bench: $$name"; \
	  if [ $$name = core ]; then script="bench/run.py all"; else script="bench/$$name/run.py"; fi; \
	  PERCH_BIN=$(abspath $(BUILD))/perch $(PYTHON) $$script || failed="$$failed $$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench: FAILED:$$failed"; exit 1; fi

# The long flapping-link runs of issue 19 (docs/durability.md): PERCH_FLAP_SECONDS=7200
# for the 2-hour one; `make test` runs the 10-minute one beside its suite.
PERCH_FLAP_SECONDS ?= 600
flapping-links: build test-models
	@PERCH_BIN=$(abspath $(BUILD))/perch PERCH_BUILD=$(abspath $(BUILD)) \
	  PERCH_TEST_MODELS=$(abspath $(BUILD))/test-models PYTHON=$(PYTHON) \
	  scripts/flapping_links.sh $(PERCH_FLAP_SECONDS) $(BUILD)/flapping-links-$(PERCH_FLAP_SECONDS)

format:
	@clang-format -i $(CXX_SOURCES)

# Fails, listing the files, when a source is not formatted as .clang-format says.
format-check: bootstrap
	@clang-format --dry-run --Werror $(CXX_SOURCES)

lint: build
	@git ls-files 'src/*.cpp' | grep -v _test.cpp | xargs -P $(JOBS) -n 4 clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(SWITCH_BUILDS) build-ccache build-arm64 build-package

# --- The analysers CI runs after `make test` (docs/testing.md) -------------

bootstrap-ci:
	@scripts/bootstrap.sh ci

# The switches off, building the perch binary: -O0 and no tests, since only
# "does it compile and link" is asked. CI builds the smallest agent, every
# switch off at once (each `#if PERCH_WITH_*` branch compiles either way:
# on in the main build, off here), in one build instead of three;
# `make check-each-switch` turns each off in turn. ccache (in a cache of its
# own) shares the objects the builds have in common.
SWITCHES := GRPC MQTT HUB
SWITCH_BUILDS := build-minimal $(foreach s,$(SWITCHES),build-no$(shell echo $(s) | tr A-Z a-z))
SWITCH_CCACHE := CCACHE_DIR=$(CURDIR)/build-ccache CCACHE_BASEDIR=$(CURDIR) CCACHE_NOHASHDIR=1
SWITCH_CMAKE := -DPERCH_BUILD_TESTS=OFF -DPERCH_BUILD_BENCH=OFF -DPERCH_WERROR=ON \
	-DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0 -DCMAKE_CXX_COMPILER_LAUNCHER=ccache

check-switches: bootstrap-ci
	@echo "check-switches: perch with$(foreach s,$(SWITCHES), PERCH_WITH_$(s)=OFF) in build-minimal"
	@$(SWITCH_CCACHE) cmake -S . -B build-minimal $(SWITCH_CMAKE) \
	  $(foreach s,$(SWITCHES),-DPERCH_WITH_$(s)=OFF) >/dev/null \
	  && $(SWITCH_CCACHE) cmake --build build-minimal -j $(JOBS) --target perch

check-each-switch: bootstrap-ci
	@failed=""; for switch in $(SWITCHES); do \
	  dir=build-no$$(echo $$switch | tr A-Z a-z); \
	  echo "check-each-switch: perch with PERCH_WITH_$$switch=OFF in $$dir"; \
	  $(SWITCH_CCACHE) cmake -S . -B $$dir -DPERCH_WITH_$$switch=OFF $(SWITCH_CMAKE) >/dev/null \
	  && $(SWITCH_CCACHE) cmake --build $$dir -j $(JOBS) --target perch \
	  || failed="$$failed PERCH_WITH_$$switch=OFF"; \
	done; \
	if [ -n "$$failed" ]; then echo "check-each-switch: perch does not build with$$failed"; exit 1; fi

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
# API) is sanitized by the other tests. test_fleet_metrics, test_batch_dask
# and the network-local walkthrough spend their time waiting on heartbeats,
# a Dask cluster and hub polls, over paths the quicker tests of the same
# components sanitize (fleet_store/canary_judge unit tests, test_batch,
# test_network_local_*): CI's time budget.
ASAN_INTEGRATION_SKIP := test_mqtt_durability test_fleet test_dashboard test_flapping_links \
	test_fleet_metrics test_batch_dask test_network_local_walkthrough

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
FUZZ_SECONDS ?= 30

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


# --- arm64 under emulation and the .deb packages (docs/install.md) ---------

# The cross build: Debian's aarch64 compiler and multiarch libraries, the
# linux-arm64 ONNX Runtime. Release at -O1 without debug info keeps a clean
# cross build within CI's budget; the time of an inference is ONNX Runtime's
# own (built at -O3), not perch's code around it.
ARM64_BUILD := build-arm64
ARM64_CMAKE = -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/aarch64-linux-gnu.cmake \
	-DONNXRUNTIME_ROOT=$(CURDIR)/.deps/onnxruntime-linux-arm64 -DCMAKE_BUILD_TYPE=Release \
	"-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG" -DPERCH_BUILD_BENCH=OFF
# The unit tests run under qemu: what depends on the CPU (byte order,
# alignment, floating point, FP16, SIMD JSON, hashing) and what this issue
# added; the whole suite is `make build ARCH=arm64` then ctest in build-arm64.
ARM64_UNIT_TESTS := core_base64_test core_status_test core_sqlite_test tensor_half_test \
	tensor_json_codec_test tensor_npy_test store_digest_test store_manifest_test \
	engine_execution_providers_test engine_onnx_external_data_test models_model_config_test \
	models_inference_service_test fleet_json_test fleet_device_facts_test api_grpc_codec_test \
	http_byte_range_test mqtt_topics_test outbox_durable_queue_test
# The integration tests that run the arm64 binary: the openWakeWord models
# over REST and gRPC against the x86-64 ONNX Runtime's answers, and the fleet
# test with an arm64 agent beside an amd64 one (the hub is amd64).
ARM64_INTEGRATION := test_wakeword.py test_arm64.py
QEMU := $(shell command -v qemu-aarch64-static || command -v qemu-aarch64)

arm64-build:
	@scripts/bootstrap.sh arm64
	@cmake -S . -B $(ARM64_BUILD) -DPERCH_WERROR=$(WERROR) $(ARM64_CMAKE) >/dev/null
	@cmake --build $(ARM64_BUILD) -j $(JOBS) --target perch $(ARM64_UNIT_TESTS)

# qemu looks in QEMU_ROOT first: an Arm /proc/cpuinfo (tests/arm64/make_qemu_root.sh).
QEMU_ROOT := $(abspath $(ARM64_BUILD))/qemu-root

arm64-test: arm64-build build test-models
	@tests/arm64/make_qemu_root.sh $(QEMU_ROOT)
	@printf '#!/bin/sh\nexec %s -L %s %s "$$@"\n' "$(QEMU)" "$(QEMU_ROOT)" "$(abspath $(ARM64_BUILD))/perch" \
	  >$(ARM64_BUILD)/perch-qemu && chmod +x $(ARM64_BUILD)/perch-qemu
	@status=0; for test in $(ARM64_UNIT_TESTS); do \
	  $(QEMU) -L $(QEMU_ROOT) $$(find $(ARM64_BUILD)/src -name $$test -type f) --gtest_brief=1 \
	    || { echo "arm64-test: $$test FAILED"; status=1; }; \
	done; \
	PERCH_BIN=$(abspath $(ARM64_BUILD))/perch-qemu PERCH_BUILD=$(abspath $(BUILD)) \
	  PERCH_AMD64_BIN=$(abspath $(BUILD))/perch PERCH_ARM64_BIN=$(abspath $(ARM64_BUILD))/perch-qemu \
	  PERCH_TEST_MODELS=$(abspath $(BUILD))/test-models \
	  PERCH_WAKEWORD_MODELS=$(abspath .deps/openwakeword) PERCH_EMULATED=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider \
	  $(foreach t,$(ARM64_INTEGRATION),tests/integration/$(t)) || status=1; \
	exit $$status

# .deb packages of the amd64 build and the arm64 cross build, checked with
# lintian and systemd-analyze (scripts/make_package.sh).
PACKAGE_DIR := build-package

package: build arm64-build
	@scripts/bootstrap.sh package
	@scripts/make_package.sh amd64 $(BUILD) .deps/onnxruntime/lib/libonnxruntime.so $(PACKAGE_DIR)
	@scripts/make_package.sh arm64 $(ARM64_BUILD) .deps/onnxruntime-linux-arm64/lib/libonnxruntime.so $(PACKAGE_DIR)

# Installs the amd64 package into a fresh Debian 12 root (debootstrap from
# the mirror apt uses, cached in $(PACKAGE_DIR)/debian12-root.tar.gz) and
# serves a model from it: tests/package/test_package.sh.
package-test: package
	@tests/package/test_package.sh $(PACKAGE_DIR)/perch_*_amd64.deb $(PACKAGE_DIR) \
	  $(abspath $(BUILD))/test-models
