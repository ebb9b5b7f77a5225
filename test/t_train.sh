#!/bin/sh
# t_train.sh - kt train end to end on a generated 3-class dataset with the
# narrow ResNet-50 fixture: it learns; runs are deterministic; kill -9 at
# random moments and running again gives bit-identical final weights;
# SIGTERM and train.max_time give 75 and a resumable checkpoint; NaN gives 4;
# gates 5; bad specs 2, bad data 3; a changed job is refused on resume; the
# checkpoint is read back by an independent reader.
. test/lib.sh
BUILD=${KT_BUILD:-build}
D=$OUT/train
rm -rf "$D" && mkdir -p "$D"
OUT=$D # expect_exit's last.out/last.err: our own, other test scripts may run at the same time
KT_CACHE_DIR=$(pwd)/$D/kcache # never the user's cache folder
export KT_CACHE_DIR

# The dataset generator is a helper program, not a unit test: built here with
# the Makefile's warning flags.
WARNF=$(sed -n "s/^WARN *:= *//p" Makefile)
# shellcheck disable=SC2086
cc -std=c11 -O2 -D_GNU_SOURCE $WARNF $(pkg-config --cflags libpng libjpeg) -Itest \
    -o "$BUILD/gen_train_data" test/gen_train_data.c $(pkg-config --libs libpng libjpeg) ||
    { bad "build gen_train_data"; finish; }
"$BUILD/gen_train_data" "$D/data" || { bad "gen_train_data"; finish; }
FIX=$(pwd)/test/fixtures/narrow50.safetensors

# job NAME [EXTRA_TRAIN_KEYS] [EXTRA_TOP_KEYS]: writes $D/NAME.json with output $D/NAME
job() {
    cat >"$D/$1.json" <<EOF
{
  "model": {"weights": "$FIX", "freeze": "layer3"},
  "head": {"hidden": [16], "dropout": 0.2, "activation": "gelu"},
  "data": {"train": "data/train", "val": "data/val", "image_size": 64, "resize": 72, "workers": 2},
  "train": {"epochs": 6, "batch_size": 8,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0001},
            "schedule": {"name": "cosine", "warmup_epochs": 0.5},
            "seed": 3, "threads": 1, "log_every": 4${2:+, $2}},
  "output": {"dir": "$1", "keep": 1}${3:+, $3}
}
EOF
}

# Tensor bytes of a safetensors file (everything after the header): equal
# bytes mean bit-identical tensors, since kt writes them in a fixed order.
data_of() {
    n=$(od -An -t u8 -N8 "$1" | tr -d ' ')
    tail -c +$((n + 9)) "$1"
}
same_tensors() {
    data_of "$1" >"$D/a.bin" && data_of "$2" >"$D/b.bin" && cmp -s "$D/a.bin" "$D/b.bin"
}

# --- it learns, and says so in every output --------------------------------------
job ref '"gates": {"val_acc": 0.8}'
expect_exit 0 "train runs (3 classes, cut at layer3, MLP head, gate val_acc >= 0.8)" $KT train "$D/ref.json"
expect_grep "best val_acc" "$OUT/last.out" "summary on stdout"
expect_grep "frozen: .* bit-identical" "$OUT/last.err" "frozen tensors verified in the log"
expect_grep "skipping\|zz_broken" "$OUT/last.err" "the broken image is reported"
R=$D/ref
for f in job.json metrics.jsonl last.safetensors best.safetensors epoch-0006.safetensors; do
    [ -s "$R/$f" ] && ok "output $f" || bad "output $f missing"
