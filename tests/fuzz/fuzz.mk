# libFuzzer targets (tests/fuzz/fuzz_<name>.c), built with Debian's clang-14 into build/fuzz/:
#   make fuzz [FUZZ_SECONDS=60]              every target FUZZ_SECONDS, one after the other, on a
#                                            copy of its seed corpus; fails if any crashes
#   make fuzz-smoke [FUZZ_SMOKE_SECONDS=20]  for CI: every committed seed and kept crash once,
#                                            then each target FUZZ_SMOKE_SECONDS; fails on any crash
#   make fuzz-build                          only build build/fuzz/fuzz_<name>
# FUZZ_SKIP_KNOWN=1 (with any of them): the targets built with -DFUZZ_SKIP_KNOWN_BUGS into
# build/fuzz/known/, where they skip the inputs of bugs reported but not fixed yet.
# Included by the top-level Makefile (WARN, CPPFLAGS, PKG_CFLAGS, PKG_LIBS, LIB_SRCS, DEB_BUILD,
# DEB_FUZZ, ensure_debs come from there). See tests/fuzz/README.md.

FUZZ_CC            ?= clang-14
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_OUT           := build/fuzz
FUZZ_OBJDIR        := $(FUZZ_OUT)/obj
FUZZ_TARGETS       := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BINDIR        := $(if $(FUZZ_SKIP_KNOWN),$(FUZZ_OUT)/known,$(FUZZ_OUT))
FUZZ_BINS          := $(FUZZ_TARGETS:%=$(FUZZ_BINDIR)/fuzz_%)
FUZZ_LIB_OBJS      := $(LIB_SRCS:src/%.c=$(FUZZ_OBJDIR)/%.o)
FUZZ_SAN           := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS        := -O1 -g -fno-omit-frame-pointer

.PHONY: fuzz fuzz-build fuzz-smoke fuzz-bins fuzz-lib fuzz-lib-objs fuzz-link

fuzz:
	$(call ensure_debs,$(DEB_BUILD) $(DEB_FUZZ))
	@$(MAKE) --no-print-directory fuzz-bins
	FUZZ_BIN_DIR=$(FUZZ_BINDIR) tests/fuzz/run.sh fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke:
	$(call ensure_debs,$(DEB_BUILD) $(DEB_FUZZ))
	@$(MAKE) --no-print-directory fuzz-bins
	FUZZ_BIN_DIR=$(FUZZ_BINDIR) tests/fuzz/run.sh smoke $(FUZZ_SMOKE_SECONDS) $(FUZZ_TARGETS)

fuzz-build:
	$(call ensure_debs,$(DEB_BUILD) $(DEB_FUZZ))
	@$(MAKE) --no-print-directory fuzz-bins

# Run in a sub-make by the targets above, so that pkg-config runs after ensure_debs.
fuzz-bins: fuzz-lib
	@$(MAKE) --no-print-directory fuzz-link
fuzz-link: $(FUZZ_BINS)
	@:

# The library (every src/*.c but main.c), instrumented for coverage but without libFuzzer's main,
# by the top-level Makefile's own rules in BUILD=build/fuzz/obj (as `make asan` does), so that its
# per-file flags and generated headers (src/lua/) apply here too.
fuzz-lib:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_OBJDIR) CC=$(FUZZ_CC) \
	    CFLAGS='$(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_SAN)' fuzz-lib-objs
fuzz-lib-objs: $(LIB_OBJS)
	@:

$(FUZZ_BINDIR)/fuzz_%.o: tests/fuzz/fuzz_%.c tests/fuzz/check.h
	@mkdir -p $(FUZZ_BINDIR)
	$(FUZZ_CC) $(WARN) $(CPPFLAGS) $(PKG_CFLAGS) -Isrc $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
	    $(FUZZ_SAN) $(if $(FUZZ_SKIP_KNOWN),-DFUZZ_SKIP_KNOWN_BUGS) -c -o $@ $<

$(FUZZ_BINDIR)/fuzz_%: $(FUZZ_BINDIR)/fuzz_%.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    -o $@ $< $(FUZZ_LIB_OBJS) $(PKG_LIBS) -lm -lpthread

.SECONDARY: $(FUZZ_TARGETS:%=$(FUZZ_BINDIR)/fuzz_%.o)

-include $(FUZZ_TARGETS:%=$(FUZZ_BINDIR)/fuzz_%.d)
