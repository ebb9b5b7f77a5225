#!/bin/sh
# conformance_image.sh - kt's decoding and preprocessing against ../shared:
#   1. the oracle's decoded_rgb / resized_rgb / input.bin (torchvision) and the
#      Keras oracle's crop_rgb / input.bin (caffe), bit for bit, through the
#      full decode and through the region-of-interest decode;
#   2. every file of data/format-variants: decodes, has its orig_baseline
#      sibling's size, lossless variants equal their 8-bit siblings exactly
#      (gray16 = gray8, rgb16 = adam7 = rgba (alpha dropped) = rgb8, progressive
#      = orig_baseline), lossy ones are close to the source pixels (rgb8), the
#      EXIF one upright, gray ones the source's luma, and, when Pillow is
#      installed, every file equals Pillow's decode + exif_transpose exactly;
#   3. data/hymenoptera loads through the loader with exactly one file skipped
#      (the GIF), and, with torchvision installed, every image's input tensor
#      equals torchvision's Resize(256) + CenterCrop(224) + Normalize bit for bit.
# Run from the repository root after `make`. Prints ok/FAIL lines and
# "N passed, N failed"; exits non-zero on any failure.
set -u
BUILD=${BUILD:-build}
SHARED=${SHARED:-../shared}
OUT=$BUILD/conformance/image
PY=/usr/bin/python3
if [ ! -d "$SHARED/oracle/cases" ]; then
    echo "conformance_image: skipped ($SHARED/oracle/cases not found)"
    exit 0
fi
flags=$(sed -n "s/^WARN *:= *//p" Makefile)
cflags="-std=c11 -O2 -g -D_GNU_SOURCE $(pkg-config --cflags libpng libjpeg) $flags"
libs="$(pkg-config --libs libpng libjpeg) -lpthread -lm"
objs="$BUILD/err.o $BUILD/rng.o $BUILD/image.o $BUILD/transform.o $BUILD/dataset.o $BUILD/loader.o"
mkdir -p "$BUILD/tools"
# shellcheck disable=SC2086
cc $cflags -Isrc -o "$BUILD/tools/imgdump" tools/imgdump.c $objs $libs ||
    { echo "FAIL conformance_image: build"; echo "0 passed, 1 failed"; exit 1; }
