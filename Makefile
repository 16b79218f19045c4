# qworker. `make` builds build/qworker; `make demo` and `make test` install what they need first
# (as root, on Debian 12). See README.md.

VERSION    := 0.1.0
BUILD      ?= build
PREFIX     ?= /usr/local
CC         ?= cc
PKGS       := hiredis libevent libevent_pthreads libconfig libsystemd jansson

CFLAGS     ?= -O2 -g
WARN       := -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral
CPPFLAGS   += -D_GNU_SOURCE -DQWORKER_VERSION='"$(VERSION)"' -MMD -MP
PKG_CFLAGS  = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS     += $(PKG_LIBS) -lm -lpthread

SRCS       := $(wildcard src/*.c)
LIB_SRCS   := $(filter-out src/main.c,$(SRCS))
OBJS       := $(SRCS:src/%.c=$(BUILD)/%.o)
LIB_OBJS   := $(LIB_SRCS:src/%.c=$(BUILD)/%.o)
UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)

# Debian packages: to build, to run the tests, to run the demo.
DEB_BUILD  := gcc make pkg-config libhiredis-dev libevent-dev libconfig-dev libsystemd-dev \
              libjansson-dev
DEB_TEST   := $(DEB_BUILD) libcmocka-dev redis-server redis-tools python3 python3-pytest \
              systemd valgrind procps
DEB_DEMO   := $(DEB_BUILD) redis-server redis-tools procps

.PHONY: all clean test unit e2e demo deps deps-test deps-demo asan tsan format

all: $(BUILD)/qworker

$(BUILD)/qworker: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(WARN) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/unit
	$(CC) $(WARN) $(CPPFLAGS) $(PKG_CFLAGS) -Isrc $(CFLAGS) -o $@ $< $(LIB_OBJS) \
	    $(LDLIBS) $(shell pkg-config --libs cmocka)

$(BUILD) $(BUILD)/unit:
	mkdir -p $@

-include $(OBJS:.o=.d)

# Sanitizer builds live in their own directories so that they never mix objects.
asan:
	$(MAKE) BUILD=build/asan CFLAGS='-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all' \
	    LDFLAGS='-fsanitize=address,undefined' build/asan/qworker $(UNIT_BINS:$(BUILD)/%=build/asan/%)
tsan:
	$(MAKE) BUILD=build/tsan CFLAGS='-O1 -g -fsanitize=thread' LDFLAGS='-fsanitize=thread' \
	    build/tsan/qworker $(UNIT_BINS:$(BUILD)/%=build/tsan/%)

# Installs the Debian packages a target needs, if any is missing (needs root and apt).
define ensure_debs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    if [ "$$(id -u)" != 0 ]; then echo "run as root, or install: $$missing" >&2; exit 1; fi; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing >/dev/null) || exit 1; \
	fi
endef

deps:
	$(call ensure_debs,$(DEB_BUILD))
deps-test:
	$(call ensure_debs,$(DEB_TEST))
deps-demo:
	$(call ensure_debs,$(DEB_DEMO))

demo: deps-demo
	@$(MAKE) --no-print-directory all
	@tests/demo.sh $(BUILD)/qworker

unit: $(UNIT_BINS)
	@for t in $(UNIT_BINS); do $$t || exit 1; done

# Every test: unit tests plain, under valgrind and under both sanitizers; the end-to-end suite
# against the plain build, then again against the ASan+UBSan and TSan builds.
test: deps-test
	@$(MAKE) --no-print-directory all unit asan tsan
	tests/run-all.sh

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c

clean:
	rm -rf build
