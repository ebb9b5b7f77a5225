#!/bin/sh
# predict_bench.sh - kt predict's wall time from process start to exit, next
# to the same prediction by PyTorch from a fresh Python process, in one run.
#
#   sh bench/predict_bench.sh [RUNS]      (after `make`; RUNS default 7, ~3 min)
#   CKPT=runs/x/best.safetensors sh bench/predict_bench.sh   also times a kt checkpoint
#
# single : one 500x375 JPEG (../shared/bench/bench_images/500x375_q90.jpg), top
#          class. kt: `kt predict -m W IMG`. torch: /usr/bin/python3 running the
#          script below: import torch, torchvision and PIL, build resnet50, load
#          W as ../shared/bench/perf_torch.py reads it, Resize(256),
#          CenterCrop(224), ToTensor, Normalize, forward in eval mode, softmax,
#          print the top class. W is the torchvision-named
#          build/oracle/resnet50_ref.safetensors (with its 1000-class head), so
#          both sides run the same weights; the bench checks that they name the
#          same class.
# folder : 100 real photos (the first 100 JPEGs of ../shared/data/hymenoptera/val,
#          sizes vary) in one folder: `kt predict -b 16 DIR`, and the same torch
#          script over the folder in batches of 16. images/s = 100 / process wall
#          time (start-up included).
# Runs alternate kt and torch so load from other processes hits both alike;
# the table gives medians over RUNS. Page cache warm (one untimed run first).
# OpenBLAS: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from kt's
# environment (KEEP_BLAS_ENV=1 keeps them), so kt chooses its kernels as on a
# clean machine (its re-exec, when it happens, is in the time).
set -eu
RUNS=${1:-7}
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
KT=${KT:-./kt}
PY=/usr/bin/python3
OUT=bench/out/predict
W=$BUILD/oracle/resnet50_ref.safetensors
IMG=$SHARED/bench/bench_images/500x375_q90.jpg
HYM=$SHARED/data/hymenoptera/val
[ -x "$KT" ] || { echo "predict_bench: $KT not built (run make)" >&2; exit 1; }
[ -f "$IMG" ] || { echo "predict_bench: $IMG not found" >&2; exit 1; }
[ -d "$HYM" ] || { echo "predict_bench: $HYM not found" >&2; exit 1; }
if [ ! -f "$W" ]; then
    $PY "$SHARED/oracle/make_reference.py" --weights-only --dest "$BUILD/oracle" >/dev/null
