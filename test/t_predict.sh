#!/bin/sh
# t_predict.sh - kt predict and kt eval as users run them, on a checkpoint
# trained here (narrow fixture, the generated dataset of t_train.sh): text and JSON formats, top-k,
# threshold, stdin and folders, a corrupt image among good ones, bad model
# files, eval's report and its agreement with predict, unknown classes.
# The numbers themselves are checked in t_predict.c.
. test/lib.sh
BUILD=${KT_BUILD:-build}
D=$OUT/predict
rm -rf "$D" && mkdir -p "$D"
OUT=$D # our own last.out/last.err: other test scripts may run at the same time
TAB=$(printf '\t')

# The learnable generated dataset (dark / light / stripes) of t_train.sh: a
# model that separates the classes makes the agreement checks meaningful.
WARNF=$(sed -n "s/^WARN *:= *//p" Makefile)
# shellcheck disable=SC2086
cc -std=c11 -O2 -D_GNU_SOURCE $WARNF $(pkg-config --cflags libpng libjpeg) -Itest \
    -o "$BUILD/gen_train_data" test/gen_train_data.c $(pkg-config --libs libpng libjpeg) ||
    { bad "build gen_train_data"; finish; }
"$BUILD/gen_train_data" "$D/data" >/dev/null || { bad "gen_train_data"; finish; }
VAL=$D/data/val

cat >"$D/job.json" <<EOF
{
  "model": {"weights": "$(pwd)/test/fixtures/narrow50.safetensors", "freeze": "layer3"},
  "head": {"hidden": [8], "dropout": 0.2, "activation": "relu"},
  "data": {"train": "$(pwd)/$D/data/train", "val": "$(pwd)/$VAL", "image_size": 48, "resize": 56, "workers": 2},
  "train": {"epochs": 4, "batch_size": 8, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "seed": 3, "threads": 2},
  "output": {"dir": "$(pwd)/$D/run"}
}
EOF
$KT train --quiet --no-cache "$D/job.json" >"$D/train.out" 2>"$D/train.err" ||
    { bad "train a checkpoint: $(cat "$D/train.err")"; finish; }
M=$D/run/best.safetensors
find "$VAL" -type f ! -name '.*' | LC_ALL=C sort >"$D/files"
NVAL=$(wc -l <"$D/files")

# --- text --------------------------------------------------------------------------
expect_exit 0 "predict a folder" $KT predict -m "$M" "$VAL"
cp "$OUT/last.out" "$D/text1"
[ ! -s "$OUT/last.err" ] && ok "nothing on stderr" || bad "stderr: $(cat "$OUT/last.err")"
[ "$(wc -l <"$D/text1")" -eq "$NVAL" ] && ok "one line per image ($NVAL)" || bad "$(wc -l <"$D/text1") lines for $NVAL images"
cut -f1 "$D/text1" | cmp -s - "$D/files" && ok "folder walked in sorted order" || bad "paths differ from the sorted folder"
awk -F'\t' 'NF != 3 || $2 !~ /^(dark|light|stripes)$/ || $3 < 0.3333 || $3 > 1 { exit 1 }' "$D/text1" &&
    ok "path TAB class name TAB top probability" || bad "bad text line: $(head -n 2 "$D/text1")"

expect_exit 0 "predict -k 3" $KT predict -m "$M" -k 3 "$VAL"
awk -F'\t' 'NF != 7 || $3 < $5 || $5 < $7 || $2 == $4 || $4 == $6 || $2 == $6 || ($3 + $5 + $7) < 0.9999 || ($3 + $5 + $7) > 1.0001 { exit 1 }' \
    "$OUT/last.out" && ok "-k 3: three classes per line, sorted, probabilities sum to 1" || bad "-k 3: $(head -n 2 "$OUT/last.out")"
cut -f1-3 "$OUT/last.out" | cmp -s - "$D/text1" && ok "-k 3 starts with the -k 1 answer" || bad "-k 3 first class differs"
expect_exit 0 "predict -k 9 (more than the classes)" $KT predict -m "$M" -k 9 "$VAL/dark/000.jpg"
awk -F'\t' 'NF != 7 { exit 1 }' "$OUT/last.out" && ok "-k larger than the class count shows every class" || bad "-k 9: $(cat "$OUT/last.out")"

