#!/bin/sh
# train_bench.sh - ResNet-50 training throughput and peak memory at batch 32,
# kt against PyTorch on the same machine, side by side in one run.
#
#   sh bench/train_bench.sh [ROUNDS]     (after `make`; ~6 min per round)
#   CUTS="full" sh bench/train_bench.sh 5   (only those cuts; ~3 min per round)
#
# Three cuts, as ../shared/bench/perf_torch.py has them:
#   full     everything trainable (BN in train mode), Linear(2048, 2) head
#   layer3   conv1..layer3 frozen, layer4 (train-mode BN) + head trained
#   avgpool  whole backbone frozen, only the head trained
# SGD lr 0.01, momentum 0.9, weight decay 1e-4 on both sides, the oracle's
# torchvision weights (build/oracle/resnet50_ref.safetensors, made by
# make_reference.py --weights-only if missing).
#
# kt    : `kt train` on ../shared/data/hymenoptera/train (245 photos, 8 steps
#         of 32 per epoch), no augmentation, no validation, 2 epochs, 2
#         threads, --no-cache (the frozen part runs every step, as torch's does;
#         bench/cache_bench.sh measures the cache). Two figures from the
#         second epoch in metrics.jsonl:
#           e2e   train_images_per_s: steps end to end, decoding and data
#                 wait included, checkpoint writes excluded;
#           step  images / step_s of the median step (forward, backward,
#                 update): what torch's figure measures.
#         Peak RSS from /usr/bin/time -v.
# torch : perf_torch.py --only train_<cut>_b32 (random input tensors, the
#         network step only, median of timed iterations, 2 threads), with glibc
#         malloc and with jemalloc (LD_PRELOAD, no decay: BASELINE.md's best).
# Each round runs every configuration once, interleaved, so load from other
# processes hits all sides alike; the table shows medians over rounds and the
# ratio kt / best torch. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed
# from kt's environment (KEEP_BLAS_ENV=1 keeps them), as on a clean machine.
set -eu
ROUNDS=${1:-1}
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
KT=${KT:-./kt}
PY=/usr/bin/python3
DATA=$SHARED/data/hymenoptera/train
W=$BUILD/oracle/resnet50_ref.safetensors
OUT=bench/out/train
JEMALLOC=$(ls /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 2>/dev/null || true)
[ -d "$DATA" ] || { echo "train_bench: $DATA not found" >&2; exit 1; }
DATA=$(cd "$DATA" && pwd) # job files resolve relative paths against their own folder
[ -f "$W" ] || $PY "$SHARED/oracle/make_reference.py" --weights-only --dest "$BUILD/oracle" >/dev/null
mkdir -p "$OUT"
if [ "${KEEP_BLAS_ENV:-0}" = 1 ]; then ktenv=""; else ktenv="-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"; fi
# shellcheck disable=SC2086
echo "kt: $(env $ktenv $KT --version | sed -n 's/^BLAS core: //p')"

job() { # CUT FREEZE
    cat >"$OUT/$1.json" <<EOF
{
  "model": {"weights": "$(pwd)/$W", "freeze": "$2"},
  "data": {"train": "$DATA", "val": null, "val_split": 0,
           "augment": {"flip": false, "random_resized_crop": false}},
  "train": {"epochs": 2, "batch_size": 32,
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001},
            "schedule": {"name": "constant"}, "threads": 2, "log_every": 1},
  "output": {"dir": "$(pwd)/$OUT/run-$1", "keep": 0, "best_metric": "train_loss"}
}
EOF
}
job full none
job layer3 layer3
job avgpool avgpool

: >"$OUT/results.tsv"
r=0
while [ $r -lt "$ROUNDS" ]; do
    r=$((r + 1))
    for cut in ${CUTS:-full layer3 avgpool}; do
        # shellcheck disable=SC2086
        env $ktenv /usr/bin/time -v $KT train --quiet --force --no-cache "$OUT/$cut.json" >/dev/null 2>"$OUT/kt-$cut.err" ||
            { echo "train_bench: kt train $cut failed:" >&2; tail -n 5 "$OUT/kt-$cut.err" >&2; exit 1; }
        rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/kt-$cut.err")
        $PY - "$OUT/run-$cut/metrics.jsonl" "$cut" "$((rss / 1024))" >>"$OUT/results.tsv" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ep = [r for r in rows if r["event"] == "epoch" and r["epoch"] == 2][0]
steps = [r["images"] / r["step_s"] for r in rows if r["event"] == "step" and r["epoch"] == 2]
print("%s\tkt\t%.3f\t%s" % (sys.argv[2], ep["train_images_per_s"], sys.argv[3]))
print("%s\tkt-step\t%.3f\t%s" % (sys.argv[2], statistics.median(steps), sys.argv[3]))
EOF
        for alloc in glibc jemalloc; do
            pre=""
            if [ $alloc = jemalloc ]; then
                [ -n "$JEMALLOC" ] || continue
                pre="LD_PRELOAD=$JEMALLOC MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1"
            fi
            # shellcheck disable=SC2086
            env $pre $PY "$SHARED/bench/perf_torch.py" --weights "$W" --only "train_${cut}_b32" >"$OUT/torch.json"
            $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%s\ttorch-%s\t%.3f\t%d" % (sys.argv[2], sys.argv[3], d["images_per_s"], d["peak_rss_mib"]))' \
                "$OUT/torch.json" "$cut" "$alloc" >>"$OUT/results.tsv"
        done
    done
done

$PY - "$OUT/results.tsv" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(cut, who, col):
    v = [float(r[col]) for r in rows if r[0] == cut and r[1] == who]
    return statistics.median(v) if v else None
print("%-8s %8s %8s %12s %15s %9s %9s %11s %14s" % ("cut", "kt e2e", "kt step", "torch glibc",
      "torch jemalloc", "e2e/best", "step/best", "kt RSS MiB", "torch RSS MiB"))
for cut in ("full", "layer3", "avgpool"):
    if med(cut, "kt", 2) is None:
        continue
    kt, ks = med(cut, "kt", 2), med(cut, "kt-step", 2)
    tg, tj = med(cut, "torch-glibc", 2), med(cut, "torch-jemalloc", 2)
    best = max(x for x in (tg, tj) if x is not None)
    rss = [x for x in (med(cut, "torch-glibc", 3), med(cut, "torch-jemalloc", 3)) if x is not None]
    print("%-8s %8.2f %8.2f %12.2f %15s %9.2f %9.2f %11.0f %14s" % (cut, kt, ks, tg,
          "%.2f" % tj if tj else "-", kt / best, ks / best, med(cut, "kt", 3),
          "/".join("%.0f" % x for x in rss)))
EOF
