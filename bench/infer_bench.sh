#!/bin/sh
# infer_bench.sh - ResNet-50 inference throughput and peak memory, kt against
# PyTorch on the same machine, side by side in one run.
#
#   sh bench/infer_bench.sh [ROUNDS]     (after `make`; ~6 min with 3 rounds)
#
# kt    : `kt embed --layer logits -t 2 -b B` on NIMG synthetic 224x224 JPEGs,
#         end to end: decode, resize 256, crop 224, normalise, network, .npy
#         written. images/s is kt's own count over its batch loop (model
#         loading excluded); peak RSS from /usr/bin/time -v.
# torch : ../shared/bench/perf_torch.py --only infer_bB (random input
#         tensors, network only, median of timed iterations, 2 threads), with
#         glibc malloc and with jemalloc (LD_PRELOAD, no decay: the
#         configuration of BASELINE.md's best figures). Peak RSS from getrusage.
# Each round runs every configuration once, interleaved, so load from other
# processes hits all sides alike; the table shows medians over rounds and
# the ratio kt / best torch.
#
# OpenBLAS: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from kt's
# environment (KEEP_BLAS_ENV=1 keeps them) so kt picks its kernels as it
# would on a clean machine; the core in use is printed.
set -eu
ROUNDS=${1:-3}
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
KT=${KT:-./kt}
PY=/usr/bin/python3
OUT=bench/out/infer
W=$BUILD/oracle/resnet50_ref.safetensors
JEMALLOC=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
PERF=$SHARED/bench/perf_torch.py
[ -f "$PERF" ] || { echo "infer_bench: $PERF not found" >&2; exit 1; }
[ -x "$KT" ] || { echo "infer_bench: $KT not built (run make)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "infer_bench: /usr/bin/time needed (apt-get install time)" >&2; exit 1; }
if [ ! -f "$W" ]; then
    $PY "$SHARED/oracle/make_reference.py" --weights-only --dest "$BUILD/oracle" >/dev/null
fi
mkdir -p "$OUT/images"
# 256 images: 8 batches of 32, so the first batch (decoded while the
# network waits, and first touch of every buffer) weighs little; torch's
# figure excludes its warm-up iterations altogether.
NIMG=256
if [ "$(ls "$OUT/images" | wc -l)" -ne $NIMG ]; then
    rm -f "$OUT"/images/*
    $PY - "$OUT/images" $NIMG <<'EOF'
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
y, x = np.mgrid[0:224, 0:224]
for i in range(int(sys.argv[2])):
    a = np.stack([(x * (i % 7 + 1)) % 256, (y * 3 + i * 7) % 256, ((x + y) * 2) % 256], -1).astype(float)
    a += rng.normal(0, 6, a.shape)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(f"{sys.argv[1]}/{i:03d}.jpg", quality=90)
EOF
fi
ktenv="env"
[ "${KEEP_BLAS_ENV:-0}" = 1 ] || ktenv="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); load $(cut -d' ' -f1-3 /proc/loadavg)"
$ktenv $KT --version | sed -n 's/^BLAS core: /kt BLAS core: /p'
RES=$OUT/results.txt
: >"$RES"

for r in $(seq 1 "$ROUNDS"); do
    for b in 8 32; do
        # kt
        if $ktenv /usr/bin/time -v $KT embed -m "$W" --layer logits -t 2 -b $b -o "$OUT/logits.npy" \
            "$OUT/images" >"$OUT/kt.out" 2>"$OUT/kt.err"; then
            ips=$(sed -n 's/.* images in [0-9.]* s, \([0-9.]*\) images\/s.*/\1/p' "$OUT/kt.err")
            rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/kt.err")
            echo "kt b$b $ips $((rss / 1024))" >>"$RES"
        else
            echo "infer_bench: kt failed: $(cat "$OUT/kt.err")" >&2
            exit 1
        fi
        # torch, glibc then jemalloc
        for alloc in glibc jemalloc; do
            if [ $alloc = jemalloc ]; then
                [ -f "$JEMALLOC" ] || continue
                set -- env LD_PRELOAD=$JEMALLOC MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1
            else
                set -- env
            fi
            "$@" OMP_NUM_THREADS=2 $PY "$PERF" --weights "$W" --only infer_b$b >"$OUT/torch.out" 2>&1 ||
                { echo "infer_bench: perf_torch failed: $(tail -3 "$OUT/torch.out")" >&2; exit 1; }
            tail -1 "$OUT/torch.out" | $PY -c "
import json, sys
r = json.loads(sys.stdin.read())
print('torch_$alloc b$b %.2f %.0f' % (r['images_per_s'], r['peak_rss_mib']))" >>"$RES"
        done
        echo "round $r batch $b: $(grep " b$b " "$RES" | tail -3 | tr '\n' ';')" >&2
    done
done

$PY - "$RES" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, b, ips, rss = line.split()
    rows.setdefault((who, b), []).append((float(ips), float(rss)))
def med(who, b, i):
    v = rows.get((who, b))
    return statistics.median(x[i] for x in v) if v else float("nan")
print()
print(f"{'batch':>5} {'kt img/s':>9} {'torch glibc':>11} {'torch jemalloc':>14} {'kt/best torch':>13} "
      f"{'kt RSS MiB':>10} {'torch RSS MiB (glibc/jemalloc)':>31}")
for b in ("b8", "b32"):
    kt, tg, tj = med("kt", b, 0), med("torch_glibc", b, 0), med("torch_jemalloc", b, 0)
    best = max(x for x in (tg, tj) if x == x)
    print(f"{b[1:]:>5} {kt:9.2f} {tg:11.2f} {tj:14.2f} {kt / best:12.2f}x "
          f"{med('kt', b, 1):10.0f} {med('torch_glibc', b, 1):19.0f} / {med('torch_jemalloc', b, 1):.0f}")
print(f"(medians of {len(rows[('kt', 'b8')])} rounds; kt includes JPEG decode and preprocessing, torch does not)")
EOF
