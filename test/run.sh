#!/bin/sh
# Runs every test program (build/test/t_*) and test script (test/t_*.sh),
# counts their "ok" / "FAIL" lines and prints "N passed, N failed" last.
# A program that crashes or exits non-zero without a FAIL line counts as a failure.
BUILD=${1:-build}
mkdir -p test/out
pass=0 fail=0
for t in "$BUILD"/test/t_* test/t_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.d) continue ;; esac
    log=test/out/$(basename "$t").log
    if [ "${t%.sh}" != "$t" ]; then KT_BUILD=$BUILD sh "$t" >"$log" 2>&1; else "$t" >"$log" 2>&1; fi
    rc=$?
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep '^FAIL ' "$log"
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t exited with status $rc (see $log)"
        f=1
    fi
    pass=$((pass + p)) fail=$((fail + f))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
