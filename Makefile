# qworker. `make` builds build/qworker; `make demo` and `make test` install what they need first
# (as root, on Debian 12). See README.md.

VERSION    := 0.1.0
BUILD      ?= build
PREFIX     ?= /usr/local
sbindir    ?= $(PREFIX)/sbin
# qworker finds qworker-run at $(sbindir)/../libexec/qworker: keep them side by side.
libexecdir ?= $(PREFIX)/libexec
sysconfdir ?= /etc
datadir    ?= $(PREFIX)/share
mandir     ?= $(PREFIX)/share/man
docdir     ?= $(PREFIX)/share/doc/qworker
unitdir    ?= $(PREFIX)/lib/systemd/system
sysusersdir ?= $(PREFIX)/lib/sysusers.d
CC         ?= cc
PKGS       := hiredis libevent libevent_pthreads libconfig libsystemd jansson libseccomp

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
# Lua scripts: src/lua/NAME.lua, embedded into scripts.c as $(BUILD)/lua/NAME.lua.h and written
# out whole (includes expanded) as $(BUILD)/lua/NAME.lua for the tests.
LUA_PARTS  := $(wildcard src/lua/*.lua)
LUA_MAIN   := $(filter-out %_fn.lua,$(LUA_PARTS))
LUA_HDRS   := $(LUA_MAIN:src/lua/%.lua=$(BUILD)/lua/%.lua.h)
LUA_OUT    := $(LUA_MAIN:src/lua/%.lua=$(BUILD)/lua/%.lua)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)

# Debian packages: to build, to run the tests, to run the demo.
DEB_BUILD  := gcc make pkg-config libhiredis-dev libevent-dev libconfig-dev libsystemd-dev \
              libjansson-dev libseccomp-dev
DEB_TEST   := $(DEB_BUILD) libcmocka-dev redis-server redis-tools python3 python3-pytest \
              systemd valgrind procps dpkg-dev lintian binutils util-linux iproute2 \
              groff-base man-db prometheus python3-prometheus-client python3-yaml \
              chromium stunnel4 openssl
DEB_DEMO   := $(DEB_BUILD) redis-server redis-tools procps
DEB_DEB    := $(DEB_BUILD) build-essential debhelper dpkg-dev devscripts lintian binutils
DEB_FUZZ   := clang-14 libfuzzer-14-dev
DEB_LINT   := cppcheck clang-tidy-14

.PHONY: all clean test unit e2e demo deps deps-test deps-demo asan tsan format install deb bench \
        fuzz lint

all: $(BUILD)/qworker $(BUILD)/qworker-run $(BUILD)/qworkerctl $(LUA_OUT)

$(BUILD)/qworker: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The operator's command (src/ctl/), on the daemon's own configuration, Redis and script code.
CTL_SRCS   := $(wildcard src/ctl/*.c)
CTL_OBJS   := $(CTL_SRCS:src/ctl/%.c=$(BUILD)/ctl/%.o)
$(BUILD)/qworkerctl: $(CTL_OBJS) $(LIB_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/ctl/%.o: src/ctl/%.c | $(BUILD)/ctl
	$(CC) $(WARN) $(CPPFLAGS) $(PKG_CFLAGS) -Isrc $(CFLAGS) -c -o $@ $<

$(BUILD)/ctl:
	mkdir -p $@

-include $(CTL_OBJS:.o=.d)

# What qworker runs a handler through to keep it apart (src/isolate.h); a program of its own.
$(BUILD)/qworker-run: src/run/qworker-run.c | $(BUILD)
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(shell pkg-config --libs libseccomp)

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(WARN) $(CPPFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/unit/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/unit
	$(CC) $(WARN) $(CPPFLAGS) $(PKG_CFLAGS) -Isrc $(CFLAGS) -o $@ $< $(LIB_OBJS) \
	    $(LDLIBS) $(shell pkg-config --libs cmocka)

$(BUILD)/scripts.o: $(LUA_HDRS)
$(BUILD)/scripts.o: CPPFLAGS += -I$(BUILD)/lua

$(BUILD)/lua/%.lua.h: src/lua/%.lua $(LUA_PARTS) src/lua/embed.awk | $(BUILD)/lua
	awk -v c=1 -f src/lua/embed.awk $< > $@.tmp && mv $@.tmp $@
$(BUILD)/lua/%.lua: src/lua/%.lua $(LUA_PARTS) src/lua/embed.awk | $(BUILD)/lua
	awk -v c=0 -f src/lua/embed.awk $< > $@.tmp && mv $@.tmp $@

$(BUILD) $(BUILD)/unit $(BUILD)/lua:
	mkdir -p $@

-include $(OBJS:.o=.d)

# Sanitizer builds live in their own directories so that they never mix objects.
asan:
	$(MAKE) BUILD=build/asan CFLAGS='-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all' \
	    LDFLAGS='-fsanitize=address,undefined' build/asan/qworker build/asan/qworker-run build/asan/qworkerctl $(UNIT_BINS:$(BUILD)/%=build/asan/%)
tsan:
	$(MAKE) BUILD=build/tsan CFLAGS='-O1 -g -fsanitize=thread' LDFLAGS='-fsanitize=thread' \
	    build/tsan/qworker build/tsan/qworker-run build/tsan/qworkerctl $(UNIT_BINS:$(BUILD)/%=build/tsan/%)

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
	$(call ensure_debs,$(DEB_TEST) $(DEB_LINT) $(DEB_FUZZ) $(DEB_DEB))
deps-demo:
	$(call ensure_debs,$(DEB_DEMO))

demo: deps-demo
	@$(MAKE) --no-print-directory all
	@tests/demo.sh $(BUILD)/qworker

unit: $(UNIT_BINS)
	@for t in $(UNIT_BINS); do $$t || exit 1; done

# Every test: static analysis; unit tests plain, under valgrind and under both sanitizers; a
# short round of every fuzz target; the end-to-end suite against the plain build, then again
# against the ASan+UBSan and TSan builds; the .deb in a real systemd.
test: deps-test
	@$(MAKE) --no-print-directory all unit asan tsan deb
	tests/run-all.sh

# Honours PREFIX, DESTDIR, sbindir, libexecdir, sysconfdir, datadir, mandir, docdir, unitdir,
# sysusersdir.
# Never overwrites an existing configuration.
install: all
	install -D -m 0755 $(BUILD)/qworker $(DESTDIR)$(sbindir)/qworker
	install -D -m 0755 $(BUILD)/qworkerctl $(DESTDIR)$(sbindir)/qworkerctl
	install -D -m 0755 $(BUILD)/qworker-run $(DESTDIR)$(libexecdir)/qworker/qworker-run
	install -d $(DESTDIR)$(unitdir)
	for u in qworker.service qworker@.service qworker-redis-tls.service; do \
	    sed -e 's|/usr/sbin/qworker|$(sbindir)/qworker|' -e 's|/etc/qworker/|$(sysconfdir)/qworker/|g' \
	        packaging/$$u > $(DESTDIR)$(unitdir)/$$u && chmod 0644 $(DESTDIR)$(unitdir)/$$u; \
	done
	install -D -m 0644 packaging/stunnel/qworker@.service-dropin.conf \
	    $(DESTDIR)$(unitdir)/qworker@.service.d/qworker-redis-tls.conf
	@# The TLS tunnel's stunnel configuration (qworker-redis-tls.service, not enabled): the pristine
	@# copy in the examples, like worker.conf's; in /etc only if none is there, to be edited.
	install -d $(DESTDIR)$(docdir)/examples
	sed -e 's|/etc/qworker/|$(sysconfdir)/qworker/|g' -e 's|/usr/share/doc/qworker/|$(docdir)/|g' \
	    packaging/stunnel/qworker-redis-tls.conf > $(DESTDIR)$(docdir)/examples/qworker-redis-tls.conf
	chmod 0644 $(DESTDIR)$(docdir)/examples/qworker-redis-tls.conf
	[ -e $(DESTDIR)$(sysconfdir)/qworker/tls/stunnel.conf ] || \
	    install -D -m 0644 $(DESTDIR)$(docdir)/examples/qworker-redis-tls.conf \
	        $(DESTDIR)$(sysconfdir)/qworker/tls/stunnel.conf
	install -D -m 0644 packaging/man/qworker.8 $(DESTDIR)$(mandir)/man8/qworker.8
	install -D -m 0644 packaging/man/qworkerctl.8 $(DESTDIR)$(mandir)/man8/qworkerctl.8
	install -D -m 0644 packaging/completion/qworkerctl \
	    $(DESTDIR)$(datadir)/bash-completion/completions/qworkerctl
	install -D -m 0644 packaging/man/worker.conf.5 $(DESTDIR)$(mandir)/man5/worker.conf.5
	install -D -m 0644 worker.conf.example $(DESTDIR)$(docdir)/examples/worker.conf.example
	install -D -m 0644 README.md $(DESTDIR)$(docdir)/README.md
	install -D -m 0644 -t $(DESTDIR)$(datadir)/qworker packaging/grafana/qworker-dashboard.json \
	    packaging/prometheus/qworker-rules.yml
	install -D -m 0644 packaging/qworker.sysusers $(DESTDIR)$(sysusersdir)/qworker.conf
	[ -e $(DESTDIR)$(sysconfdir)/qworker/worker.conf ] || \
	    install -D -m 0644 worker.conf.example $(DESTDIR)$(sysconfdir)/qworker/worker.conf
	@# Installed on this machine (a package does it in its postinst instead): the configuration
	@# may hold the Redis password, so it is closed to all but root and the service's group.
	if [ -z "$(DESTDIR)" ]; then \
	    systemd-sysusers $(sysusersdir)/qworker.conf && \
	    chgrp qworker-config $(sysconfdir)/qworker $(sysconfdir)/qworker/worker.conf && \
	    chmod 2750 $(sysconfdir)/qworker && chmod 0640 $(sysconfdir)/qworker/worker.conf; \
	fi

deb:
	$(call ensure_debs,$(DEB_DEB))
	@v=$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version); [ "$$v" = $(VERSION) ] || \
	    { echo "packaging/debian/changelog is at $$v, the Makefile at $(VERSION)" >&2; exit 1; }
	@rm -rf $(BUILD)/deb-src $(BUILD)/qworker_*.deb $(BUILD)/qworker-dbgsym_*.*deb
	@mkdir -p $(BUILD)/deb-src/qworker-$(VERSION)
	@tar -c --exclude=./.git --exclude=./build --exclude=./packaging/debian --exclude=__pycache__ \
	    --exclude=.pytest_cache . | tar -x -C $(BUILD)/deb-src/qworker-$(VERSION)
	@cp -R packaging/debian $(BUILD)/deb-src/qworker-$(VERSION)/debian
	@cd $(BUILD)/deb-src/qworker-$(VERSION) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BUILD \
	    -u CFLAGS -u CPPFLAGS -u LDFLAGS dpkg-buildpackage -us -uc -b -Jauto >../build.log 2>&1 || \
	    { tail -n 60 ../build.log >&2; echo "make deb: failed, see $(BUILD)/deb-src/build.log" >&2; exit 1; }
	@mv $(BUILD)/deb-src/qworker_*.deb $(BUILD)/deb-src/qworker-dbgsym_*.*deb $(BUILD)/
	@ls $(BUILD)/qworker_*.deb $(BUILD)/qworker-dbgsym_*.*deb

# Figures for BENCHMARKS.md: under 5 minutes; QUICK=1 under 1.
bench: deps-test
	@$(MAKE) --no-print-directory all $(BUILD)/spawn_ceiling $(BUILD)/wake_floor
	QUICK=$(QUICK) /usr/bin/python3 tests/bench/bench.py

$(BUILD)/spawn_ceiling: tests/bench/spawn_ceiling.c | $(BUILD)
	$(CC) $(WARN) -O2 -o $@ $<

$(BUILD)/wake_floor: tests/bench/wake_floor.c | $(BUILD)
	$(CC) $(WARN) $(PKG_CFLAGS) -O2 -o $@ $< $(PKG_LIBS)

# Static analysis: cppcheck and clang-tidy from Debian (tests/lint.sh says what is checked).
lint: deps
	$(call ensure_debs,$(DEB_LINT))
	tests/lint.sh

# libFuzzer targets (tests/fuzz/): FUZZ_SECONDS each (default 60); CI runs a short round.
-include tests/fuzz/fuzz.mk

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c

clean:
	rm -rf build
