#!/bin/sh
# t_embed.sh - kt embed / kt predict as a user runs them: exit statuses,
# stdout only for results, stderr for the summary and warnings, no partial
# output file after a failure. The numbers are checked in t_resnet_cmds.c
# (which also writes the images used here, under test/out/cmds/imgs).
. test/lib.sh
M=test/fixtures/narrow50.safetensors
I=test/out/cmds/imgs
D=$OUT/embed
rm -rf "$D" && mkdir -p "$D"
if [ ! -f "$I/a.png" ]; then
    "${KT_BUILD:-build}/test/t_resnet_cmds" >/dev/null 2>&1
fi

expect_exit 0 "embed writes an .npy" $KT embed -m $M --layer avgpool -o "$D/f.npy" --resize 40 --size 32 "$I"
if [ -s "$OUT/last.out" ]; then bad "embed prints nothing on stdout"; else ok "embed prints nothing on stdout"; fi
expect_grep "wrote $D/f.npy \[5, 32\] float32" "$OUT/last.err" "embed summary names the file and shape on stderr"
if head -c 6 "$D/f.npy" | od -c | grep -q "N   U   M   P   Y"; then ok "npy magic"; else bad "npy magic"; fi
expect_exit 0 "embed --quiet" $KT embed -q -m $M --layer stem -o "$D/s.npy" --resize 40 --size 32 "$I/a.png"
if [ -s "$OUT/last.err" ]; then bad "embed --quiet is silent: $(cat "$OUT/last.err")"; else ok "embed --quiet is silent"; fi

expect_exit 2 "embed without --layer" $KT embed -m $M -o "$D/x.npy" "$I"
expect_grep "kt: error: .*--layer" "$OUT/last.err" "the missing option is named"
expect_exit 2 "embed with an unknown layer" $KT embed -m $M --layer nope -o "$D/x.npy" "$I"
expect_grep "unknown layer 'nope'" "$OUT/last.err" "unknown layer named"
expect_exit 3 "embed with a broken image" $KT embed -m $M --layer avgpool -o "$D/x.npy" --resize 40 --size 32 "$I/a.png" test/out/cmds/bad/broken.jpg
expect_grep "broken.jpg" "$OUT/last.err" "the broken image is named"
if [ -e "$D/x.npy" ] || [ -e "$D/x.npy.tmp" ]; then bad "no output after a failure"; else ok "no output after a failure"; fi
expect_exit 0 "embed --skip-bad" $KT embed --skip-bad -m $M --layer avgpool -o "$D/x.npy" --resize 40 --size 32 "$I/a.png" test/out/cmds/bad/broken.jpg
expect_grep "warning: skipped .*broken.jpg" "$OUT/last.err" "skipped image warned on stderr"
expect_exit 1 "embed with a model that is not one" $KT embed -m test/fixtures/bad/truncated.safetensors --layer stem -o "$D/x.npy" "$I"
expect_exit 1 "embed into a missing folder (I/O error)" $KT embed -m $M --layer stem -o "$D/no/such/x.npy" --resize 40 --size 32 "$I/a.png"
expect_grep "no/such/x.npy.tmp: cannot write: No such file" "$OUT/last.err" "the unwritable output is named with the reason"

expect_exit 0 "predict" $KT predict -m $M -k 2 --resize 40 --size 32 "$I/a.png" "$I/b.jpg"
if [ "$(wc -l <"$OUT/last.out")" -eq 2 ] && [ ! -s "$OUT/last.err" ]; then ok "predict: a line per image on stdout, nothing on stderr"
else bad "predict output: $(cat "$OUT/last.out" "$OUT/last.err")"; fi
expect_exit 2 "predict without a model" $KT predict "$I/a.png"
expect_exit 2 "predict with a missing labels file" $KT predict -m $M --labels "$D/none.txt" --resize 40 --size 32 "$I/a.png"
expect_exit 0 "embed --help" $KT embed --help
expect_grep "--layer" "$OUT/last.out" "embed --help lists --layer"
finish