# --- JSON ----------------------------------------------------------------------------
expect_exit 0 "predict --json -k 2" $KT predict -m "$M" --json -k 2 "$VAL"
cp "$OUT/last.out" "$D/json1"
[ "$(grep -c '^{"image":"[^"]*","top":\[{"index":[0-2],"label":"[a-z]*","prob":[0-9.e-]*},{"index":[0-2],"label":"[a-z]*","prob":[0-9.e-]*}\]}$' "$D/json1")" -eq "$NVAL" ] &&
    ok "--json: one object per line with image and two {index, label, prob}" || bad "--json: $(head -n 2 "$D/json1")"
sed 's/^{"image":"\([^"]*\)","top":\[{"index":[0-9]*,"label":"\([^"]*\)","prob":\([^}]*\)}.*/\1\t\2/' "$D/json1" >"$D/json_top"
cut -f1,2 "$D/text1" | cmp -s - "$D/json_top" && ok "--json and text give the same top class" || bad "JSON and text disagree"
if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, sys
for line in open(sys.argv[1]):
    o = json.loads(line)
    assert set(o) == {"image", "top"} and len(o["top"]) == 2
    assert o["top"][0]["prob"] >= o["top"][1]["prob"]
' "$D/json1" 2>"$D/py.err" && ok "--json lines parse as JSON" || bad "--json does not parse: $(cat "$D/py.err")"
fi

# --- stdin, repeated files, folders on stdin ---------------------------------------
$KT predict -m "$M" - <"$D/files" >"$D/stdin.out" 2>"$D/stdin.err"
[ $? -eq 0 ] && cmp -s "$D/stdin.out" "$D/text1" && ok "paths on stdin (-): same output as the folder" ||
    bad "stdin: $(head -c 300 "$D/stdin.err")"
printf '%s\n\n%s\r\n' "$VAL" "$VAL/stripes/000.jpg" | $KT predict -m "$M" - >"$D/stdin2.out" 2>"$D/stdin.err"
[ $? -eq 0 ] && [ "$(wc -l <"$D/stdin2.out")" -eq $((NVAL + 1)) ] && ok "stdin: a folder line is walked, blank lines and CR skipped" ||
    bad "stdin folder: $(cat "$D/stdin.err")"
a=$VAL/stripes/003.png b=$VAL/dark/002.jpg
expect_exit 0 "files in any order, one twice" $KT predict -m "$M" "$a" "$b" "$a"
[ "$(cut -f1 "$OUT/last.out" | tr '\n' ' ')" = "$a $b $a " ] && ok "output in argument order" || bad "order: $(cut -f1 "$OUT/last.out")"
expect_exit 2 "no input at all on stdin" $KT predict -m "$M" - </dev/null
expect_exit 2 "a missing argument" $KT predict -m "$M" "$VAL/nope.jpg"
expect_grep "nope.jpg" "$OUT/last.err" "the missing argument is named"

# --- threshold -------------------------------------------------------------------------
expect_exit 0 "--threshold 1: every image abstains" $KT predict -m "$M" --threshold 1 "$VAL"
[ "$(cut -f2 "$OUT/last.out" | sort -u)" = unknown ] && ok "labels are all 'unknown'" || bad "threshold 1: $(cut -f2 "$OUT/last.out" | sort -u)"
cut -f3 "$D/text1" >"$D/p1" && cut -f3 "$OUT/last.out" | cmp -s - "$D/p1" && ok "abstaining keeps the top probability" || bad "threshold changed the probabilities"
# Halfway between two printed probabilities, so no image sits on the edge.
P=$(sort -n "$D/p1" | awk -v h=$((NVAL / 2)) 'NR >= h && !p && prev != "" && $1 - prev > 1e-5 { p = (prev + $1) / 2 }
    { prev = $1 } END { printf "%.7f\n", p }')
$KT predict -m "$M" --threshold "$P" "$VAL" >"$D/thr.out" 2>&1
awk -F'\t' -v p="$P" 'NR == FNR { lab[FNR] = $2; next }
    { want = ($3 + 0 < p + 0) ? "unknown" : lab[FNR]; if ($2 != want) exit 1 }' "$D/text1" "$D/thr.out" &&
    ok "--threshold $P: exactly the images below it say unknown" || bad "threshold $P: $(head -n 3 "$D/thr.out")"
$KT predict -m "$M" --json --threshold "$P" "$VAL" >"$D/thr.json" 2>&1
n=$(grep -c '"abstained":true' "$D/thr.json")
[ "$n" -eq "$(grep -c "${TAB}unknown${TAB}" "$D/thr.out")" ] && [ "$n" -gt 0 ] && ok "--json: \"abstained\": true on the same $n images" ||
    bad "abstained count $n"
expect_exit 2 "--threshold 1.5 is out of range" $KT predict -m "$M" --threshold 1.5 "$VAL"

# --- a corrupt image among good ones -----------------------------------------------------
mkdir -p "$D/mixed"
cp "$VAL/dark/000.jpg" "$D/mixed/a.jpg"
cp "$VAL/light/001.png" "$D/mixed/c.png"
cp "$VAL/stripes/002.jpg" "$D/mixed/e.jpg"
head -c 400 "$VAL/dark/002.jpg" >"$D/mixed/b_truncated.jpg"
echo "not an image" >"$D/mixed/d_text.png"
for bs in 1 2 16; do
    expect_exit 3 "corrupt images among good ones (batch $bs): exit 3" $KT predict -m "$M" -b "$bs" "$D/mixed"
    [ "$(wc -l <"$OUT/last.out")" -eq 3 ] && ok "batch $bs: the 3 good images are classified" || bad "batch $bs: $(cat "$OUT/last.out")"
    grep -q "b_truncated.jpg" "$OUT/last.err" && grep -q "d_text.png" "$OUT/last.err" &&
        ok "batch $bs: both bad images named on stderr" || bad "batch $bs stderr: $(cat "$OUT/last.err")"
done
$KT predict -m "$M" "$D/mixed/a.jpg" "$D/mixed/c.png" "$D/mixed/e.jpg" >"$D/good3" 2>/dev/null
$KT predict -m "$M" -b 2 "$D/mixed" >"$D/mixed.out" 2>/dev/null
cmp -s "$D/good3" "$D/mixed.out" && ok "the good images' results are unchanged by the bad ones" || bad "results changed: $(cat "$D/mixed.out")"
expect_exit 3 "--json with bad images" $KT predict -m "$M" --json -b 2 "$D/mixed"
[ "$(wc -l <"$OUT/last.out")" -eq 5 ] && sed -n 2p "$OUT/last.out" | grep -q '^{"image":"[^"]*b_truncated.jpg","error":"[^"]' &&
    sed -n 4p "$OUT/last.out" | grep -q '^{"image":"[^"]*d_text.png","error":"[^"]*not.*' &&
    sed -n 3p "$OUT/last.out" | grep -q '^{"image":"[^"]*c.png","top":' &&
    ok "--json: an {image, error} line for each bad image, in input order" || bad "--json errors: $(cat "$OUT/last.out")"
printf '%s\n%s\n' "$VAL/stripes/000.jpg" "$D/gone.jpg" | $KT predict -m "$M" - >"$D/gone.out" 2>"$D/gone.err"
[ $? -eq 3 ] && [ "$(wc -l <"$D/gone.out")" -eq 1 ] && grep -q "gone.jpg" "$D/gone.err" &&
    ok "a vanished file from stdin: reported, the others classified, exit 3" || bad "vanished file: $(cat "$D/gone.err")"

# --- model files that are not a usable classifier --------------------------------------------
expect_exit 1 "a truncated safetensors as MODEL: exit 1" $KT predict -m test/fixtures/bad/truncated.safetensors "$VAL"
expect_grep "truncated.safetensors" "$OUT/last.err" "the truncated file is named"
head -c $(($(wc -c <"$M") - 500)) "$M" >"$D/cut.safetensors"
expect_exit 1 "a truncated checkpoint: exit 1" $KT predict -m "$D/cut.safetensors" "$VAL"
expect_grep "kt: error: .*cut.safetensors" "$OUT/last.err" "the checkpoint is named"
NOHEAD=test/out/predictc/nohead.safetensors
[ -f "$NOHEAD" ] || "$BUILD/test/t_predict" >/dev/null 2>&1
expect_exit 2 "a weights file without a classifier: exit 2" $KT predict -m "$NOHEAD" "$VAL"
expect_grep "no classifier" "$OUT/last.err" "says why"
expect_exit 2 "predict without --model" $KT predict "$VAL"

# --- a pretrained classifier: indices, or --labels names ----------------------------------------
P50=test/fixtures/narrow50.safetensors
expect_exit 0 "pretrained model with its own head" $KT predict -m "$P50" -k 2 "$VAL/dark"
awk -F'\t' 'NF != 5 || $2 !~ /^[0-4]$/ { exit 1 }' "$OUT/last.out" && ok "class indices as labels without names" || bad "$(head -n 1 "$OUT/last.out")"
printf 'a\nb\nc\nd\ne\n' >"$D/labels.txt"
expect_exit 0 "pretrained model --labels" $KT predict -m "$P50" --labels "$D/labels.txt" "$VAL/dark"
awk -F'\t' '$2 !~ /^[a-e]$/ { exit 1 }' "$OUT/last.out" && ok "names from --labels" || bad "$(head -n 1 "$OUT/last.out")"

# --- eval ----------------------------------------------------------------------------------
expect_exit 0 "eval" $KT eval -m "$M" "$VAL"
cp "$OUT/last.out" "$D/eval.txt"
best=$(sed -n 's/^best val_acc \([0-9.]*\) at epoch.*/\1/p' "$D/train.out")
acc=$(sed -n 's/^accuracy  *\([0-9.]*\) .*/\1/p' "$D/eval.txt")
[ -n "$best" ] && [ "$acc" = "$best" ] && ok "eval accuracy $acc = training's best val_acc $best" || bad "eval $acc, training $best"
for w in "^class  *precision  *recall  *f1  *support" "^dark  *[0-9.]*  *[0-9.]*  *[0-9.]*  *12$" "^confusion" \
    "^  *dark  *light  *stripes$" "^misclassified ("; do
    expect_grep "$w" "$D/eval.txt" "eval text has '$w'"
done
grep -q "^top-5" "$D/eval.txt" && bad "top-5 shown with 3 classes" || ok "no top-5 with fewer than 5 classes"
# predict's disagreements with the folder names are exactly eval's misclassified list
awk -F'\t' '{ n = split($1, p, "/"); if (p[n - 1] != $2) print $1 "\t" p[n - 1] "\t" $2 }' "$D/text1" >"$D/wrong.pred"
sed -n '/^misclassified/,/^$/p' "$D/eval.txt" | grep "$TAB" | cut -f1-3 >"$D/wrong.eval"
nw=$(wc -l <"$D/wrong.pred")
cmp -s "$D/wrong.pred" "$D/wrong.eval" && ok "eval's $nw misclassified files = predict's disagreements, same labels" ||
    bad "eval and predict disagree: $(diff "$D/wrong.pred" "$D/wrong.eval" | head -5)"
grep -q "^accuracy  *[0-9.]*  ($((NVAL - nw)) of $NVAL)" "$D/eval.txt" && ok "accuracy counts = predict's hits" ||
    bad "counts: $(grep '^accuracy' "$D/eval.txt")"

expect_exit 0 "eval --json" $KT eval -m "$M" --json "$VAL"
cp "$OUT/last.out" "$D/eval.json"
[ "$(wc -l <"$D/eval.json")" -eq 1 ] && ok "--json: one object" || bad "--json: $(wc -l <"$D/eval.json") lines"
for k in '"acc":' '"loss":' '"per_class":\[{"class":"dark","precision":' '"confusion":\[\[' \
    '"classes":\["dark","light","stripes"\]' '"misclassified":\[' '"skipped":\[\]' '"unknown_classes":\[\]'; do
    expect_grep "$k" "$D/eval.json" "eval --json has $k"
done
[ "$(grep -o '"predicted"' "$D/eval.json" | wc -l)" -eq "$nw" ] && ok "--json lists the $nw misclassified" || bad "--json misclassified count"
if command -v python3 >/dev/null 2>&1; then
    python3 - "$D/eval.json" "$D/run/metrics.jsonl" 2>"$D/py.err" <<'EOF' && ok "--json: accuracy and confusion equal the best epoch's in metrics.jsonl" || bad "eval --json vs metrics.jsonl: $(cat "$D/py.err")"
import json, sys
e = json.load(open(sys.argv[1]))
epochs = [json.loads(l) for l in open(sys.argv[2]) if '"event":"epoch"' in l]
best = max(epochs, key=lambda o: o["val_acc"])  # first maximum, as best_metric val_acc keeps
assert e["acc"] == best["val_acc"], (e["acc"], best["val_acc"])
assert e["confusion"] == best["val"]["confusion"]
assert abs(e["loss"] - best["val_loss"]) < 1e-5 * max(1, best["val_loss"])
EOF
fi

# unknown folder classes, bad images, no known class
mkdir -p "$D/ev/dark" "$D/ev/wasps"
cp "$VAL"/dark/* "$D/ev/dark/"
cp "$VAL"/stripes/00[0-2]* "$D/ev/wasps/"
expect_exit 0 "eval with a class the model does not know" $KT eval -m "$M" "$D/ev"
expect_grep "warning: .*wasps.* not one of the model's; its 3 images are left out" "$OUT/last.err" "the unknown class is warned about"
expect_grep "^wasps${TAB}3 images" "$OUT/last.out" "and listed in the report"
expect_grep "([0-9]* of 12)" "$OUT/last.out" "only the known class's 12 images count"
expect_exit 3 "--strict: an unknown class is exit 3" $KT eval -m "$M" --strict "$D/ev"
expect_exit 0 "eval --json with an unknown class" $KT eval -m "$M" --json "$D/ev"
expect_grep '"unknown_classes":\[{"class":"wasps","images":3}\]' "$OUT/last.out" "--json lists it"
cp "$D/mixed/d_text.png" "$D/ev/dark/zz.png"
rm -r "$D/ev/wasps"
expect_exit 0 "eval with an unreadable image" $KT eval -m "$M" --json "$D/ev"
expect_grep '"skipped":\[{"image":"[^"]*zz.png","error":' "$OUT/last.out" "the unreadable image is listed"
expect_grep "skipped .*zz.png" "$OUT/last.err" "and warned about"
expect_exit 3 "--strict: an unreadable image is exit 3" $KT eval -m "$M" --strict "$D/ev"
mkdir -p "$D/ev2/wasps" && cp "$VAL"/stripes/000.jpg "$D/ev2/wasps/"
expect_exit 3 "eval on a folder with no class of the model: exit 3" $KT eval -m "$M" "$D/ev2"
expect_grep "none of its 1 class folders is a class of the model (dark, light, stripes)" "$OUT/last.err" "names the model's classes"
expect_exit 2 "eval without a folder" $KT eval -m "$M"
expect_exit 2 "eval with two folders" $KT eval -m "$M" "$VAL" "$VAL"
expect_exit 2 "eval on a missing folder" $KT eval -m "$M" "$D/none"
expect_exit 1 "eval with a truncated checkpoint" $KT eval -m "$D/cut.safetensors" "$VAL"

# a pretrained 5-class model: folder names matched to --labels or to indices; top-5
mkdir -p "$D/ev5/a" "$D/ev5/c" "$D/ev5/1"
cp "$VAL"/dark/00[0-3]* "$D/ev5/a/" && cp "$VAL"/stripes/00[0-3]* "$D/ev5/c/"
cp "$VAL"/light/00[0-1]* "$D/ev5/1/"
expect_exit 0 "eval a pretrained model with --labels" $KT eval -m "$P50" --labels "$D/labels.txt" "$D/ev5"
expect_grep "^top-5  *1.0000  (8 of 8)" "$OUT/last.out" "top-5 shown with 5 classes (every image in it)"
expect_grep "^1${TAB}2 images" "$OUT/last.out" "a folder not named by the labels is unknown"
expect_exit 0 "eval a pretrained model without labels: indices are the names" $KT eval -m "$P50" "$D/ev5"
expect_grep "(2 images)" "$OUT/last.out" "only the folder '1' matches"
finish
