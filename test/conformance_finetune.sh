#!/bin/sh
# conformance_finetune.sh - the two fine-tune cases of ../shared/oracle/check_kt.md
# (SGD cut at layer3 with layer4 in train mode; Adam on the head alone), run
# with kt's own modules and checked by the oracle's compare.py.
#
# Run from the repository root after `make` (it links build/*.o). Needs
# ../shared/oracle and Debian's python3-torch to regenerate the reference
# weights into build/oracle/ (once, ~10 s). Prints compare.py's lines and
# "N passed, N failed"; exits non-zero on any failure.
set -u
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
ORACLE=$SHARED/oracle
OUT=$BUILD/conformance/finetune
WEIGHTS=$BUILD/oracle/resnet50_ref.safetensors

if [ ! -d "$ORACLE/cases" ]; then
    echo "conformance_finetune: skipped ($ORACLE/cases not found)"
    exit 0
fi
if [ ! -f "$WEIGHTS" ]; then
    /usr/bin/python3 "$ORACLE/make_reference.py" --weights-only --dest "$BUILD/oracle" >/dev/null ||
        { echo "FAIL conformance_finetune: could not make $WEIGHTS"; exit 1; }
fi

# The same compiler flags as the Makefile's test programs, linked with every
# library object (all of build/*.o but main.o).
flags=$(sed -n "s/^WARN *:= *//p" Makefile)
cflags="-std=c11 -O2 -g -D_GNU_SOURCE $(pkg-config --cflags libpng libjpeg libcjson openblas) $flags"
libs="$(pkg-config --libs libpng libjpeg libcjson openblas) -lpthread -lm"
objs=$(ls "$BUILD"/*.o | grep -v "/main\.o$")
mkdir -p "$OUT"
# shellcheck disable=SC2086
cc $cflags -Isrc -o "$BUILD/conf_finetune" test/conf_finetune.c $objs $libs ||
    { echo "FAIL conformance_finetune: build"; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
"$BUILD/conf_finetune" "$WEIGHTS" "$ORACLE/cases" "$OUT" || { echo "FAIL conformance_finetune: run"; exit 1; }
/usr/bin/python3 "$ORACLE/compare.py" "$OUT"
