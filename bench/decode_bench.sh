#!/bin/sh
# decode_bench.sh - decode + resize(256) + centre crop(224) throughput on ONE
# core, kt against Pillow doing the same work, side by side in one run.
#
#   sh bench/decode_bench.sh [ROUNDS]       (after `make`; ~1 min with 5 rounds)
#
# Images: every JPEG of ../shared/data/hymenoptera (397 real photos, 193x130
# to 2592x1984; the GIF is left out since kt does not read GIFs). Both sides
# read each file from the page cache on every pass.
#   kt exact : kt's evaluation path: region decode + Pillow-exact resize + crop
#              + normalise to float (bit-identical to torchvision; more work
#              than the Pillow side, which stops at the uint8 crop)
#   kt full  : the same with a whole-image decode (no region)
#   kt fast  : DCT-scaled decode (shorter side kept >= 256), not bit-exact
#   PIL      : Image.open().convert("RGB").resize(BILINEAR).crop() (torchvision's
#              Resize + CenterCrop on PIL images)
#   PIL draft: the same after Image.draft() (Pillow's DCT scaling)
# Everything runs pinned to CPU $CPU (default 0). Each pass is timed in CPU
# time of its process, so other load on the machine slows both sides alike;
# the rounds alternate kt and Pillow, and the ratios are medians over rounds.
set -eu
ROUNDS=${1:-5}
CPU=${CPU:-0}
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
H=$SHARED/data/hymenoptera
OUT=bench/out
PY=/usr/bin/python3
[ -d "$H" ] || { echo "decode_bench: $H not found" >&2; exit 1; }
mkdir -p "$OUT" "$BUILD/tools"
flags=$(sed -n "s/^WARN *:= *//p" Makefile)
# shellcheck disable=SC2086
cc -std=c11 -O2 -g -D_GNU_SOURCE $(pkg-config --cflags libpng libjpeg) $flags -Isrc \
    -o "$BUILD/tools/decode_bench" bench/decode_bench.c \
    "$BUILD/image.o" "$BUILD/transform.o" "$BUILD/err.o" "$BUILD/rng.o" \
    $(pkg-config --libs libpng libjpeg) -lm
LIST=$OUT/decode_bench_files.txt
find "$H" -type f \( -iname '*.jpg' -o -iname '*.jpeg' \) | sort >"$LIST"

cat >"$OUT/decode_bench_pil.py" <<'EOF'
import sys, time
from PIL import Image
mode, listfile = sys.argv[1], sys.argv[2]
files = [l.rstrip("\n") for l in open(listfile)]
def one(p):
    im = Image.open(p)
    w, h = im.size
    ow, oh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    if mode == "draft":
        im.draft("RGB", (ow, oh))
    im = im.convert("RGB").resize((ow, oh), Image.BILINEAR)
    l, t = round((ow - 224) / 2), round((oh - 224) / 2)
    return im.crop((l, t, l + 224, t + 224)).tobytes()
for p in files:         # warm-up pass
    one(p)
t = time.process_time()
for p in files:
    one(p)
print(mode, len(files) / (time.process_time() - t), len(files))
EOF

echo "decode_bench: $(wc -l <"$LIST") JPEGs from $H, CPU $CPU, $ROUNDS rounds (images per CPU-second)"
: >"$OUT/decode_bench_rounds.txt"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for m in exact full fast; do
        taskset -c "$CPU" "$BUILD/tools/decode_bench" "$m" 1 "$LIST" | sed "s/^/$r kt_/" >>"$OUT/decode_bench_rounds.txt"
        case $m in
        exact) taskset -c "$CPU" $PY "$OUT/decode_bench_pil.py" exact "$LIST" | sed "s/^/$r pil_/" >>"$OUT/decode_bench_rounds.txt" ;;
        fast) taskset -c "$CPU" $PY "$OUT/decode_bench_pil.py" draft "$LIST" | sed "s/^/$r pil_/" >>"$OUT/decode_bench_rounds.txt" ;;
        esac
    done
    r=$((r + 1))
done

$PY - "$OUT/decode_bench_rounds.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r, name, ips, *_ in rows:
    by.setdefault(int(r), {})[name] = float(ips)
med = lambda k: statistics.median(v[k] for v in by.values())
ratio = lambda a, b: statistics.median(v[a] / v[b] for v in by.values())
print(f"{'':28s}{'median img/s':>14s}")
for k, label in [("kt_exact", "kt exact (region decode)"), ("kt_full", "kt exact, whole decode"),
                 ("pil_exact", "PIL open+convert+resize+crop"), ("kt_fast", "kt fast (DCT scaling)"),
                 ("pil_draft", "PIL draft+convert+resize+crop")]:
    print(f"{label:32s}{med(k):10.1f}")
print(f"ratio kt exact / PIL:        {ratio('kt_exact', 'pil_exact'):.2f}x  (target >= 2)")
print(f"ratio kt whole / PIL:        {ratio('kt_full', 'pil_exact'):.2f}x")
print(f"ratio kt fast / PIL draft:   {ratio('kt_fast', 'pil_draft'):.2f}x")
EOF
