# loqt build.
#   make            build/loqt and build/libloqt.a
#   make test       unit tests + PyTorch reference tests, ends with "N passed, N failed"
#   make bench      speed benchmark beside a PyTorch baseline -> bench/results/, docs/benchmarks.md
#   make bench-7b   the 7B/13B LoQT memory headline (about an hour on 2 cores)
#   make bench-plan the memory planner against measured peak RSS, 60m to 1b
#   make demo       fetch tokenizer + corpus, train a small model, evaluate, sample
# Options: CC=gcc|clang  BLAS=openblas|none  OMP=1|0  DEBUG=1  SANITIZE=1  PORTABLE=1

ifeq ($(origin CC),default)
CC       := gcc
endif
BLAS     ?= openblas
OMP      ?= 1
BUILD    ?= build
PYTHON   ?= /usr/bin/python3

CFLAGS   ?= -O3
CFLAGS   += -std=c11 -Wall -Wextra -D_GNU_SOURCE -Isrc -MMD -MP
ifneq ($(PORTABLE),1)
CFLAGS   += -march=native
endif
ifeq ($(DEBUG),1)
CFLAGS   += -O0 -g
endif
ifeq ($(SANITIZE),1)
CFLAGS   += -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=address,undefined
endif
LDLIBS   += -lm
ifeq ($(OMP),1)
CFLAGS   += -fopenmp
LDFLAGS  += -fopenmp
else
CFLAGS   += -Wno-unknown-pragmas
endif
# OpenBLAS's OpenMP build: inside our own parallel regions it runs on the calling thread instead
# of starting a second thread pool (Debian: libopenblas-openmp-dev).
MULTIARCH    := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine 2>/dev/null)
OPENBLAS_DIR ?= /usr/lib/$(MULTIARCH)/openblas-openmp
ifeq ($(BLAS),openblas)
CFLAGS   += -DLOQT_OPENBLAS $(shell PKG_CONFIG_PATH=$(OPENBLAS_DIR)/pkgconfig pkg-config --cflags openblas 2>/dev/null)
LDLIBS   += -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas
endif

LIB_SRC  := $(sort $(shell find src -name '*.c' ! -path 'src/cli/*'))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all test bench bench-7b bench-plan demo data tokenizer fuzz clean
# keep the test objects: make would otherwise delete them after the summary line
.SECONDARY:
all: $(BUILD)/loqt $(BUILD)/libloqt.a

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libloqt.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/loqt: $(CLI_OBJ) $(BUILD)/libloqt.a
	$(CC) $(LDFLAGS) $(CLI_OBJ) $(BUILD)/libloqt.a $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libloqt.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(BUILD)/libloqt.a $(LDLIBS) -o $@

test: all $(TESTS)
	@BUILD=$(BUILD) PYTHON=$(PYTHON) bash tests/run_tests.sh $(TESTS) tests/test_cli.sh

bench: all
	@BUILD=$(BUILD) PYTHON=$(PYTHON) bash bench/run_bench.sh

bench-7b: all
	@BUILD=$(BUILD) bash bench/bench_7b.sh

bench-plan: all
	@BUILD=$(BUILD) bash bench/plan_check.sh

tokenizer:
	@bash scripts/fetch_tokenizer.sh data

data: all tokenizer
	$(BUILD)/loqt data --out data/corpus

demo: all
	@BUILD=$(BUILD) bash scripts/demo.sh

fuzz:
	bash scripts/fuzz.sh

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_SRC:tests/%.c=$(BUILD)/obj/tests/%.d)