fi
mkdir -p "$OUT/images100"
if [ "$(ls "$OUT/images100" | wc -l)" -ne 100 ]; then
    rm -f "$OUT"/images100/*
    find "$HYM" -type f -iname '*.jpg' | LC_ALL=C sort | head -n 100 | while read -r f; do
        ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$OUT/images100/$(basename "$(dirname "$f")")_$(basename "$f")"
    done
fi

cat >"$OUT/predict_torch.py" <<'EOF'
# The same job as `kt predict -m W PATH`, from a fresh process: top class per image.
import json, os, struct, sys
import numpy as np
import torch, torchvision
from PIL import Image
from torchvision import transforms as T

def read_safetensors(path):  # as ../shared/bench/perf_torch.py
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    header.pop("__metadata__", None)
    dt = {"F32": "<f4", "I64": "<i8"}
    return {k: np.frombuffer(buf[8 + n + e["data_offsets"][0]: 8 + n + e["data_offsets"][1]],
                             dt[e["dtype"]]).reshape(e["shape"]).copy() for k, e in header.items()}

torch.set_num_threads(2)
m = torchvision.models.resnet50(weights=None)
m.load_state_dict({k: torch.from_numpy(v) for k, v in read_safetensors(sys.argv[1]).items()})
m.eval()
tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
p = sys.argv[2]
files = sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else [p]
for i in range(0, len(files), 16):
    chunk = files[i:i + 16]
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in chunk])
    with torch.inference_mode():
        prob = torch.softmax(m(x), 1)
    top = prob.max(1)
    for f, v, c in zip(chunk, top.values.tolist(), top.indices.tolist()):
        print(f"{f}\t{c}\t{v:.6f}")
EOF

ktenv="env"
[ "${KEEP_BLAS_ENV:-0}" = 1 ] || ktenv="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"
now() { date +%s.%N; }
# timed NAME CMD...: appends "NAME seconds" to RES; stdout kept in $OUT/NAME.out
timed() {
    name=$1; shift
    t0=$(now)
    "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" || { echo "predict_bench: $name failed: $(tail -3 "$OUT/$name.err")" >&2; exit 1; }
    t1=$(now)
    echo "$name $t0 $t1" | awk '{ printf "%s %.4f\n", $1, $3 - $2 }' >>"$RES"
}
RES=$OUT/results.txt
: >"$RES"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); load $(cut -d' ' -f1-3 /proc/loadavg)"
$ktenv $KT --version | sed -n 's/^BLAS core: /kt BLAS core: /p'

# warm-up: page cache, Python's bytecode cache
$ktenv $KT predict -m "$W" "$IMG" >/dev/null
OMP_NUM_THREADS=2 $PY "$OUT/predict_torch.py" "$W" "$IMG" >/dev/null
for r in $(seq 1 "$RUNS"); do
    timed kt_single $ktenv $KT predict -m "$W" "$IMG"
    timed torch_single env OMP_NUM_THREADS=2 $PY "$OUT/predict_torch.py" "$W" "$IMG"
    if [ -n "${CKPT:-}" ]; then timed kt_ckpt_single $ktenv $KT predict -m "$CKPT" "$IMG"; fi
    timed kt_folder $ktenv $KT predict -b 16 -m "$W" "$OUT/images100"
    timed torch_folder env OMP_NUM_THREADS=2 $PY "$OUT/predict_torch.py" "$W" "$OUT/images100"
    echo "run $r: $(tail -n 4 "$RES" | tr '\n' ' ')" >&2
done

kc=$(cut -f2 "$OUT/kt_single.out") tc=$(cut -f2 "$OUT/torch_single.out")
[ "$kc" = "$tc" ] && echo "single image: both say class $kc ($(cut -f3 "$OUT/kt_single.out") / $(cut -f3 "$OUT/torch_single.out"))" ||
    echo "single image: kt says class $kc, torch $tc: MISMATCH"
agree=$(cut -f2 "$OUT/kt_folder.out" | paste - "$OUT/torch_folder.out" | awk -F'\t' '$1 == $3' | wc -l)
echo "folder: kt and torch agree on the top class of $agree of $(wc -l <"$OUT/kt_folder.out") images"

$PY - "$RES" "${CKPT:-}" <<'EOF'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    t.setdefault(k, []).append(float(v))
m = {k: statistics.median(v) for k, v in t.items()}
n = len(t["kt_single"])
print()
print(f"single 500x375 JPEG, process start to exit (median of {n}):")
print(f"  kt predict     {m['kt_single'] * 1000:8.0f} ms")
if "kt_ckpt_single" in m:
    print(f"  kt predict on the checkpoint {sys.argv[2]}: {m['kt_ckpt_single'] * 1000:.0f} ms")
print(f"  PyTorch        {m['torch_single'] * 1000:8.0f} ms")
print(f"  kt is {m['torch_single'] / m['kt_single']:.1f}x shorter")
print(f"folder of 100 photos, process start to exit (median of {n}):")
print(f"  kt predict     {m['kt_folder']:6.2f} s  {100 / m['kt_folder']:6.1f} images/s")
print(f"  PyTorch        {m['torch_folder']:6.2f} s  {100 / m['torch_folder']:6.1f} images/s")
print(f"  ratio kt/torch {m['torch_folder'] / m['kt_folder']:.2f}x")
EOF
