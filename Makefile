# kt - fine-tune a pretrained ResNet on a folder of images.
PKGS    := libpng libjpeg libcjson openblas
CC      ?= cc
CFLAGS  ?= -std=c11 -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla
CPPFLAGS += -D_GNU_SOURCE $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

BUILD   ?= build
SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=$(BUILD)/%.o)
LIBOBJ  := $(filter-out $(BUILD)/main.o,$(OBJ))
TESTS   := $(patsubst test/%.c,$(BUILD)/test/%,$(wildcard test/t_*.c))

all: kt

kt: $(OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJ) $(LDLIBS)

$(BUILD)/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -MP -c -o $@ $<

$(BUILD)/test/%: test/%.c $(LIBOBJ)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(WARN) -Isrc -o $@ $< $(LIBOBJ) $(LDLIBS)

tests: kt $(TESTS)

test: tests
	@sh test/run.sh $(BUILD)

clean:
	rm -rf build build-asan kt

.PHONY: all test tests clean
-include $(OBJ:.o=.d)