DUMP=$BUILD/tools/imgdump
rm -rf "$OUT" && mkdir -p "$OUT"
pass=0 fail=0
ok() { echo "ok $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
same() { if cmp -s "$1" "$2"; then ok "$3"; else bad "$3 ($1 differs from $2)"; fi; }

# 1. oracle cases
O=$SHARED/oracle
for i in 0 1 2 3; do
    f=$(ls "$O"/cases/images/img$i*)
    d=$OUT/forward/img$i k=$OUT/keras/forward/img$i
    mkdir -p "$d" "$k"
    if "$DUMP" stages "$f" "$d" torch >/dev/null && "$DUMP" stages "$f" "$k" caffe >/dev/null; then
        for s in decoded_rgb.u8.bin resized_rgb.u8.bin input.bin; do
            same "$d/$s" "$O/cases/forward/img$i/$s" "img$i $s bit-exact"
        done
        same "$d/input_roi.bin" "$O/cases/forward/img$i/input.bin" "img$i input.bin through the region decode"
        same "$k/crop_rgb.u8.bin" "$O/keras/forward/img$i/crop_rgb.u8.bin" "img$i keras crop_rgb bit-exact"
        same "$k/input.bin" "$O/keras/forward/img$i/input.bin" "img$i keras (caffe) input.bin bit-exact"
    else
        bad "img$i: imgdump failed"
    fi
done
for p in photo0 photo1; do
    f=$(ls "$O"/keras/images/$p*)
    k=$OUT/keras/forward/$p
    mkdir -p "$k"
    if "$DUMP" stages "$f" "$k" caffe >/dev/null; then
        for s in decoded_rgb.u8.bin resized_rgb.u8.bin crop_rgb.u8.bin input.bin; do
            same "$k/$s" "$O/keras/forward/$p/$s" "$p $s bit-exact"
        done
        same "$k/input_roi.bin" "$O/keras/forward/$p/input.bin" "$p input.bin through the region decode"
    else
        bad "$p: imgdump failed"
    fi
done
# The oracle's own verdict on the same files (its tolerances; must agree).
rm -f "$OUT"/forward/*/input_roi.bin "$OUT"/forward/*/crop_rgb.u8.bin "$OUT"/keras/forward/*/input_roi.bin
rm -f "$OUT"/keras/forward/img*/decoded_rgb.u8.bin "$OUT"/keras/forward/img*/resized_rgb.u8.bin
if $PY "$O/compare.py" "$OUT" >"$OUT/compare.log" 2>&1 &&
   $PY "$O/compare.py" "$OUT/keras" --cases "$O/keras" >>"$OUT/compare.log" 2>&1; then
    ok "compare.py accepts the torchvision and keras preprocessing outputs"
else
    bad "compare.py: $(tail -n 5 "$OUT/compare.log")"
fi

# 2. format variants, 3. hymenoptera: numeric checks in Python (numpy; Pillow
# and torchvision only for the optional exact comparisons).
V=$SHARED/data/format-variants H=$SHARED/data/hymenoptera
if [ -d "$V" ] && [ -d "$H" ]; then
    "$DUMP" dataset "$H/train" 2 >"$OUT/hym_train.log" 2>&1
    "$DUMP" dataset "$H/val" 2 >"$OUT/hym_val.log" 2>&1
    res=$($PY - "$DUMP" "$V" "$H" "$OUT" <<'EOF'
import os, subprocess, sys
import numpy as np
dump, V, H, OUT = sys.argv[1:5]
ok = bad = 0
def check(cond, msg):
    global ok, bad
    print(("ok " if cond else "FAIL ") + msg)
    if cond: ok += 1
    else: bad += 1
def decode(path):
    r = subprocess.run([dump, "decode", path, os.path.join(OUT, "d.bin")], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    w, h = map(int, r.stdout.split())
    return np.fromfile(os.path.join(OUT, "d.bin"), np.uint8).reshape(h, w, 3), ""
try:
    from PIL import Image, ImageOps
except ImportError:
    Image = None
def pil(path):
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode in ("I", "I;16", "I;16B"):     # 16-bit gray: scale, never clip
        im = Image.fromarray((np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8))
    return np.asarray(im.convert("RGB"))

files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(V) for f in fs
               if "__" in f)
check(len(files) == 130, f"format-variants: {len(files)} files")
photos = {}
for f in files:
    photos.setdefault(f.split("__")[0], {})[f.split("__")[1].split(".")[0]] = f
ndec = npil = 0
for photo, var in sorted(photos.items()):
    px = {}
    for name, f in var.items():
        a, err = decode(f)
        if a is None:
            check(False, f"{f} decodes: {err}")
            continue
        ndec += 1
        px[name] = a
        if Image is not None:
            npil += int(np.array_equal(a, pil(f)))
    base = px.get("orig_baseline")
    if base is None:
        continue
    name = os.path.basename(photo)
    check(all(p.shape == base.shape for p in px.values()),
          f"{name}: all {len(px)} variants have orig_baseline's size {base.shape[1]}x{base.shape[0]}")
    exact = [("gray16", "gray8"), ("rgb16", "rgb8"), ("adam7_interlaced", "rgb8"), ("rgba8_alpha", "rgb8")]
    check(all(k in px and v in px and np.array_equal(px[k], px[v]) for k, v in exact),
          f"{name}: gray16 = gray8, rgb16 = adam7 = rgba (alpha dropped) = rgb8, exactly")
    # rgb8.png holds the source pixels; the JPEGs and the palette are lossy
    # copies of them (measured: all >= 22.9 dB, a wrong orientation <= 22.4).
    src = px["rgb8"].astype(float)
    def psnr(a, b):
        return 10 * np.log10(255.0 ** 2 / max(((a.astype(float) - b) ** 2).mean(), 1e-9))
    check(np.array_equal(px["progressive"], base), f"{name}: progressive = orig_baseline exactly")
    q = {k: psnr(px[k], src) for k in ("orig_baseline", "subsampled420_q75", "cmyk", "palette8", "exif_orient6")}
    check(min(q.values()) >= 20.0, f"{name}: lossy variants >= 20 dB from the source pixels "
          f"(worst {min(q, key=q.get)} {min(q.values()):.1f} dB)")
    e = px["exif_orient6"]
    flips = max(psnr(e[::-1], src), psnr(e[:, ::-1], src))
    check(q["exif_orient6"] >= flips + 6.0,
          f"{name}: exif_orient6 upright ({q['exif_orient6']:.1f} dB, best flip {flips:.1f} dB)")
    luma = (src[..., 0] * 299 + src[..., 1] * 587 + src[..., 2] * 114) / 1000
    check(all(bool((px[k] == px[k][..., :1]).all()) for k in ("gray8", "gray8_1ch")) and
          psnr(px["gray8"][..., 0], luma) >= 50 and psnr(px["gray8_1ch"][..., 0], luma) >= 35,
          f"{name}: gray variants are gray and equal the luma of the source")
check(ndec == 130, f"format-variants: {ndec} of 130 decode")
if Image is not None:
    check(npil == 130, f"format-variants: {npil} of 130 equal Pillow (+ exif_transpose, 16-bit >> 8) exactly")

# hymenoptera through the loader
logs = {s: open(os.path.join(OUT, f"hym_{s}.log")).read() for s in ("train", "val")}
check("files 245 images 244 batches 16 skipped 1 " in logs["train"] and
      "imageNotFound.gif: unsupported image format (GIF)" in logs["train"] and logs["train"].count("\n") == 2,
      "hymenoptera/train: 245 files, 244 images, exactly the GIF skipped: " + logs["train"].strip().replace("\n", " | "))
check("files 153 images 153 batches 10 skipped 0 " in logs["val"] and logs["val"].count("\n") == 1,
      "hymenoptera/val: 153 images, none skipped: " + logs["val"].strip())
try:
    import torch, torchvision.transforms as T
except ImportError:
    T = None
if T is not None:
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    n = same = same_roi = 0
    for dp, _, fs in sorted(os.walk(H)):
        for f in sorted(fs):
            p = os.path.join(dp, f)
            if not f.lower().endswith((".jpg", ".jpeg")):
                continue
            d = os.path.join(OUT, "hym")
            os.makedirs(d, exist_ok=True)
            r = subprocess.run([dump, "stages", p, d, "torch"], capture_output=True)
            if r.returncode:
                continue
            ref = tf(Image.open(p).convert("RGB")).numpy().astype(np.float32).tobytes()
            n += 1
            same += open(os.path.join(d, "input.bin"), "rb").read() == ref
            same_roi += open(os.path.join(d, "input_roi.bin"), "rb").read() == ref
    check(n == 397 and same == n and same_roi == n,
          f"hymenoptera: input tensors of {n} JPEGs equal torchvision bit for bit "
          f"({same} full decode, {same_roi} region decode)")
print(f"RESULT {ok} {bad}")
EOF
)
    echo "$res" | grep -v '^RESULT'
    set -- $(echo "$res" | sed -n 's/^RESULT //p')
    pass=$((pass + ${1:-0})) fail=$((fail + ${2:-1}))
else
    echo "conformance_image: format-variants / hymenoptera not found, skipped"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
