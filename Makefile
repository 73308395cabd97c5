# loqt build.
#   make            build/loqt and build/libloqt.a
#   make test       unit tests + PyTorch reference tests, ends with "N passed, N failed"
#   make bench      speed benchmark beside a PyTorch baseline, with the GEMM microbenchmark
#                   (build/bench/gemm_bench) -> bench/results/, docs/benchmarks.md
#   make gemm-bench build/bench/gemm_bench alone (run it: build/bench/gemm_bench --help)
#   make refresh-bench build/bench/refresh_bench: the randomized SVD by phase against a GEMM
#   make bench-7b   the 7B/13B LoQT memory headline (about an hour on 2 cores)
#   make bench-plan the memory planner against measured peak RSS, 60m to 1b
#   make profile    where a training step's time goes, by kernel (perf) -> bench/results/
#   make demo       fetch tokenizer + corpus, train a small model, evaluate, sample
#   make deps       check (and as root install) the Debian packages of make test, see scripts/deps.sh
#   make fresh-root-check  make deps + make test in a new minimal Debian root (as root, ~8 minutes)
#   make MPI=1      build-mpi/loqt with data-parallel training (mpirun -np N build-mpi/loqt train ...)
# Options: CC=gcc|clang  BLAS=dnnl|openblas|none  OMP=1|0  DEBUG=1  SANITIZE=1  PORTABLE=1  DEPS=0  MPI=1

ifeq ($(origin CC),default)
CC       := gcc
endif
BLAS     ?= dnnl
OMP      ?= 1
MPI      ?= 0
ifeq ($(MPI),1)
BUILD    ?= build-mpi
else
BUILD    ?= build
endif
PYTHON   ?= /usr/bin/python3

CFLAGS   ?= -O3
CFLAGS   += -std=c11 -Wall -Wextra -D_GNU_SOURCE -Isrc -MMD -MP
ifneq ($(PORTABLE),1)
CFLAGS   += -march=native
endif
ifeq ($(DEBUG),1)
CFLAGS   += -O0 -g
endif
# ASan (with LeakSanitizer) and UBSan, float-cast-overflow included (not part of "undefined" in
# gcc); a report stops the program, so a test cannot pass over one.
SANITIZERS := address,undefined,float-cast-overflow
ifeq ($(SANITIZE),1)
CFLAGS   += -O1 -g -fsanitize=$(SANITIZERS) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=$(SANITIZERS)
endif
LDLIBS   += -lm
# Open MPI's compile and link flags (its headers as system headers: our warnings, not theirs)
MPICC    ?= mpicc
ifeq ($(MPI),1)
CFLAGS   += -DLOQT_MPI $(patsubst -I%,-isystem %,$(shell $(MPICC) --showme:compile 2>/dev/null))
LDLIBS   += $(shell $(MPICC) --showme:link 2>/dev/null)
endif
ifeq ($(OMP),1)
CFLAGS   += -fopenmp
LDFLAGS  += -fopenmp
else
CFLAGS   += -Wno-unknown-pragmas
endif
# The GEMM library (src/kernels/gemm.c).  dnnl: oneDNN's dnnl_sgemm (Debian: libdnnl-dev, built on
# the same OpenMP runtime as ours); it chooses its kernels for the CPU it runs on.  openblas:
# OpenBLAS's OpenMP build, which inside our own parallel regions runs on the calling thread
# instead of starting a second thread pool (Debian: libopenblas-openmp-dev); loqt re-selects its
# kernel set at start-up (src/kernels/openblas_kernels.h).  none: the portable C kernel.
# (With OMP=0 oneDNN still threads, on its own OpenMP runtime: OMP_NUM_THREADS sets it.)
MULTIARCH    := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine 2>/dev/null || echo $$(uname -m)-linux-gnu)
OPENBLAS_DIR ?= /usr/lib/$(MULTIARCH)/openblas-openmp
OPENBLAS_CFLAGS = $(shell PKG_CONFIG_PATH=$(OPENBLAS_DIR)/pkgconfig pkg-config --cflags openblas 2>/dev/null)
OPENBLAS_LIBS   = -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas
DNNL_LIBS       = -ldnnl
ifeq ($(BLAS),dnnl)
CFLAGS   += -DLOQT_DNNL
LDLIBS   += $(DNNL_LIBS)
else ifeq ($(BLAS),openblas)
CFLAGS   += -DLOQT_OPENBLAS $(OPENBLAS_CFLAGS)
LDLIBS   += $(OPENBLAS_LIBS)
else ifneq ($(BLAS),none)
$(error BLAS=$(BLAS): use BLAS=dnnl, BLAS=openblas or BLAS=none)
endif

LIB_SRC  := $(sort $(shell find src -name '*.c' ! -path 'src/cli/*'))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_SH  := $(sort $(wildcard tests/test_*.sh))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)
# the GEMM microbenchmark: loqt's gemm() and the portable kernel through libloqt, and oneDNN
# (fp32, bf16) and OpenBLAS called directly whatever BLAS is, so one run compares them all
GEMM_BENCH     := $(BUILD)/bench/gemm_bench
GEMM_BENCH_OBJ := $(BUILD)/obj/bench/gemm_bench.o
# the refresh's cost by phase against a plain GEMM, and its accuracy per power iteration
REFRESH_BENCH     := $(BUILD)/bench/refresh_bench

# System packages (scripts/deps.sh): a target that needs more than the build installs it as root,
# or prints the `sudo apt-get install ...` line and stops.  `make deps` is what `make test` needs;
# deps-build, deps-demo, deps-bench, deps-gemm-bench, deps-fuzz the other levels.  The plain build only checks
# (never the network).  Everything present: a check of well under a second.  DEPS=0 skips it all.
DEPS     ?= 1
DEPS_SH   = CC="$(CC)" OMP="$(OMP)" BLAS="$(BLAS)" OPENBLAS_DIR="$(OPENBLAS_DIR)" PYTHON="$(PYTHON)" \
            bash scripts/deps.sh
