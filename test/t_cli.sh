#!/bin/sh
# t_cli.sh - the command line: help and version on stdout with exit 0, usage
# errors on stderr with exit 2 and a "try" line, exit 1 when stdout fails.
. test/lib.sh

expect_exit 0 "kt --help exits 0" $KT --help
expect_grep '^usage: kt <command>' "$OUT/last.out" "kt --help prints usage on stdout"
[ -s "$OUT/last.err" ] && bad "kt --help writes nothing on stderr" || ok "kt --help writes nothing on stderr"
expect_exit 0 "kt -h exits 0" $KT -h
expect_exit 0 "kt help exits 0" $KT help
expect_grep 'validate' "$OUT/last.out" "kt help lists the commands"

expect_exit 0 "kt --version exits 0" $KT --version
expect_grep '^kt [0-9]' "$OUT/last.out" "version line"
expect_grep '^OpenBLAS: ' "$OUT/last.out" "OpenBLAS version"
expect_grep '^BLAS core: ' "$OUT/last.out" "OpenBLAS core"
expect_grep '^build: .*-std=c11' "$OUT/last.out" "build flags"

expect_exit 2 "kt without arguments exits 2" $KT
expect_grep 'usage: kt' "$OUT/last.err" "kt without arguments prints usage on stderr"

expect_exit 2 "unknown command exits 2" $KT trian
expect_grep "kt: error: unknown command 'trian'; did you mean 'train'?" "$OUT/last.err" "unknown command suggests"
expect_grep "try 'kt --help'" "$OUT/last.err" "unknown command: try line"

expect_exit 2 "unknown global option exits 2" $KT --bogus
expect_grep "unknown option '--bogus'" "$OUT/last.err" "unknown global option named"

expect_exit 2 "kt help of an unknown command exits 2" $KT help nosuch
expect_exit 2 "unknown command option exits 2" $KT validate --kyes
expect_grep "unknown option '--kyes'; did you mean '--keys'?" "$OUT/last.err" "unknown option suggests"
expect_grep "try 'kt validate --help'" "$OUT/last.err" "command usage error: try line"
expect_exit 2 "flag given a value exits 2" $KT validate --quiet=yes x.json
expect_grep "kt: error: --quiet: takes no value" "$OUT/last.err" "flag given a value: message"
expect_exit 2 "validate without a file exits 2" $KT validate
expect_grep "expected one job file" "$OUT/last.err" "validate without a file: message"
expect_exit 2 "validate with a missing file exits 2" $KT validate "$OUT/does-not-exist.json"
expect_grep "does-not-exist.json: No such file" "$OUT/last.err" "missing job file named"

expect_exit 0 "kt validate --help exits 0" $KT validate --help
expect_grep '^usage: kt validate' "$OUT/last.out" "kt validate --help on stdout"
expect_exit 0 "kt help validate exits 0" $KT help validate
expect_grep '^usage: kt validate' "$OUT/last.out" "kt help validate on stdout"

# Every command: --help works (or, until it is built, says so with exit 2),
# and an unknown option is a usage error.
for c in train predict eval embed inspect validate check cache; do
    $KT $c --help >"$OUT/h.out" 2>"$OUT/h.err"
    rc=$?
    if grep -q 'not built yet' "$OUT/h.err"; then
        [ $rc -eq 2 ] && ok "kt $c: not built yet, exit 2" || bad "kt $c: not built yet but exit $rc"
    elif [ $rc -eq 0 ] && grep -q "^usage: kt $c" "$OUT/h.out"; then
        ok "kt $c --help"
    else
        bad "kt $c --help: exit $rc: $(head -c 200 "$OUT/h.err")"
    fi
    expect_exit 2 "kt $c with an unknown option exits 2" $KT $c --no-such-option
done

# A result that cannot be written is a runtime failure, not a success.
if [ -w /dev/full ]; then
    $KT --help >/dev/full 2>"$OUT/last.err"
    rc=$?
    [ $rc -eq 1 ] && ok "stdout on a full device exits 1" || bad "stdout on a full device: exit $rc, want 1"
    expect_grep 'writing standard output failed' "$OUT/last.err" "stdout failure named"
fi
finish
