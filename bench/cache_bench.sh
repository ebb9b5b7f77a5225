#!/bin/sh
# cache_bench.sh - what the activation cache buys: 10 epochs of kt train on
# ../shared/data/hymenoptera with the real Keras ResNet-50, cut at avgpool
# and at layer3, augmentation off, next to PyTorch doing the same 10 epochs
# with its frozen part under no_grad (bench/cache_torch.py).
#
#   sh bench/cache_bench.sh            # from the repository root, after make && make weights
#   EPOCHS=3 CUTS=avgpool sh bench/cache_bench.sh
#   REPEAT=3 sh bench/cache_bench.sh   # medians of 3 runs of each
#
# For each cut, wall times of whole processes:
#   kt cold    first run: the cache folder is empty, so the frozen part runs
#              once per image, then every epoch reads the cache
#   kt warm    the same job again: every activation comes from the folder
#   kt uncached  --no-cache: the frozen part runs every epoch (as PyTorch does)
#   torch      bench/cache_torch.py: the 10-epoch loop (imports and weight
#              loading excluded, which favours PyTorch), with jemalloc
#              preloaded as in ../shared/bench/BASELINE.md's best figures:
#              with glibc malloc an epoch took 118 s instead of 18 s here
#              (TORCH_MALLOC=glibc measures that default instead)
# and the ratios torch / kt. Aims (issue 7): avgpool >= 8x, layer3 >= 3x
# (kt cold against torch). It also checks that the cached and uncached runs
# end with bit-identical weights (float32 cache, augmentation off).
#
# The machine should be otherwise idle: the runs take minutes and share 2 cores.
set -u
KT=${KT:-./kt}
DATA=${DATA:-../shared/data/hymenoptera}
WEIGHTS=${WEIGHTS:-weights/resnet50-keras/package/ResNet50/model.json}
EPOCHS=${EPOCHS:-10}
CUTS=${CUTS:-"avgpool layer3"}
REPEAT=${REPEAT:-1}
PY=${PY:-/usr/bin/python3}
TORCH_MALLOC=${TORCH_MALLOC:-jemalloc}
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2

die() { echo "cache_bench: $*" >&2; exit 1; }
[ -x "$KT" ] || die "$KT not found: run make"
[ -f "$WEIGHTS" ] || die "$WEIGHTS not found: run make weights"
[ -d "$DATA/train" ] || die "$DATA/train not found (../shared/data/hymenoptera)"
"$KT" train --help 2>/dev/null | grep -q -- --no-cache || die "$KT train has no --no-cache: the cache is not wired into kt train yet"
"$PY" -c "import torch, torchvision, PIL, numpy" 2>/dev/null || die "$PY lacks torch/torchvision/PIL/numpy"
if [ "$TORCH_MALLOC" = jemalloc ] && [ ! -f "$JEMALLOC" ]; then
    echo "cache_bench: $JEMALLOC not found (apt-get install libjemalloc2): PyTorch runs with glibc malloc" >&2
    TORCH_MALLOC=glibc
fi
torch_env() {
    if [ "$TORCH_MALLOC" = jemalloc ]; then
        env LD_PRELOAD="$JEMALLOC" MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 OMP_NUM_THREADS=2 "$@"
    else
        env OMP_NUM_THREADS=2 "$@"
    fi
}

# kt picks its BLAS kernels itself (SkylakeX on this AVX-512 CPU); a core
# type inherited from the environment would measure something else.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
W=$(mktemp -d "${TMPDIR:-/tmp}/kt-cache-bench.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$W"' EXIT INT TERM
WEIGHTS=$(cd "$(dirname "$WEIGHTS")" && pwd)/$(basename "$WEIGHTS")
# A private copy: a rebuild of ./kt during the minutes this takes must not
# change the program under test.
cp "$KT" "$W/kt" && KT=$W/kt
DATA=$(cd "$DATA" && pwd)

now() { date +%s.%N; }
# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
tensors() { n=$(od -An -t u8 -N8 "$1" | tr -d ' '); tail -c +$((n + 9)) "$1"; }

job() { # job CUT NAME
    cat >"$W/$2.json" <<EOF
{
  "model": {"weights": "$WEIGHTS", "freeze": "$1"},
  "head": {"hidden": [], "dropout": 0},
  "data": {"train": "$DATA/train", "val": "$DATA/val", "image_size": 224, "resize": 256,
           "augment": {"flip": false, "random_resized_crop": false}, "workers": 2},
  "train": {"epochs": $EPOCHS, "batch_size": 32,
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0},
            "schedule": {"name": "constant"}, "seed": 1, "threads": 2, "log_every": 0},
  "output": {"dir": "$W/$2", "keep": 0}
}
EOF
}