# the deps target that runs before anything is compiled: the one of the goals, else the check
DEPS_FOR_test       := deps
DEPS_FOR_deps       := deps
DEPS_FOR_demo       := deps-demo
DEPS_FOR_data       := deps-demo
DEPS_FOR_deps-demo  := deps-demo
DEPS_FOR_bench      := deps-bench
DEPS_FOR_deps-bench := deps-bench
DEPS_FOR_deps-build := deps-build
DEPS_FOR_gemm-bench := deps-gemm-bench
DEPS_FOR_$(GEMM_BENCH) := deps-gemm-bench
DEPS_FIRST := $(sort $(foreach g,$(MAKECMDGOALS),$(DEPS_FOR_$(g))))
DEPS_FIRST := $(if $(DEPS_FIRST),$(DEPS_FIRST),deps-check)

.PHONY: all test test-asan bench gemm-bench refresh-bench profile bench-7b bench-plan demo data tokenizer fuzz clean
.PHONY: deps deps-build deps-demo deps-bench deps-gemm-bench deps-fuzz deps-check fresh-root-check
# keep the test objects: make would otherwise delete them after the summary line
.SECONDARY:
all: $(BUILD)/loqt $(BUILD)/libloqt.a

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB_OBJ) $(CLI_OBJ) $(TEST_OBJ) $(GEMM_BENCH_OBJ): | $(DEPS_FIRST)

ifeq ($(DEPS),0)
deps deps-build deps-demo deps-bench deps-gemm-bench deps-fuzz deps-check:
	@:
else
deps:
	@$(DEPS_SH) test
deps-build:
	@$(DEPS_SH) build
deps-demo:
	@$(DEPS_SH) demo
deps-bench:
	@$(DEPS_SH) bench
deps-gemm-bench:
	@$(DEPS_SH) gemm-bench
deps-fuzz:
	@CLANG="$(if $(CLANG),$(CLANG),clang)" $(DEPS_SH) fuzz
deps-check:
	@$(DEPS_SH) --check --quiet build $(if $(filter 1,$(MPI)),mpi)
endif

$(BUILD)/libloqt.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/loqt: $(CLI_OBJ) $(BUILD)/libloqt.a
	$(CC) $(LDFLAGS) $(CLI_OBJ) $(BUILD)/libloqt.a $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libloqt.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(BUILD)/libloqt.a $(LDLIBS) -o $@

gemm-bench: $(GEMM_BENCH)
refresh-bench: $(REFRESH_BENCH)
$(REFRESH_BENCH): $(BUILD)/obj/bench/refresh_bench.o $(BUILD)/libloqt.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(BUILD)/libloqt.a $(LDLIBS) -o $@
$(GEMM_BENCH_OBJ): CFLAGS += $(OPENBLAS_CFLAGS)
$(GEMM_BENCH): $(GEMM_BENCH_OBJ) $(BUILD)/libloqt.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(BUILD)/libloqt.a $(LDLIBS) $(if $(filter dnnl,$(BLAS)),,$(DNNL_LIBS)) \
	    $(if $(filter openblas,$(BLAS)),,$(OPENBLAS_LIBS)) -o $@

# The data-parallel tests (tests/test_dp.sh, mpirun -np 2) run the MPI build of the same options,
# in $(BUILD)-mpi; `make deps` installs Open MPI, so it is missing only with DEPS=0.
test: deps all $(TESTS)
	@if [ "$(MPI)" != 1 ] && command -v $(MPICC) >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory MPI=1 BUILD=$(BUILD)-mpi DEPS=0 $(BUILD)-mpi/loqt || exit 1; fi
	@BUILD=$(BUILD) MPI_LOQT=$(if $(filter 1,$(MPI)),$(BUILD),$(BUILD)-mpi)/loqt DEPS=$(DEPS) PYTHON=$(PYTHON) \
	    bash tests/run_tests.sh $(TESTS) $(TEST_SH)

# the whole suite again under the sanitizers, in its own build directory
test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SANITIZE=1 DEPS=0 test

bench: deps-bench all $(GEMM_BENCH)
	@BUILD=$(BUILD) PYTHON=$(PYTHON) GEMM_BENCH=$(GEMM_BENCH) bash bench/run_bench.sh

bench-7b: all
	@BUILD=$(BUILD) bash bench/bench_7b.sh

profile: all
	@BUILD=$(BUILD) bash bench/profile_step.sh

bench-plan: all
	@BUILD=$(BUILD) bash bench/plan_check.sh

tokenizer: deps-demo
	@bash scripts/fetch_tokenizer.sh data

data: deps-demo all tokenizer
	$(BUILD)/loqt data --out data/corpus

demo: deps-demo all
	@BUILD=$(BUILD) bash scripts/demo.sh

# every libFuzzer target for FUZZ_SECONDS each, or FUZZ_RUNS executions each when given
FUZZ_SECONDS ?= 60
fuzz: deps-fuzz
	RUNS=$(FUZZ_RUNS) bash scripts/fuzz.sh $(FUZZ_SECONDS)

# the fresh-machine path in a debootstrap root, docs/fresh_machine.md (FRESH_ARGS=--demo, ...)
fresh-root-check:
	bash scripts/fresh_root_check.sh $(FRESH_ARGS)

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(GEMM_BENCH_OBJ:.o=.d) $(TEST_SRC:tests/%.c=$(BUILD)/obj/tests/%.d)
