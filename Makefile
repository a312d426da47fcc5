# pgmux - one plain GNU Makefile (CONVENTIONS 9).
#
#   make                 release build: build/release/pgmux
#   make deps            install the Debian packages the build, tests and demo need
#   make check           unit tests (cmocka) on the release build
#   make check-asan      unit tests on the ASan+UBSan build
#   make check-integration  pytest suite against a real primary + replica (ASan+UBSan pgmux)
#   make test            deps + everything above; what CI runs
#   make run             local primary + replica + pgmux on port 6432 with proxy.ini
#   make SANITIZE=address,undefined   build into build/asan
#   make SANITIZE=thread              build into build/tsan
#   make V=1             show full compiler command lines

CC      ?= cc
PKGS    := openssl libpq inih
LIBEV_CFLAGS ?=
LIBEV_LIBS   ?= -lev

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wundef -Wpointer-arith -Wcast-qual -Wvla
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(WARN) -I. $(LIBEV_CFLAGS) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
BASE_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(LIBEV_LIBS) -lpthread

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

.PHONY: all deps check check-asan check-integration test run bench fuzz clean \
        check-headers format format-check tidy asan

all: $(BUILD)/pgmux

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
check-integration: all asan
	@rc=0; PGMUX_BIN=$(CURDIR)/build/asan/pgmux PGMUX_RELEASE_BIN=$(CURDIR)/build/release/pgmux \
	    $(PYTEST) -q -rfEs -p no:cacheprovider tests/integration || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "check-integration: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory check-asan
	@$(MAKE) --no-print-directory check-integration

run: deps all
	@./tests/run-demo.sh

bench: deps all
	@./tests/bench/run.sh

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

clean:
	rm -rf build pgmux
