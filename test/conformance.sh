#!/bin/sh
# conformance.sh - `make conformance`: runs every test/conformance_*.sh
# (checks against ../shared/oracle), counts their "ok"/"FAIL" lines like
# test/run.sh and prints "N passed, N failed"; a script that exits non-zero
# without a FAIL line counts as one failure. Logs go to build/conformance/.
BUILD=${BUILD:-build}
mkdir -p "$BUILD/conformance"
pass=0 fail=0
for t in test/conformance_*.sh; do
    [ -e "$t" ] || continue
    log=$BUILD/conformance/$(basename "$t" .sh).log
    echo "== $t"
    BUILD=$BUILD sh "$t" >"$log" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$log")
    f=$(grep -c '^FAIL' "$log")
    grep '^FAIL' "$log"
    grep -i 'skipped' "$log"
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t exited with status $rc (see $log)"
        f=1
    fi
    echo "   $p passed, $f failed ($log)"
    pass=$((pass + p)) fail=$((fail + f))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
