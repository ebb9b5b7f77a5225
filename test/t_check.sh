#!/bin/sh
# t_check.sh - kt check on the clean data-samples and on a copy of it with one
# problem of each kind planted: every kind is reported, naming the file, in
# text and JSON, with exit status 3; a clean dataset exits 0.
. test/lib.sh
OUT=$OUT/t_check        # own last.out/last.err: other test scripts may run at the same time
mkdir -p "$OUT"
D=$OUT/data
rm -rf "$D" && mkdir -p "$D"

expect_exit 0 "check: data-samples train+val is clean" $KT check data-samples/train --val data-samples/val
expect_grep "clean: no problems found" "$OUT/last.out" "check: says clean"
expect_grep "^checkerboard  *24  *24  *8  *8" "$OUT/last.out" "check: counts per class, train and val"
expect_exit 0 "check --json on a clean dataset" $KT check --json data-samples/train
expect_grep '"clean":true' "$OUT/last.out" "check --json: clean true"
expect_grep '"problems":\[\]' "$OUT/last.out" "check --json: no problems"

# A damaged copy.
cp -r data-samples/train "$D/train" && cp -r data-samples/val "$D/val"
T=$D/train
first=$(ls "$T"/checkerboard/* | head -n 1)
cp "$first" "$T/checkerboard/copy of 00.jpg"
stripe=$(ls "$T"/stripes/*.jpg | head -n 1)
cp "$stripe" "$T/bubbles/looks_like_bubbles.jpg"
head -c 2000 "$stripe" >"$T/stripes/cut.jpg"
echo "label,file" >"$T/stripes/notes.jpg"
png=$(ls "$T"/bubbles/*.png | head -n 1)
cp "$png" "$T/bubbles/really_a_png.jpg"
mkdir "$T/empty_class"
leak=$(ls "$T"/checkerboard/checkerboard_0[1-9]* | head -n 1)
cp "$leak" "$D/val/checkerboard/leaked.jpg"
mv "$D/val/bubbles" "$D/val/balloons"

expect_exit 3 "check: a damaged dataset exits 3" $KT check "$T" --val "$D/val"
cp "$OUT/last.out" "$OUT/check.txt"
expect_grep "^duplicate_same_class: $T/checkerboard/copy of 00.jpg = $first" "$OUT/check.txt" "check: duplicate within a class"
expect_grep "^duplicate_across_classes: .* = .*" "$OUT/check.txt" "check: duplicate across classes"
expect_grep "$T/bubbles/looks_like_bubbles.jpg" "$OUT/check.txt" "check: duplicate across classes names the copy"
expect_grep "^bad_image: $T/stripes/cut.jpg (truncated JPEG" "$OUT/check.txt" "check: truncated JPEG with its reason"
expect_grep "^bad_image: $T/stripes/notes.jpg (not an image" "$OUT/check.txt" "check: text file named .jpg"
expect_grep "^mislabelled_extension: $T/bubbles/really_a_png.jpg (named JPEG, contains PNG)" "$OUT/check.txt" "check: PNG named .jpg"
expect_grep "^empty_class: $T/empty_class" "$OUT/check.txt" "check: empty class folder"
expect_grep "^leakage: $D/val/checkerboard/leaked.jpg = $leak" "$OUT/check.txt" "check: train/val leakage"
expect_grep "^missing_in_val: bubbles" "$OUT/check.txt" "check: class missing in val"
expect_grep "^unknown_val_class: balloons" "$OUT/check.txt" "check: val class unknown to train"
expect_grep "^missing_in_val: empty_class" "$OUT/check.txt" "check: empty class also missing in val"
# 12: the PNG copy named .jpg is also a duplicate of its original
expect_grep "^12 problems found" "$OUT/check.txt" "check: counts its problems"
expect_grep "kt: error: kt check: 12 problems in $T" "$OUT/last.err" "check: summary on stderr"

expect_exit 3 "check --json on a damaged dataset" $KT check --json "$T" --val "$D/val"
for k in duplicate_same_class duplicate_across_classes bad_image mislabelled_extension empty_class leakage missing_in_val unknown_val_class; do
    expect_grep "\"kind\":\"$k\"" "$OUT/last.out" "check --json: $k"
done
expect_grep '"clean":false' "$OUT/last.out" "check --json: clean false"
[ "$(wc -l <"$OUT/last.out")" -eq 1 ] && ok "check --json: one line of JSON" || bad "check --json: not one line"

expect_exit 3 "check --min-size flags small images" $KT check data-samples/val --min-size 1000
expect_grep "^too_small: data-samples/val/.*, shorter side below 1000)" "$OUT/last.out" "check: too_small names the file and size"

expect_exit 2 "check without a folder is a usage error" $KT check
expect_exit 3 "check of a missing folder is a data error" $KT check "$D/nowhere"
expect_grep "$D/nowhere: No such file" "$OUT/last.err" "check: missing folder named"
mkdir -p "$D/one/only" && cp "$png" "$D/one/only/"
expect_exit 3 "check: a single class is reported" $KT check "$D/one"
expect_grep "^single_class: $D/one" "$OUT/last.out" "check: single_class"
finish
