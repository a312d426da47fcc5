# pgmux - one plain GNU Makefile (CONVENTIONS 9).
#
#   make                 release build: build/release/pgmux
#   make deps            install the Debian packages the build, tests and demo need
#   make check           unit tests (cmocka) on the release build
#   make check-asan      unit tests on the ASan+UBSan build
#   make check-integration  pytest suite against a real primary + replica (ASan+UBSan pgmux)
#   make check-tsan      the same suite against the ThreadSanitizer build
#   make check-integration-uring  the relay's core suites with io_engine = io_uring
#   make test            deps + everything above; what CI runs
#   make run             local primary + replica + pgmux on port 6432 with proxy.ini
#   make install         binary, example configuration, systemd unit (PREFIX, DESTDIR)
#   make bench-idle-vm   idle clients at 10,000 and 100,000 in a VM where nofile can be raised
#   make bench-classify  statement classification cost per statement (ns), each path
#   make bench-bundle    build/bundle.tar.gz: pgmux, PostgreSQL, PgBouncer and their libraries,
#                        to measure multi-core scaling on a bare machine (README "Multi-core scaling")
#   make SANITIZE=address,undefined   build into build/asan
#   make SANITIZE=thread              build into build/tsan
#   make V=1             show full compiler command lines

CC      ?= cc
PKGS    := openssl libpq inih liburing
LIBEV_CFLAGS ?=
LIBEV_LIBS   ?= -lev

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wundef -Wpointer-arith -Wcast-qual -Wvla
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(WARN) -I. $(LIBEV_CFLAGS) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libpg_query (Debian libpg-query-dev) ships no .pc file either.
PG_QUERY_LIBS ?= -lpg_query
BASE_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(LIBEV_LIBS) $(PG_QUERY_LIBS) -lpthread \
           -lm

ifeq ($(SANITIZE),)
  BUILD := build/release
  MODE_CFLAGS := -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong
  MODE_LDFLAGS := -Wl,-z,relro,-z,now
else ifeq ($(SANITIZE),thread)
  BUILD := build/tsan
  MODE_CFLAGS := -O1 -fsanitize=thread -fno-omit-frame-pointer
  MODE_LDFLAGS := -fsanitize=thread
else
  BUILD := build/asan
  MODE_CFLAGS := -O1 -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
  MODE_LDFLAGS := -fsanitize=$(SANITIZE)
endif

