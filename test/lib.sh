# lib.sh - helpers for test/t_*.sh scripts (sourced). Run from the repository root.
KT=${KT:-./kt}
OUT=test/out
mkdir -p "$OUT"
nfail=0
ok() { echo "ok $*"; }
bad() { echo "FAIL $*"; nfail=$((nfail + 1)); }
# expect_exit CODE NAME CMD...: runs CMD, checks its exit status; stdout/stderr
# are kept in $OUT/last.out and $OUT/last.err for further checks.
expect_exit() {
    want=$1 name=$2; shift 2
    "$@" >"$OUT/last.out" 2>"$OUT/last.err"
    got=$?
    if [ "$got" -eq "$want" ]; then ok "$name"; else bad "$name: exit $got, want $want: $(head -c 300 "$OUT/last.err")"; fi
}
# expect_grep PATTERN FILE NAME
expect_grep() {
    if grep -q -- "$1" "$2"; then ok "$3"; else bad "$3: '$1' not in $2: $(head -c 300 "$2")"; fi
}
finish() { [ "$nfail" -eq 0 ]; exit $?; }
