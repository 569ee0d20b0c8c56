# Makefile for lmk, the language-model kit: one static library (lib/, cuda/)
# and one small program per experiment (cmd/).
#
#   make                 library and programs (CUDA too when nvcc is found)
#   make CUDA=0          CPU-only build, complete on its own
#   make check           build and run every test (Check suites, CLI, interop)
#   make fuzz            build the libFuzzer targets and run each FUZZ_TIME seconds
#   make install PREFIX=DIR
#   make BUILD=build-asan SAN=1 CUDA=0 check   sanitizer pass (as .ci/run does)

VERSION   = 0.1.0
PREFIX   ?= /usr/local
BUILD    ?= build
B        := $(BUILD)

CC       ?= cc
NVCC     ?= $(shell command -v nvcc 2>/dev/null)
ifeq ($(origin CUDA), undefined)
CUDA     := $(if $(NVCC),1,0)
endif
CUDA_ARCH ?= sm_90
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
FUZZ_TIME ?= 60

PKGS      = jansson zlib libpcre2-8 openblas
# Recursive (=): evaluated only when used, after `deps` has installed them.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN      = -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -fopenmp $(WARN) -Ilib -Icmd $(PKG_CFLAGS)
CFLAGS   += -DLMK_VERSION='"$(VERSION)"' -DLMK_CUDA=$(CUDA)
LDLIBS    = $(PKG_LIBS) -lm -fopenmp -lpthread
ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

# Check is linked statically so that test binaries run on machines without it.
CHECK_LIBS = -Wl,-Bstatic -lcheck_pic -lsubunit -Wl,-Bdynamic -lrt

LIB_SRC   = $(wildcard lib/*.c)
LIB_OBJ   = $(LIB_SRC:%.c=$(B)/%.o)
CUDA_SRC  = $(wildcard cuda/*.cu)
ifeq ($(CUDA),1)
CUDA_OBJ  = $(CUDA_SRC:%.cu=$(B)/%.o)
NVFLAGS   = -O3 -std=c++17 -arch=$(CUDA_ARCH) -Ilib -Icuda -DLMK_CUDA=1 -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart_static -lcublasLt -lcublas -lnccl -ldl -lrt -lstdc++
endif
LIBA      = $(B)/liblmk.a

PROG_OBJ  = $(B)/cmd/prog.o
CMDS      = $(patsubst cmd/%.c,%,$(filter-out cmd/prog.c,$(wildcard cmd/*.c)))
BINS      = $(CMDS:%=$(B)/bin/%)
TEST_SRC  = $(wildcard tests/test_*.c)
TESTS     = $(TEST_SRC:tests/%.c=$(B)/tests/%)
FUZZ_SRC  = $(wildcard fuzz/fuzz_*.c)
BENCH_SRC = $(wildcard bench/*.c)
# GPU benchmarks written in CUDA (nvcc), built only when CUDA is.
BENCH_CU  = $(if $(filter 1,$(CUDA)),$(wildcard bench/*.cu))
# the two whose option checks tests/cli/bench-gpu-args.sh runs (no GPU needed)
BENCH_ARGS = $(if $(filter 1,$(CUDA)),$(B)/bench/bw_gpu $(B)/bench/gemm_gpu)
MANS      = $(wildcard man/*.[0-9])

.PHONY: all demo deps bench check check-unit check-cli check-interop check-man fuzz install clean
all: $(BINS) $(LIBA)

deps:
	@scripts/install-deps.sh

demo: all
	@BUILD=$(B) scripts/demo.sh

$(B)/%.o: %.c | deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/cuda/%.o: cuda/%.cu | deps
	@mkdir -p $(@D)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

# wgmma needs the sm_90a target (in the -gencode form: with CUDA 13.0 the
# -arch=sm_90a shorthand also runs a plain sm_90 pass that rejects it).
$(B)/cuda/attention_wg.o: cuda/attention_wg.cu | deps
	@mkdir -p $(@D)
	$(NVCC) $(filter-out -arch=%,$(NVFLAGS)) -gencode=arch=compute_90a,code=sm_90a -MMD -MP -c $< -o $@

$(B)/bench/%.o: bench/%.cu | deps
	@mkdir -p $(@D)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(LIBA): $(LIB_OBJ) $(CUDA_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/bin/%: $(B)/cmd/%.o $(PROG_OBJ) $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(B)/bench/%: $(B)/bench/%.o $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(B)/tests/%: $(B)/tests/%.o $(LIBA)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(CHECK_LIBS) $(LDLIBS) -o $@

bench: $(BENCH_SRC:bench/%.c=$(B)/bench/%) $(BENCH_CU:bench/%.cu=$(B)/bench/%)

# Unit suites, then programs from the shell, then Python interoperability,
# then the man pages. Each test reads ../shared/data when it needs data.
# The groups run one after the other (even under -j) so that their reports
# do not interleave; each group's binaries are built in parallel first.
check: $(TESTS) $(BINS) $(BENCH_ARGS)
	@$(MAKE) --no-print-directory -j1 check-unit check-cli check-interop check-man

check-unit: $(TESTS) $(BINS)
	@scripts/run-tests.sh unit $(TESTS)

check-cli: $(BINS) $(BENCH_ARGS)
	@scripts/run-tests.sh cli $(wildcard tests/cli/*.sh)

check-interop: $(BINS)
	@scripts/run-tests.sh interop $(wildcard tests/interop/*.py)

check-man: $(BINS)
	@scripts/run-tests.sh man $(MANS)

# libFuzzer targets, built with clang against the library sources.
FUZZ_BIN = $(FUZZ_SRC:fuzz/%.c=$(B)/fuzz/%)
$(B)/fuzz/%: fuzz/%.c $(LIB_SRC) | deps
	@mkdir -p $(@D)
	clang -std=c11 -D_GNU_SOURCE -DLMK_CUDA=0 -DLMK_VERSION='"$(VERSION)"' -g -O1 -fopenmp \
	  -fsanitize=fuzzer,address,undefined -Ilib $(PKG_CFLAGS) $^ $(PKG_LIBS) -lm -o $@

fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	  n=$$(basename $$f); mkdir -p $(B)/corpus/$$n; \
	  echo "fuzz: $$n for $(FUZZ_TIME) s"; \
	  $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $(B)/corpus/$$n fuzz/seeds/$$n 2>$(B)/fuzz/$$n.log \
	    || { tail -n 40 $(B)/fuzz/$$n.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|stat::peak_rss' $(B)/fuzz/$$n.log; \
	done

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/include/lmk $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib
	install -m 644 lib/*.h $(DESTDIR)$(PREFIX)/include/lmk
	for m in $(MANS); do install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man$${m##*.}; done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	  -e 's|@LIBS@|$(LDLIBS)|' lmk.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/lmk.pc

clean:
	rm -rf $(B)

-include $(LIB_OBJ:.o=.d) $(CUDA_OBJ:.o=.d) $(B)/cmd/*.d $(B)/tests/*.d