CFLAGS_ALL := $(BASE_CFLAGS) $(MODE_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(MODE_LDFLAGS) $(LDFLAGS)

LIB_SRC := $(wildcard common/*.c protocol/*.c pool/*.c router/*.c) \
           $(filter-out proxy/main.c,$(wildcard proxy/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/proxy/main.o
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PYTEST := /usr/bin/python3 -m pytest

.PHONY: install uninstall all deps check check-asan check-integration check-integration-uring check-tsan test run bench bench-idle-vm fuzz fuzz-smoke clean \
        check-headers format format-check tidy asan bench-smoke bench-classify bench-classify-smoke \
        bench-routing bench-metrics bench-bundle bench-bundle-check bench-scaling

all: $(BUILD)/pgmux $(BUILD)/tests/classify_cli

# Changing flags rebuilds everything (CONVENTIONS 9.6).
$(BUILD)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)' | cmp -s - $@ || echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)' > $@
FORCE:

Q := $(if $(V),,@)

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/libpgmux.a: $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/pgmux: $(MAIN_OBJ) $(BUILD)/libpgmux.a
	@$(if $(V),,echo "  LINK    $@")
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(BASE_LIBS)
	@if [ "$(BUILD)" = build/release ]; then ln -sf $(BUILD)/pgmux pgmux; fi

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libpgmux.a $(BUILD)/.flags
	@mkdir -p $(@D)
	@$(if $(V),,echo "  TEST-CC $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -o $@ $< $(BUILD)/libpgmux.a $(LDFLAGS_ALL) $(BASE_LIBS) -lcmocka

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(UNIT_BIN:=.d)

deps:
	@./tests/deps.sh

check: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; (cd tests/unit && ../../$$t); done

asan:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined all

check-asan:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined check

# pytest exits 5 when it collected no tests; that is a failure here, not a quiet pass.
# The integration suite under ThreadSanitizer (CONVENTIONS 6.12); tests/tsan.supp says why
# libev's own epoll bookkeeping is left out.
check-tsan: all
	@$(MAKE) --no-print-directory SANITIZE=thread all
	PGMUX_BIN=$(CURDIR)/build/tsan/pgmux PGMUX_RELEASE_BIN=$(CURDIR)/build/release/pgmux \
	    TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=0" \
	    $(PYTEST) -q -p no:cacheprovider tests/integration

check-integration: all asan
	@rc=0; PGMUX_BIN=$(CURDIR)/build/asan/pgmux PGMUX_RELEASE_BIN=$(CURDIR)/build/release/pgmux \
	    $(PYTEST) -q -rfEs -p no:cacheprovider tests/integration || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "check-integration: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The relay's core suites again with io_engine = io_uring (ASan+UBSan), so the batched path
# cannot rot while epoll stays the default.
URING_TESTS := test_queries test_pool test_txn_protocol test_txn_semantics test_txn_large \
               test_streaming test_protocol_errors test_cancel test_workers test_unix_socket \
               test_io_engine test_balance
check-integration-uring: all asan
	PGMUX_IO_ENGINE=io_uring PGMUX_BIN=$(CURDIR)/build/asan/pgmux \
	    PGMUX_RELEASE_BIN=$(CURDIR)/build/release/pgmux \
	    $(PYTEST) -q -rfEs -p no:cacheprovider $(URING_TESTS:%=tests/integration/%.py)

test: deps
	@$(MAKE) --no-print-directory format-check
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory check-asan
	@$(MAKE) --no-print-directory check-integration
	@$(MAKE) --no-print-directory check-integration-uring
	@$(MAKE) --no-print-directory check-tsan
	@$(MAKE) --no-print-directory bench-smoke
	@$(MAKE) --no-print-directory bench-classify-smoke
	@$(MAKE) --no-print-directory fuzz-smoke

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary to $(PREFIX)/bin, the example
# configuration and auth_file and the README to $(PREFIX)/share/doc/pgmux, the systemd unit
# to $(PREFIX)/lib/systemd/system with its paths rewritten to PREFIX. Nothing goes to /etc:
# the unit reads /etc/pgmux/pgmux.ini, which the administrator creates (README "Installing").
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(PREFIX)/bin
DOCDIR  := $(PREFIX)/share/doc/pgmux
UNITDIR ?= $(PREFIX)/lib/systemd/system

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/pgmux $(DESTDIR)$(BINDIR)/pgmux
	install -m 0644 packaging/pgmux.ini $(DESTDIR)$(DOCDIR)/pgmux.ini.example
	install -m 0644 packaging/userlist.txt $(DESTDIR)$(DOCDIR)/userlist.txt.example
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	sed 's|/usr/local/|$(PREFIX)/|g' packaging/pgmux.service > $(DESTDIR)$(UNITDIR)/pgmux.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/pgmux.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/pgmux $(DESTDIR)$(UNITDIR)/pgmux.service
	rm -f $(DESTDIR)$(DOCDIR)/pgmux.ini.example $(DESTDIR)$(DOCDIR)/userlist.txt.example \
	    $(DESTDIR)$(DOCDIR)/README.md
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

run: deps all
	@./tests/run-demo.sh

# Side-by-side benchmark (direct, byte relay, PgBouncer, pgmux) -> build/bench/results.md;
# BENCH_* variables are listed in README.md "Performance". bench-smoke: one short workload,
# fails only when pgmux errors or has failed transactions (part of `make test`).
bench: deps all
	@./tests/bench/run.sh

bench-smoke: all
	@./tests/bench/run.sh --smoke

# Memory per idle client at 10,000 and 100,000 clients, PgBouncer beside pgmux, inside a
# virtual machine on this machine's own root filesystem (tests/bench/vm.sh), where root may
# raise the open-file limit that a container's root may not. BENCH_* settings are carried in;
# the table goes to build/bench-vm/results.md.
bench-idle-vm: deps all
	@tests/bench/vm.sh build/bench-vm env BENCH_OUT=/tmp/bench BENCH_WORKLOADS=none BENCH_IDLE_VM=off \
	    BENCH_SLOW_READER_ROWS=0 BENCH_CALLGRIND_TXNS=0 BENCH_STRACE_TIME=0 \
	    BENCH_TARGETS=$${BENCH_TARGETS:-pgbouncer,pgmux} \
	    sh -c 'tests/bench/run.sh; rc=$$?; cp /tmp/bench/results.md "$$VM_OUT/"; exit $$rc'
	@cat build/bench-vm/results.md

# What metrics collection costs: pgbench -S -c 50 through pgmux with the metrics endpoint off
# and on (scraped every second), alternating, medians; BENCH_PGMUX_BASELINE=another pgmux adds
# it as a third target and an instructions-per-transaction comparison (tests/bench/metrics_cost.py).
bench-metrics: deps all
	@/usr/bin/python3 tests/bench/metrics_cost.py

# Classification cost per statement (router/classify.c) on each path: lexer, parser uncached,
# cached parser result; medians in ns. bench-classify-smoke: one short round that fails when a
# text takes the wrong path (part of `make test`, about a second).
$(BUILD)/tests/classify_bench: tests/bench/classify_bench.c $(BUILD)/libpgmux.a $(BUILD)/.flags
	@mkdir -p $(@D)
	@$(if $(V),,echo "  BENCH-CC $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -o $@ $< $(BUILD)/libpgmux.a $(LDFLAGS_ALL) $(BASE_LIBS)

-include $(BUILD)/tests/classify_bench.d

# router_classify from the command line, for tests/integration/test_classify_standby.py
$(BUILD)/tests/classify_cli: tests/tools/classify_cli.c $(BUILD)/libpgmux.a $(BUILD)/.flags
	@mkdir -p $(@D)
	@$(if $(V),,echo "  TOOL-CC $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -o $@ $< $(BUILD)/libpgmux.a $(LDFLAGS_ALL) $(BASE_LIBS)

-include $(BUILD)/tests/classify_cli.d

bench-classify: $(BUILD)/tests/classify_bench
	@$(BUILD)/tests/classify_bench

bench-classify-smoke: $(BUILD)/tests/classify_bench
	@$(BUILD)/tests/classify_bench --smoke

# Read/write routing figures: which node served a pgbench -S -c 50 run, and what
# read_your_writes = lsn costs per write transaction (TPC-B, lsn vs off). Its own cluster.
bench-routing: all
	@/usr/bin/python3 tests/bench/routing.py

# Multi-core scaling on a machine without PostgreSQL, PgBouncer, network or Debian (README.md
# "Multi-core scaling"). bench-bundle packs everything into build/bundle.tar.gz; bench-bundle-check
# unpacks it to /opt/pgmux-bundle and checks its programs start on bundled libraries only;
# bench-scaling runs tests/bench/device/scaling.sh here with Debian's libraries hidden
# (tests/bench/device/bare.sh), workers 1 and 2, short runs: the mechanics, not the scaling.
bench-bundle:
	@./tests/deps.sh bundle
	@$(MAKE) --no-print-directory SANITIZE= all build/bundle.tar.gz

build/bundle.tar.gz: build/release/pgmux tests/bench/device/bundle.sh tests/bench/device/pinrun.c \
                     tests/bench/relay.c tests/bench/idle_clients.c
	@./tests/bench/device/bundle.sh

bench-bundle-check: bench-bundle
	@./tests/bench/device/check-bundle.sh build/bundle.tar.gz

bench-scaling: bench-bundle
	@SCALING_WORKERS="$${SCALING_WORKERS:-1 2}" SCALING_URING_WORKERS="$${SCALING_URING_WORKERS:-2}" \
	    SCALING_STATIC_WORKERS="$${SCALING_STATIC_WORKERS:-2}" \
	    SCALING_TIME=$${SCALING_TIME:-4} SCALING_IDLE=$${SCALING_IDLE:-2000} \
	    SCALING_WARMUP=$${SCALING_WARMUP:-1} SCALING_REPS=$${SCALING_REPS:-2} \
	    SCALING_SCALE=$${SCALING_SCALE:-5} SCALING_CLIENTS=$${SCALING_CLIENTS:-32} \
	    SCALING_POOL=$${SCALING_POOL:-16} ./tests/bench/device/bare.sh build/bundle.tar.gz

check-headers:
	@set -e; for h in common/*.h protocol/*.h pool/*.h router/*.h proxy/*.h; do \
	    echo "#include \"$$h\"" | $(CC) $(BASE_CFLAGS) -x c -fsyntax-only - ; done; echo headers ok

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

tidy:
	cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 \
	    -I. common protocol pool router proxy

# ---- fuzzing (tests/fuzz/, CONVENTIONS 8.7) ----------------------------------------------
# libFuzzer targets built with clang-14 into build/fuzz/, linked against their own copy of the
# pure modules (common/, protocol/, router/, proxy/config.c) built with the same sanitizers, and
# libpg_query as installed; tests/fuzz/README.md lists the targets.
#   make fuzz                 each target for FUZZ_SECONDS (default 60); new inputs go to
#                             build/fuzz/corpus-<target>, crashes to build/fuzz/crash-<target>/,
#                             libFuzzer's output to build/fuzz/fuzz_<target>.log (tests/fuzz/run.sh)
#   make fuzz-smoke           each target over its kept crashes (tests/fuzz/regressions/) and its
#                             seeds, then FUZZ_SMOKE_SECONDS (default 10) of fuzzing; what CI runs
#   make fuzz FUZZ_TARGETS=scram FUZZ_SECONDS=600   one target, longer (FUZZ_ARGS: more flags)
FUZZ_CC      ?= clang-14
FUZZ_DIR     := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_ARGS    ?=
FUZZ_TARGETS ?= startup frontend backend scram config scan classify hba admin
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(BASE_CFLAGS) -O1 $(FUZZ_SAN)
FUZZ_LIBS    := $(shell pkg-config --libs openssl inih 2>/dev/null) $(PG_QUERY_LIBS) -lpthread
FUZZ_LIB_SRC := $(wildcard common/*.c protocol/*.c) router/lex.c router/scan.c router/classify.c \
                proxy/config.c proxy/hba.c proxy/admin_cmd.c
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_BIN     := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
# -max_len per target: a startup packet may be 10000 bytes; SCRAM messages at most 512 each;
# a proxy.ini line at most 198 characters.
FUZZ_MAXLEN_startup  := 10100
FUZZ_MAXLEN_frontend := 4096
FUZZ_MAXLEN_backend  := 4096
FUZZ_MAXLEN_scram    := 2048
FUZZ_MAXLEN_config   := 8192
FUZZ_MAXLEN_hba      := 8192
FUZZ_MAXLEN_scan     := 4096
FUZZ_MAXLEN_classify := 4096
FUZZ_MAXLEN_admin    := 4096

$(FUZZ_DIR)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LIBS)' | cmp -s - $@ || echo '$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LIBS)' > $@

$(FUZZ_DIR)/obj/%.o: %.c $(FUZZ_DIR)/.flags
	@mkdir -p $(@D)
	@$(if $(V),,echo "  FUZZ-CC $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB_OBJ) $(FUZZ_DIR)/.flags
	@$(if $(V),,echo "  FUZZ-LD $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP -o $@ $< $(FUZZ_LIB_OBJ) $(FUZZ_LIBS)

# named only in a pattern rule, the objects would count as intermediate and be deleted
.SECONDARY: $(FUZZ_LIB_OBJ)

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_BIN:=.d)

fuzz: $(FUZZ_BIN)
	@set -e; $(foreach t,$(FUZZ_TARGETS),\
	    tests/fuzz/run.sh fuzz $(t) $(FUZZ_SECONDS) $(FUZZ_MAXLEN_$(t)) $(FUZZ_ARGS);)

fuzz-smoke: $(FUZZ_BIN)
	@set -e; $(foreach t,$(FUZZ_TARGETS),\
	    tests/fuzz/run.sh smoke $(t) $(FUZZ_SMOKE_SECONDS) $(FUZZ_MAXLEN_$(t)) $(FUZZ_ARGS);)

clean:
	rm -rf build pgmux