# run_kt NAME [OPTIONS]: seconds of one kt train process
run_kt() {
    name=$1; shift
    t0=$(now)
    "$KT" train --force "$@" "$W/$name.json" >"$W/$name.out" 2>"$W/$name.err" ||
        { cat "$W/$name.err" >&2; die "kt train $name failed"; }
    echo "$(now) $t0" | awk '{printf "%.2f\n", $1 - $2}'
}

echo "cache_bench: $EPOCHS epochs on $DATA, batch 32, 2 threads, augmentation off; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cache_bench: kt $("$KT" --version | grep 'BLAS core'); PyTorch with $TORCH_MALLOC malloc"
awk '$1 > 1.5 {print "cache_bench: warning: load average " $1 ": other processes share the CPUs, timings will be off"}' /proc/loadavg >&2
printf '%-8s %10s %10s %12s %10s %10s %10s %10s %s\n' cut "kt cold" "kt warm" "kt uncached" torch \
    "torch/cold" "torch/warm" "unc/cold" "cached = uncached"
for cut in $CUTS; do
    job "$cut" "c_$cut"
    job "$cut" "u_$cut"
    : >"$W/cold" && : >"$W/warm" && : >"$W/unc" && : >"$W/torch"
    r=0
    while [ $r -lt "$REPEAT" ]; do
        export KT_CACHE_DIR="$W/cache_${cut}_$r"
        run_kt "c_$cut" >>"$W/cold"
        run_kt "c_$cut" >>"$W/warm"
        grep -q "100%" "$W/c_$cut.err" || echo "cache_bench: warning: the warm run did not find every activation in the cache" >&2
        run_kt "u_$cut" --no-cache >>"$W/unc"
        torch_env "$PY" bench/cache_torch.py --weights "$WEIGHTS" --data "$DATA" --cut "$cut" --epochs "$EPOCHS" \
            >"$W/torch_$cut.json" 2>"$W/torch_$cut.err" || { cat "$W/torch_$cut.err" >&2; die "cache_torch.py failed"; }
        sed -n 's/.*"wall_s": \([0-9.]*\).*/\1/p' "$W/torch_$cut.json" >>"$W/torch"
        r=$((r + 1))
    done
    tensors "$W/c_$cut/last.safetensors" >"$W/a.bin"
    tensors "$W/u_$cut/last.safetensors" >"$W/b.bin"
    same=$(cmp -s "$W/a.bin" "$W/b.bin" && echo "bit-identical" || echo "DIFFERENT")
    cold=$(median <"$W/cold") warm=$(median <"$W/warm") unc=$(median <"$W/unc") tor=$(median <"$W/torch")
    printf '%-8s %9.1fs %9.1fs %11.1fs %9.1fs %9.1fx %9.1fx %9.1fx %s\n' "$cut" "$cold" "$warm" "$unc" "$tor" \
        "$(echo "$tor $cold" | awk '{print $1 / $2}')" "$(echo "$tor $warm" | awk '{print $1 / $2}')" \
        "$(echo "$unc $cold" | awk '{print $1 / $2}')" "$same"
    aim=$([ "$cut" = avgpool ] && echo 8 || echo 3)
    echo "$tor $cold $aim $cut" | awk '{r = $1 / $2; v = "NOT met"; if (r >= $3) v = "met"; printf "  %s: torch / kt cold = %.1fx, aim >= %dx: %s\n", $4, r, $3, v}'
    acc_kt=$(grep -o '"val_acc":[0-9.]*' "$W/c_$cut/metrics.jsonl" | tail -1 | cut -d: -f2)
    acc_t=$(sed -n 's/.*"val_acc": \([0-9.]*\).*/\1/p' "$W/torch_$cut.json")
    echo "  $cut: final val acc kt $acc_kt, torch $acc_t"
    echo "  $cut: kt warm run log: $(grep '^cache:' "$W/c_$cut.err" | tr '\n' ' ')"
done