done
[ ! -e "$R/epoch-0005.safetensors" ] && ok "keep 1 prunes older epoch files" || bad "epoch-0005 kept"
n=$(grep -c '"event":"epoch"' "$R/metrics.jsonl")
[ "$n" -eq 6 ] && ok "metrics.jsonl: 6 epoch lines" || bad "metrics.jsonl: $n epoch lines"
grep -q '"event":"step".*"lr":' "$R/metrics.jsonl" && ok "metrics.jsonl: step lines with lr" || bad "no step lines"
grep -q '"event":"step".*"step_s":[0-9.]*[1-9]' "$R/metrics.jsonl" && ok "metrics.jsonl: step lines time their step (step_s > 0)" || bad "no step_s in step lines"
first=$(grep '"event":"epoch"' "$R/metrics.jsonl" | head -n 1 | sed 's/.*"val_loss":\([0-9.e-]*\).*/\1/')
last=$(grep '"event":"epoch"' "$R/metrics.jsonl" | tail -n 1 | sed 's/.*"val_loss":\([0-9.e-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a / 2) }' &&
    ok "val loss falls ($first -> $last)" || bad "val loss did not fall: $first -> $last"

# kt embed on the checkpoint takes its geometry (resize 72, crop 64) by default
img=$(find "$D/data/val" -type f | sort | head -n 1)
expect_exit 0 "embed a checkpoint" $KT embed -q -m "$R/best.safetensors" --layer layer4 -o "$D/e1.npy" "$img"
expect_exit 0 "embed a checkpoint, geometry given" $KT embed -q -m "$R/best.safetensors" --layer layer4 \
    --resize 72 --size 64 -o "$D/e2.npy" "$img"
cmp -s "$D/e1.npy" "$D/e2.npy" && ok "embed uses the checkpoint's resize and crop by default" ||
    bad "embed on a checkpoint ignores its geometry"

# --- deterministic -----------------------------------------------------------------
job again
expect_exit 0 "same job again" $KT train --quiet "$D/again.json"
same_tensors "$R/last.safetensors" "$D/again/last.safetensors" &&
    ok "same seed and threads: bit-identical weights" || bad "two identical runs differ"

# --- kill -9 at random moments, run again until done: bit-identical -----------------
# Saving after every step (output.checkpoint_every 0) puts many kills inside a
# checkpoint write; the reference saves only at epoch ends.
job crash '"epochs": 12'
job crashref '"epochs": 12'
for j in crash crashref; do sed -i 's/"epochs": 6, //' "$D/$j.json"; done
sed -i 's/"keep": 1}/"keep": 1, "checkpoint_every": 0}/' "$D/crash.json"
sed -i 's/"keep": 1}/"keep": 1, "checkpoint_every": "1h"}/' "$D/crashref.json"
t0=$(date +%s%N)
expect_exit 0 "reference for the crash runs" $KT train --quiet "$D/crashref.json"
# Kill moments scale with how long the whole run takes on this machine.
ms=$((($(date +%s%N) - t0) / 1000000))
kills=0 runs=0
while [ $runs -lt 6 ]; do
    runs=$((runs + 1))
    $KT train --quiet "$D/crash.json" >/dev/null 2>"$D/crash.err" &
    pid=$!
    sleep "$(awk -v s="$(date +%N)$runs" -v ms="$ms" 'BEGIN { srand(s); print (20 + rand() * ms / 4) / 1000 }')"
    kill -9 $pid 2>/dev/null && kills=$((kills + 1))
    wait $pid 2>/dev/null
done
$KT train --quiet "$D/crash.json" >/dev/null 2>"$D/crash.err"
rc=$?
[ $rc -eq 0 ] && ok "crashed run completes after $kills kill -9 ($runs runs)" ||
    bad "crashed run: exit $rc after $runs runs: $(head -c 300 "$D/crash.err")"
[ $kills -ge 3 ] && ok "at least three kills landed" || bad "only $kills kills landed"
same_tensors "$D/crashref/last.safetensors" "$D/crash/last.safetensors" &&
    ok "killed and continued run: bit-identical to the uninterrupted one" ||
    bad "killed and continued run differs from the reference"
steps=$(grep -o '"event":"step","epoch":[0-9]*,"batch":[0-9]*,"step":[0-9]*' "$D/crash/metrics.jsonl" | sed 's/.*"step"://')
sorted=$(echo "$steps" | sort -n -u)
[ "$steps" = "$sorted" ] && ok "metrics.jsonl of the continued run: steps increase, no repeats" ||
    bad "metrics.jsonl repeats steps after resume"

# --- SIGTERM: 75 and a checkpoint the same command continues from --------------------
job term '"epochs": 30' ''
sed -i 's/"epochs": 6, //' "$D/term.json"
$KT train --quiet "$D/term.json" >/dev/null 2>"$D/term.err" &
pid=$!
sleep 0.3
expect_exit 1 "a second kt train on the same output.dir is refused" $KT train --quiet "$D/term.json"
expect_grep "another kt train is running" "$OUT/last.err" "second run: says why"
sleep 0.2
kill -TERM $pid
wait $pid
rc=$?
[ $rc -eq 75 ] && ok "SIGTERM: exit 75" || bad "SIGTERM: exit $rc, want 75"
expect_grep "stopped by SIGTERM after step" "$D/term.err" "SIGTERM: message names the step"
[ -s "$D/term/last.safetensors" ] && ok "SIGTERM: last.safetensors written" || bad "SIGTERM: no checkpoint"
expect_exit 0 "SIGTERM: running again finishes the job" $KT train --quiet "$D/term.json"
job termref '"epochs": 30'
sed -i 's/"epochs": 6, //' "$D/termref.json"
expect_exit 0 "reference for the SIGTERM run" $KT train --quiet "$D/termref.json"
same_tensors "$D/term/last.safetensors" "$D/termref/last.safetensors" &&
    ok "SIGTERM and continue: bit-identical to the uninterrupted run" || bad "SIGTERM run differs"

# --- train.max_time stops the same way -----------------------------------------------
job maxtime '"max_time": 0.3, "epochs": 30'
sed -i 's/"epochs": 6, //' "$D/maxtime.json"
expect_exit 75 "max_time: exit 75" $KT train --quiet "$D/maxtime.json"
expect_grep "stopped by train.max_time" "$OUT/last.err" "max_time: message"

# --- a finished run, a changed job ---------------------------------------------------
cp "$R/last.safetensors" "$D/ref-last.safetensors"
expect_exit 0 "a finished run is only re-checked" $KT train "$D/ref.json"
expect_grep "already finished" "$OUT/last.err" "finished run: says so"
cmp -s "$R/last.safetensors" "$D/ref-last.safetensors" && ok "finished run: not redone" || bad "finished run was changed"
expect_exit 0 "--resume on a finished run re-checks it" $KT train --quiet --resume "$D/ref.json"
sed 's/"lr": 0.05/"lr": 0.02/; s/"epochs": 12/"epochs": 13/; s/"dir": "crash"/"dir": "changed"/' \
    "$D/crash.json" >"$D/changed.json"
mkdir -p "$D/changed" && cp "$D/crash/last.safetensors" "$D/changed/"
expect_exit 2 "changed job refused on resume" $KT train --quiet --resume "$D/changed.json"
expect_grep "train.optimizer.lr: 0.05 in the checkpoint, 0.02 now" "$OUT/last.err" "refusal names the lr change"
expect_grep "train.epochs: 12 in the checkpoint, 13 now" "$OUT/last.err" "refusal names the epochs change"
expect_exit 0 "--resume --force continues the changed job" $KT train --quiet --resume --force "$D/changed.json"
expect_exit 0 "--force alone starts over" $KT train --quiet --force "$D/changed.json"
# A checkpoint written before a key existed (here: its stored job without
# train.optimizer.decay_all) resumes when the job leaves that key at its default.
cp "$D/crash/last.safetensors" "$D/crash-last.bak"
perl -0777 -pi -e 's/(\\"decay_all\\":false,)/" " x length($1)/e' "$D/crash/last.safetensors"
if grep -q 'decay_all' "$D/crash/last.safetensors"; then
    bad "could not strip decay_all from the checkpoint's job"
else
    expect_exit 0 "resume of a checkpoint from before a key existed" $KT train --quiet --resume "$D/crash.json"
fi
cp "$D/crash-last.bak" "$D/crash/last.safetensors"
rm -rf "$D/again" && $KT train --quiet --resume "$D/again.json" >/dev/null 2>"$OUT/last.err"
[ $? -eq 2 ] && grep -q "nothing to resume" "$OUT/last.err" && ok "--resume without a run: exit 2, says why" ||
    bad "--resume without a run: $(head -c 200 "$OUT/last.err")"

# --- divergence, gates, early stopping -------------------------------------------------
job nan
sed -i 's/"lr": 0.05/"lr": 1e30/' "$D/nan.json"
expect_exit 4 "lr 1e30: exit 4" $KT train --quiet "$D/nan.json"
expect_grep "NaN\|Inf" "$OUT/last.err" "divergence message says NaN/Inf"
expect_grep "step [0-9]" "$OUT/last.err" "divergence message names the step"
job gate '"gates": {"val_loss": 0.000001}'
expect_exit 5 "unmet gate: exit 5" $KT train --quiet "$D/gate.json"
expect_grep "val_loss" "$OUT/last.err" "gate message names the metric"
[ -s "$D/gate/best.safetensors" ] && ok "unmet gate still saves the model" || bad "gate: no best"
job early '"early_stopping": {"metric": "val_acc", "patience": 1, "min_delta": 2}'
expect_exit 0 "early stopping" $KT train "$D/early.json"
expect_grep "early stopping" "$OUT/last.err" "early stopping is logged"
n=$(grep -c '"event":"epoch"' "$D/early/metrics.jsonl")
[ "$n" -eq 2 ] && ok "early stopping after 2 epochs" || bad "early stopping: $n epochs"

# --- other cuts, a split instead of a val folder, a checkpoint as the weights -----
job cutnone '"epochs": 2'
sed -i 's/"freeze": "layer3"/"freeze": "none"/; s/"epochs": 6, //' "$D/cutnone.json"
expect_exit 0 "cut at none: everything trains" $KT train "$D/cutnone.json"
expect_grep "frozen: 0 tensors" "$OUT/last.err" "cut at none: nothing frozen"
job cutavg '"epochs": 2'
sed -i 's/"freeze": "layer3"/"freeze": "avgpool"/; s/"epochs": 6, //; s/"name": "sgd"/"name": "adam"/' "$D/cutavg.json"
expect_exit 0 "cut at avgpool with Adam: only the head trains" $KT train "$D/cutavg.json"
expect_grep "frozen up to avgpool, 579 trainable values" "$OUT/last.err" "cut at avgpool: only the head's 579 values train"
expect_grep "frozen: [0-9]* tensors up to avgpool are bit-identical" "$OUT/last.err" "cut at avgpool: the backbone verified"
job split '"epochs": 2'
sed -i 's#"val": "data/val"#"val": null, "val_split": 0.25#; s/"epochs": 6, //' "$D/split.json"
expect_exit 0 "val_split instead of a val folder" $KT train "$D/split.json"
expect_grep "train / [1-9][0-9]* val images" "$OUT/last.err" "val_split: both sets reported"
job warm '"epochs": 1'
sed -i "s#\"weights\": \"$FIX\"#\"weights\": \"$(pwd)/$R/best.safetensors\"#; s/\"epochs\": 6, //" "$D/warm.json"
expect_exit 0 "a checkpoint as the weights of a new job" $KT train "$D/warm.json"
expect_grep "bit-identical to .*ref/best.safetensors" "$OUT/last.err" "warm start: frozen part from the checkpoint"

# --- label smoothing and class weights -----------------------------------------------
# With smoothing 0.1 over 3 classes the cross-entropy cannot go below the
# entropy of the smoothed target, 0.29; without it this job ends near 0.2.
job smooth '"label_smoothing": 0.1, "class_weights": "auto"'
expect_exit 0 "label smoothing and class weights" $KT train --quiet "$D/smooth.json"
loss=$(grep '"event":"epoch"' "$D/smooth/metrics.jsonl" | tail -n 1 | sed 's/.*"train_loss":\([0-9.e-]*\).*/\1/')
awk -v l="$loss" 'BEGIN { exit !(l >= 0.29) }' && ok "smoothed loss stays above its floor ($loss)" ||
    bad "smoothed train loss $loss below 0.29: smoothing not applied"

# --- the activation cache (no augmentation): the second run computes nothing -------
job cached
sed -i 's/"workers": 2/"workers": 2, "augment": {"flip": false, "random_resized_crop": false}/' "$D/cached.json"
expect_exit 0 "cached run" $KT train "$D/cached.json"
expect_grep "cache: 0 of [0-9]* activations .* [1-9][0-9]* computed" "$OUT/last.err" "first cached run computes the activations"
rm -rf "$D/cached"
expect_exit 0 "cached run again" $KT train "$D/cached.json"
expect_grep "cache: [1-9][0-9]* of [0-9]* activations .*, 0 computed" "$OUT/last.err" "second run: every activation from the cache"
job cachednoval
sed -i 's/"workers": 2/"workers": 2, "augment": {"flip": false, "random_resized_crop": false}/; s#"val": "data/val"#"val": null, "val_split": 0#' "$D/cachednoval.json"
expect_exit 0 "cached run without validation data" $KT train --quiet "$D/cachednoval.json"
job augnocache
expect_exit 0 "augmentation without cached_views" $KT train "$D/augnocache.json"
expect_grep "cache: off: augmentation is on" "$OUT/last.err" "the log says why nothing is cached"

# --- --json-events -----------------------------------------------------------------------
job events
expect_exit 0 "--json-events" $KT train --json-events "$D/events.json"
for e in start step epoch checkpoint done; do
    grep -q "^{\"event\":\"$e\"" "$OUT/last.out" && ok "event $e on stdout" || bad "no $e event"
done
if grep -v '^{' "$OUT/last.out" | grep -q .; then bad "--json-events: non-JSON line on stdout"; else ok "--json-events: stdout is only JSON lines"; fi

# --- bad specs and data --------------------------------------------------------------------
job badfreeze
sed -i 's/"freeze": "layer3"/"freeze": "layer9"/' "$D/badfreeze.json"
expect_exit 2 "unknown cut point: exit 2" $KT train --quiet "$D/badfreeze.json"
expect_grep "model.freeze" "$OUT/last.err" "unknown cut point: names model.freeze"
job logits
sed -i 's/"freeze": "layer3"/"freeze": "logits"/' "$D/logits.json"
expect_exit 2 "cut past avgpool: exit 2" $KT train --quiet "$D/logits.json"
job nodata
sed -i 's#"train": "data/train"#"train": "data/nothere"#' "$D/nodata.json"
expect_exit 2 "missing data.train folder: exit 2" $KT train --quiet "$D/nodata.json"
expect_grep "data.train" "$OUT/last.err" "missing folder: names data.train"
mkdir -p "$D/one/only" && cp "$D/data/train/dark/000.jpg" "$D/one/only/"
job oneclass
sed -i 's#"train": "data/train", "val": "data/val"#"train": "one", "val": null#' "$D/oneclass.json"
expect_exit 3 "a single class: exit 3" $KT train --quiet "$D/oneclass.json"
job failbad
sed -i 's/"workers": 2/"workers": 2, "bad_images": "fail"/' "$D/failbad.json"
expect_exit 3 "bad_images fail: exit 3" $KT train --quiet "$D/failbad.json"
expect_grep "zz_broken.jpg" "$OUT/last.err" "bad_images fail: names the file"
expect_exit 2 "no job file" $KT train --quiet
expect_exit 2 "missing job file" $KT train --quiet "$D/nope.json"

# --- the checkpoint through an independent reader (Python's json and struct) ------------------
if command -v python3 >/dev/null; then
    python3 - "$R/best.safetensors" "$FIX" >"$D/py.out" 2>&1 <<'EOF'
import json, struct, sys
def read(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return b, n, h
b, n, h = read(sys.argv[1])
src, sn, sh = read(sys.argv[2])
meta = json.loads(h["__metadata__"]["kt"])
end = 0
for k, v in h.items():
    if k == "__metadata__":
        continue
    lo, hi = v["data_offsets"]
    size = {"F32": 4, "I64": 8}[v["dtype"]]
    cnt = 1
    for d in v["shape"]:
        cnt *= d
    assert hi - lo == cnt * size, k
    end = max(end, hi)
assert 8 + n + end == len(b), "data area size"
assert meta["classes"] == ["dark", "light", "stripes"], meta["classes"]
assert meta["head"]["hidden"] == [16] and h["fc.3.weight"]["shape"] == [3, 16]
same = sum(1 for k, v in sh.items() if k != "__metadata__" and not k.startswith(("fc.", "layer4."))
           and b[8 + n + h[k]["data_offsets"][0]: 8 + n + h[k]["data_offsets"][1]]
           == src[8 + sn + v["data_offsets"][0]: 8 + sn + v["data_offsets"][1]])
total = sum(1 for k in sh if k != "__metadata__" and not k.startswith(("fc.", "layer4.")))
assert same == total, (same, total)
print("ok", len(h) - 1, "tensors,", same, "frozen identical to the source")
EOF
    grep -q "^ok" "$D/py.out" && ok "independent reader: $(cat "$D/py.out")" || bad "independent reader: $(tail -c 300 "$D/py.out")"
fi
finish
