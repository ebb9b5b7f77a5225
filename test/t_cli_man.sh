#!/bin/sh
# t_cli_man.sh - the man page documents what the program offers: every long
# option printed by "kt --help" and "kt CMD --help", every command, every
# job-spec key of the schema and every exit status in src/err.h.
. test/lib.sh
MAN=man/kt.1

# Long options as groff writes them: "\-\-name".
check_options() { # name, help text file
    for o in $(grep -o -- '--[a-z][a-z0-9-]*' "$2" | sort -u); do
        m=$(printf '%s' "$o" | sed 's/-/\\-/g')
        if grep -qF -- "$m" "$MAN"; then ok "$1: $o in the man page"; else bad "$1: $o missing from $MAN"; fi
    done
}

$KT --help >"$OUT/man-help.txt" 2>&1
check_options "kt --help" "$OUT/man-help.txt"
cmds=$(sed -n '/^commands:/,/^$/p' "$OUT/man-help.txt" | awk 'NF > 1 { print $1 }')
[ -n "$cmds" ] && ok "kt --help lists commands" || bad "kt --help lists no commands"
for c in $cmds; do
    if grep -qE "^(\.B[IR]? \"?|\\\\fB)$c( |\"|\\\\|$)" "$MAN"; then ok "command $c in the man page"; else bad "command $c missing from $MAN"; fi
    if $KT "$c" --help >"$OUT/man-$c.txt" 2>/dev/null; then
        check_options "kt $c --help" "$OUT/man-$c.txt"
    fi
done

$KT validate --keys >"$OUT/man-keys.txt"
n=$(wc -l <"$OUT/man-keys.txt")
[ "$n" -gt 50 ] && ok "kt validate --keys lists $n keys" || bad "kt validate --keys lists only $n keys"
for k in $(awk '{ print $1 }' "$OUT/man-keys.txt"); do
    case $k in *.*) ;; *) continue ;; esac   # sections are headings
    if grep -qF -- "$k" "$MAN"; then ok "job key $k in the man page"; else bad "job key $k missing from $MAN"; fi
done

for code in $(sed -n 's/.*KT_[A-Z_]* = \([0-9]*\).*/\1/p' src/err.h); do
    if sed -n '/^\.SH EXIT STATUS/,/^\.SH /p' "$MAN" | grep -qx "\.B $code"; then
        ok "exit status $code documented"
    else
        bad "exit status $code missing from EXIT STATUS in $MAN"
    fi
done
for v in OPENBLAS_CORETYPE KT_CACHE_DIR XDG_CACHE_HOME; do
    grep -q "^\.B $v" "$MAN" && ok "environment $v documented" || bad "environment $v missing from $MAN"
done
finish
