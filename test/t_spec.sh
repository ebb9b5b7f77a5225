#!/bin/sh
# t_spec.sh - "kt validate": the resolved spec on stdout with exit 0, or every
# problem with its file:line:col or JSON path and exit 2. Paths are relative
# to the job file, so jobs here live in their own folder, with the narrow
# ResNet fixtures standing in for the real weights (make test needs no
# downloaded weights) and empty image folders.
. test/lib.sh
D=$OUT/spec
rm -rf "$D"
mkdir -p "$D/imgs/train/a" "$D/imgs/val/a" "$D/weights/resnet50-keras/package/ResNet50" \
    "$D/data-samples/train" "$D/data-samples/val"
AD=$(cd "$D" && pwd -P)   # paths come out absolute
cp test/fixtures/narrow50.safetensors "$D/w.json"   # the name does not matter: formats are sniffed
cp test/fixtures/narrow50_keras/* "$D/weights/resnet50-keras/package/ResNet50/"

cat >"$D/ok.json" <<'J'
{"model": {"weights": "w.json"}, "data": {"train": "imgs/train", "val": "imgs/val"}}
J
expect_exit 0 "minimal job validates" $KT validate "$D/ok.json"
expect_grep "\"train\": \"$AD/imgs/train\"" "$OUT/last.out" "data.train resolved against the job's folder"
expect_grep '"min_lr": 0' "$OUT/last.out" "defaults filled in"
expect_grep '"dir": ".*/runs/ok"' "$OUT/last.out" "output.dir default"
mkdir -p "$D/elsewhere"
cp "$OUT/last.out" "$D/elsewhere/resolved.json"
expect_exit 0 "the resolved spec validates from another folder" $KT validate "$D/elsewhere/resolved.json"
expect_exit 0 "--quiet validates" $KT validate --quiet "$D/ok.json"
[ -s "$OUT/last.out" ] && bad "--quiet prints no spec" || ok "--quiet prints no spec"

# config.example.json, as shipped, next to stand-ins for what it points at.
cp config.example.json "$D/example.json"
expect_exit 0 "config.example.json validates" $KT validate "$D/example.json"
expect_grep '"name": "adamw"' "$OUT/last.out" "config.example.json resolved"
if [ -f weights/resnet50-keras/package/ResNet50/model.json ] && [ -d data-samples/train ]; then
    expect_exit 0 "config.example.json validates in place" $KT validate config.example.json
fi

printf '{\n  "model": {\n    "weights": "w.json",\n  }\n}\n' >"$D/syntax.json"
expect_exit 2 "syntax error exits 2" $KT validate "$D/syntax.json"
expect_grep "^$D/syntax.json:4:3: syntax error: trailing comma" "$OUT/last.err" "syntax error at file:line:col"

cat >"$D/type.json" <<'J'
{"model": {"weights": "w.json"}, "data": {"train": "imgs/train"}, "train": {"epochs": "ten"}}
J
expect_exit 2 "wrong type exits 2" $KT validate "$D/type.json"
expect_grep 'train.epochs: expected an integer in 1..1000000, got "ten"' "$OUT/last.err" "wrong type names the JSON path"

cat >"$D/range.json" <<'J'
{"model": {"weights": "w.json"}, "data": {"train": "imgs/train"}, "train": {"optimizer": {"lr": -1}}}
J
expect_exit 2 "out of range exits 2" $KT validate "$D/range.json"
expect_grep 'train.optimizer.lr: expected a number > 0, got -1' "$OUT/last.err" "out of range names the JSON path"

cat >"$D/unknown.json" <<'J'
{"model": {"weights": "w.json"}, "data": {"train": "imgs/train"}, "train": {"optimiser": {"lr": 0.1}}}
J
expect_exit 2 "unknown key exits 2" $KT validate "$D/unknown.json"
expect_grep "train.optimiser: unknown key; did you mean 'train.optimizer'?" "$OUT/last.err" "unknown key suggestion"

cat >"$D/missing.json" <<'J'
{"model": {"weights": "nowhere/w.safetensors"}, "data": {"train": "imgs/nope", "val": "w.json"}}
J
expect_exit 2 "missing paths exit 2" $KT validate "$D/missing.json"
expect_grep "model.weights: $AD/nowhere/w.safetensors: No such file or directory" "$OUT/last.err" "missing weights file named"
expect_grep "data.train: $AD/imgs/nope: No such file or directory" "$OUT/last.err" "missing train folder named"
expect_grep "data.val: $AD/w.json: not a folder" "$OUT/last.err" "a file where a folder belongs"
expect_grep "3 problems found" "$OUT/last.err" "every problem reported"
[ -s "$OUT/last.out" ] && bad "nothing on stdout for a bad spec" || ok "nothing on stdout for a bad spec"

expect_exit 2 "a job that is not a file exits 2" $KT validate "$D"

# The weights are opened and the cut point looked up in them.
cat >"$D/freeze.json" <<'J'
{"model": {"weights": "w.json", "freeze": "layer3.9"}, "data": {"train": "imgs/train"}}
J
expect_exit 2 "a cut point the weights lack exits 2" $KT validate "$D/freeze.json"
expect_grep "freeze.json: model.freeze: unknown layer 'layer3.9'; valid names: input" "$OUT/last.err" "cut point checked against the weights"
head -c 1000 test/fixtures/narrow50.safetensors >"$D/cut.safetensors"
cat >"$D/corrupt.json" <<'J'
{"model": {"weights": "cut.safetensors"}, "data": {"train": "imgs/train"}}
J
expect_exit 1 "corrupt weights exit 1" $KT validate "$D/corrupt.json"
expect_grep "corrupt.json: model.weights: .*cut.safetensors" "$OUT/last.err" "corrupt weights named"
finish
