#!/usr/bin/python3
"""Generates the small model fixtures under test/fixtures/ (committed).

Run from the repository root:  /usr/bin/python3 tools/gen_fixtures.py
Needs only numpy. Output is deterministic (fixed seeds), so re-running it
rewrites identical bytes; test/fixtures/README describes every file.

Networks (all ResNets with the real structure, just narrow):
  narrow50  bottleneck, depths [3,4,6,3] like ResNet-50, stem 4, widths [2,4,4,8]
  basic18   basic blocks, depths [2,2,2,2] like ResNet-18, stem 8, widths [8,8,16,16]
  tiny      bottleneck, depths [1,1,1,1], stem 4, widths [2,2,2,2] (malformed cases)
The same weights are written in torchvision safetensors layout (OIHW, eps
1e-5 semantics) and in the Keras TF.js layers layout (HWIO, Caffe names,
tensors sorted by layer name, shards split mid-tensor). Reference forward
outputs are computed here in float64 from the float32 weights.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

OUT = "test/fixtures"


# ---------------------------------------------------------------- networks

def make_net(seed, stem, widths, depths, bottleneck, classes, keras_bias):
    """Returns (ordered dict of torchvision name -> float32 array, conv biases
    {conv name -> array} used by the Keras variant)."""
    rng = np.random.default_rng(seed)
    t = {}
    biases = {}

    def conv(name, cout, cin, k):
        std = np.sqrt(2.0 / (cin * k * k))
        t[name + ".weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        if keras_bias:
            biases[name] = (0.05 * rng.standard_normal(cout)).astype(np.float32)

    def bn(name, c, last=False):
        # Non-trivial statistics; the last BN of a block is damped so the
        # residual sum stays O(1) through deep stages.
        t[name + ".weight"] = ((0.3 if last else 1.0) * (1 + 0.1 * rng.standard_normal(c))).astype(np.float32)
        t[name + ".bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        t[name + ".running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        t[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        t[name + ".num_batches_tracked"] = np.array(0, dtype=np.int64)

    conv("conv1", stem, 3, 7)
    bn("bn1", stem)
    cin = stem
    for s, (w, d) in enumerate(zip(widths, depths)):
        cout = 4 * w if bottleneck else w
        for b in range(d):
            p = "layer%d.%d" % (s + 1, b)
            if bottleneck:
                conv(p + ".conv1", w, cin, 1); bn(p + ".bn1", w)
                conv(p + ".conv2", w, w, 3); bn(p + ".bn2", w)
                conv(p + ".conv3", cout, w, 1); bn(p + ".bn3", cout, last=True)
            else:
                conv(p + ".conv1", w, cin, 3); bn(p + ".bn1", w)
                conv(p + ".conv2", w, w, 3); bn(p + ".bn2", w, last=True)
            stride = 2 if s > 0 and b == 0 else 1
            if stride != 1 or cin != cout:
                conv(p + ".downsample.0", cout, cin, 1); bn(p + ".downsample.1", cout)
            cin = cout
    t["fc.weight"] = (rng.standard_normal((classes, cin)) / np.sqrt(cin)).astype(np.float32)
    t["fc.bias"] = (0.1 * rng.standard_normal(classes)).astype(np.float32)
    return t, biases


def structure(t):
    """(stem, [(stage, block, bottleneck, has_down)], ...) read from names."""
    blocks = []
    s = 1
    while "layer%d.0.conv1.weight" % s in t:
        b = 0
        while "layer%d.%d.conv1.weight" % (s, b) in t:
            p = "layer%d.%d" % (s, b)
            blocks.append((s, b, p + ".conv3.weight" in t, p + ".downsample.0.weight" in t))
            b += 1
        s += 1
    return blocks


# ---------------------------------------------------------------- float64 forward

def conv2d(x, w, stride, pad, bias=None):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, :, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, dy, dx])
    if bias is not None:
        out += bias[None, :, None, None]
    return out


def batchnorm(x, t, name, eps):
    g = t[name + ".weight"].astype(np.float64)
    b = t[name + ".bias"].astype(np.float64)
    m = t[name + ".running_mean"].astype(np.float64)
    v = t[name + ".running_var"].astype(np.float64)
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + eps) * g[None, :, None, None] + b[None, :, None, None]


def maxpool(x):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    out = np.full((n, c, ho, wo), -np.inf)
    for dy in range(3):
        for dx in range(3):
            out = np.maximum(out, xp[:, :, dy:dy + 2 * (ho - 1) + 1:2, dx:dx + 2 * (wo - 1) + 1:2])
    return out


def forward(t, x, eps, stride_on_3x3, biases=None):
    """Eval-mode forward; returns {point: array}. biases: conv name -> bias."""
    relu = lambda v: np.maximum(v, 0)
    W = lambda n: t[n + ".weight"].astype(np.float64)
    B = lambda n: None if biases is None else biases[n].astype(np.float64)
    out = {}
    y = relu(batchnorm(conv2d(x, W("conv1"), 2, 3, B("conv1")), t, "bn1", eps))
    y = maxpool(y)
    out["stem"] = y
    for s, b, bott, down in structure(t):
        p = "layer%d.%d" % (s, b)
        stride = 2 if s > 1 and b == 0 else 1
        if bott:
            s1, s2 = (1, stride) if stride_on_3x3 else (stride, 1)
            h = relu(batchnorm(conv2d(y, W(p + ".conv1"), s1, 0, B(p + ".conv1")), t, p + ".bn1", eps))
            h = relu(batchnorm(conv2d(h, W(p + ".conv2"), s2, 1, B(p + ".conv2")), t, p + ".bn2", eps))
            h = batchnorm(conv2d(h, W(p + ".conv3"), 1, 0, B(p + ".conv3")), t, p + ".bn3", eps)
        else:
            h = relu(batchnorm(conv2d(y, W(p + ".conv1"), stride, 1, B(p + ".conv1")), t, p + ".bn1", eps))
            h = batchnorm(conv2d(h, W(p + ".conv2"), 1, 1, B(p + ".conv2")), t, p + ".bn2", eps)
        sc = y
        if down:
            sc = batchnorm(conv2d(y, W(p + ".downsample.0"), stride, 0, B(p + ".downsample.0")), t, p + ".downsample.1", eps)
        y = relu(h + sc)
        out[p] = y
        out["layer%d" % s] = y
    out["avgpool"] = y.mean(axis=(2, 3))
    out["logits"] = out["avgpool"] @ t["fc.weight"].astype(np.float64).T + t["fc.bias"].astype(np.float64)
    return out


# ---------------------------------------------------------------- writers

def st_bytes(tensors, metadata=None, dtype_of=None, header_edit=None, align=8):
    """safetensors bytes. tensors: list of (name, array, dtype string).
    header_edit(hdr dict) may corrupt the header before it is serialised."""
    hdr = {}
    if metadata is not None:
        hdr["__metadata__"] = metadata
    blobs = []
    off = 0
    for name, arr, dt in tensors:
        if dt == "F32":
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        elif dt == "F16":
            raw = np.ascontiguousarray(arr, dtype="<f2").tobytes()
        elif dt == "BF16":
            f = np.ascontiguousarray(arr, dtype="<f4").view("<u4")
            # round to nearest even, as torch does
            r = ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype("<u2")
            raw = r.tobytes()
        elif dt == "I64":
            raw = np.ascontiguousarray(arr, dtype="<i8").tobytes()
        else:
            raise ValueError(dt)
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if header_edit:
        header_edit(hdr)
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % align)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def tv_list(t, dt="F32", prefix=""):
    return [(prefix + n, a, "I64" if a.dtype == np.int64 else dt) for n, a in t.items()]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


# Keras (Caffe-ported ResNet50) names for torchvision names.
def keras_layer(tv, depths_letters=True):
    parts = tv.split(".")
    if parts[0] == "conv1":
        return "conv1"
    if parts[0] == "bn1":
        return "bn_conv1"
    if parts[0] == "fc":
        return "fc1000"
    s, b = int(parts[0][5:]) + 1, int(parts[1])
    blk = chr(ord("a") + b)
    if parts[2] == "downsample":
        return ("res" if parts[3] == "0" else "bn") + "%d%s_branch1" % (s, blk)
    kind, i = parts[2][:-1], int(parts[2][-1])
    return ("res" if kind == "conv" else "bn") + "%d%s_branch2%s" % (s, blk, "abc"[i - 1])


KERAS_BN = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]


def keras_tensors(t, biases):
    """{keras layer: [(keras tensor name, array)]}, Keras layouts."""
    layers = {}
    for name, arr in t.items():
        if name.endswith(".num_batches_tracked"):
            continue
        base, field = name.rsplit(".", 1)
        layers.setdefault(base, {})[field] = arr
    out = {}
    for base, f in layers.items():
        kl = keras_layer(base)
        if base == "fc":
            out[kl] = [(kl + "/kernel", np.ascontiguousarray(f["weight"].T)), (kl + "/bias", f["bias"])]
        elif "running_mean" in f:
            out[kl] = [(kl + "/" + k, f[v]) for k, v in KERAS_BN]
        else:
            out[kl] = [(kl + "/kernel", np.ascontiguousarray(f["weight"].transpose(2, 3, 1, 0))),
                       (kl + "/bias", biases[base])]
    return out


def keras_topology(t, classes, eps=1e-3, stride_on_3x3=False, size=224, same_stride2=False):
    """A Keras 2 functional-model config shaped like keras_applications'
    ResNet50 (ZeroPadding2D + valid convs, stride on branch2a/branch1).
    stride_on_3x3 puts the stride on branch2b, written as ZeroPadding2D(1) +
    'valid' conv (symmetric, as torchvision), or as 'same' when same_stride2
    (asymmetric in TF: kt must refuse it)."""
    layers = []

    def add(name, cls, cfg, inbound):
        cfg = dict(cfg, name=name, trainable=True, dtype="float32")
        layers.append({"name": name, "class_name": cls, "config": cfg,
                       "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else []})
        return name

    def conv(name, arr, stride, padding, inbound):
        k = arr.shape[2]
        return add(name, "Conv2D", {"filters": int(arr.shape[0]), "kernel_size": [k, k], "strides": [stride, stride],
                                    "padding": padding, "data_format": "channels_last", "dilation_rate": [1, 1],
                                    "activation": "linear", "use_bias": True}, [inbound])

    def bn(name, inbound):
        return add(name, "BatchNormalization", {"axis": [3], "momentum": 0.99, "epsilon": eps,
                                                "center": True, "scale": True}, [inbound])

    nact = [0]

    def act(inbound):
        nact[0] += 1
        return add("activation_%d" % nact[0], "Activation", {"activation": "relu"}, [inbound])

    x = add("input_1", "InputLayer", {"batch_input_shape": [None, size, size, 3], "sparse": False}, [])
    x = add("conv1_pad", "ZeroPadding2D", {"padding": [[3, 3], [3, 3]], "data_format": "channels_last"}, [x])
    x = conv("conv1", t["conv1.weight"], 2, "valid", x)
    x = act(bn("bn_conv1", x))
    x = add("pool1_pad", "ZeroPadding2D", {"padding": [[1, 1], [1, 1]], "data_format": "channels_last"}, [x])
    x = add("max_pooling2d_1", "MaxPooling2D", {"pool_size": [3, 3], "padding": "valid", "strides": [2, 2],
                                                "data_format": "channels_last"}, [x])
    nadd = 0
    for s, b, bott, down in structure(t):
        p = "layer%d.%d" % (s, b)
        stride = 2 if s > 1 and b == 0 else 1
        s1, s2 = (1, stride) if stride_on_3x3 else (stride, 1)
        h = act(bn(keras_layer(p + ".bn1"), conv(keras_layer(p + ".conv1"), t[p + ".conv1.weight"], s1, "valid", x)))
        if s2 > 1 and not same_stride2:
            h = add(keras_layer(p + ".conv2") + "_pad", "ZeroPadding2D", {"padding": [[1, 1], [1, 1]]}, [h])
            h = act(bn(keras_layer(p + ".bn2"), conv(keras_layer(p + ".conv2"), t[p + ".conv2.weight"], s2, "valid", h)))
        else:
            h = act(bn(keras_layer(p + ".bn2"), conv(keras_layer(p + ".conv2"), t[p + ".conv2.weight"], s2, "same", h)))
        h = bn(keras_layer(p + ".bn3"), conv(keras_layer(p + ".conv3"), t[p + ".conv3.weight"], 1, "valid", h))
        sc = x
        if down:
            sc = bn(keras_layer(p + ".downsample.1"), conv(keras_layer(p + ".downsample.0"), t[p + ".downsample.0.weight"], stride, "valid", x))
        nadd += 1
        x = act(add("add_%d" % nadd, "Add", {}, [h, sc]))
    x = add("avg_pool", "GlobalAveragePooling2D", {"data_format": "channels_last"}, [x])
    add("fc1000", "Dense", {"units": classes, "activation": "softmax", "use_bias": True}, [x])
    return {"keras_version": "2.2.4-tf", "backend": "tensorflow",
            "model_config": {"class_name": "Model", "config": {
                "name": "resnet50", "layers": layers, "input_layers": [["input_1", 0, 0]],
                "output_layers": [["fc1000", 0, 0]]}}}


def write_tfjs(folder, t, biases, classes, nshards=2, eps=1e-3, stride_on_3x3=False, drop_shard=None,
               cut_shard=0, bad_json=False, same_stride2=False, shard_bytes=0):
    """model.json + shards; tensors sorted by layer name as the TF.js
    converter does; the byte stream is cut into nshards mid-tensor, or, with
    shard_bytes, into shards of that size like the converter's 4 MiB (whole
    pages: kt maps those back to back instead of copying)."""
    os.makedirs(folder, exist_ok=True)
    kt = keras_tensors(t, biases)
    weights, blob = [], []
    for layer in sorted(kt):
        for name, arr in kt[layer]:
            weights.append({"name": name, "shape": list(arr.shape), "dtype": "float32"})
            blob.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    blob = b"".join(blob)
    # Split on odd 4-byte boundaries so some tensors straddle two shards.
    if shard_bytes:
        nshards = (len(blob) + shard_bytes - 1) // shard_bytes
        cuts = [i * shard_bytes for i in range(nshards)] + [len(blob)]
    else:
        cuts = [len(blob) * i // nshards // 4 * 4 + (4 if i else 0) for i in range(nshards)] + [len(blob)]
        cuts[0] = 0
    paths = []
    for i in range(nshards):
        p = "group1-shard%dof%d.bin" % (i + 1, nshards)
        paths.append(p)
        data = blob[cuts[i]:cuts[i + 1]]
        if i == nshards - 1 and cut_shard:
            data = data[:-cut_shard]
        if drop_shard != i:
            write(os.path.join(folder, p), data)
    model = {"format": "layers-model", "generatedBy": "keras v2.2.4-tf",
             "convertedBy": "kt tools/gen_fixtures.py (TF.js layers layout)",
             "modelTopology": keras_topology(t, classes, eps, stride_on_3x3, same_stride2=same_stride2),
             "weightsManifest": [{"paths": paths, "weights": weights}]}
    text = json.dumps(model, separators=(",", ":"))
    if bad_json:
        text = text[:len(text) // 2]
    with open(os.path.join(folder, "model.json"), "w") as f:
        f.write(text)


def write_ref(folder, outs, points):
    """Reference activations: raw little-endian float32, batch first."""
    os.makedirs(folder, exist_ok=True)
    for p in points:
        write(os.path.join(folder, p + ".bin"), outs[p].astype("<f4").tobytes())


# ---------------------------------------------------------------- main

def main():
    if not os.path.isdir("src") or not os.path.isdir("test"):
        sys.exit("run from the repository root")
    # Start clean, but README (written by hand) stays.
    os.makedirs(OUT, exist_ok=True)
    for e in os.listdir(OUT):
        if e != "README":
            p = os.path.join(OUT, e)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    narrow, nb = make_net(1, 4, [2, 4, 4, 8], [3, 4, 6, 3], True, 5, True)
    basic, _ = make_net(2, 8, [8, 8, 16, 16], [2, 2, 2, 2], False, 3, False)
    tiny, tb = make_net(3, 4, [2, 2, 2, 2], [1, 1, 1, 1], True, 3, True)

    # torchvision layout
    write(OUT + "/narrow50.safetensors", st_bytes(tv_list(narrow), {"format": "pt"}))
    write(OUT + "/narrow50_f16.safetensors", st_bytes(tv_list(narrow, "F16")))
    write(OUT + "/narrow50_bf16.safetensors", st_bytes(tv_list(narrow, "BF16")))
    write(OUT + "/basic18.safetensors", st_bytes(tv_list(basic)))
    write(OUT + "/tiny.safetensors", st_bytes(tv_list(tiny)))
    write(OUT + "/tiny_module.safetensors", st_bytes(tv_list(tiny, prefix="module.")))
    # Keras TF.js layout of the same weights (plus conv biases)
    write_tfjs(OUT + "/narrow50_keras", narrow, nb, 5, shard_bytes=16384)
    write_tfjs(OUT + "/tiny_keras_v15", tiny, tb, 3, nshards=2, eps=2e-3, stride_on_3x3=True)
    # kt checkpoint of the Keras net: torchvision names, conv biases, arch in
    # metadata, and a custom head instead of fc.
    ck = {k: v for k, v in narrow.items() if not k.startswith("fc.")}
    for conv, b in nb.items():
        ck[conv + ".bias"] = b
    rng = np.random.default_rng(7)
    ck["fc.0.weight"] = rng.standard_normal((6, 32)).astype(np.float32)
    ck["fc.0.bias"] = np.zeros(6, np.float32)
    ck["fc.3.weight"] = rng.standard_normal((2, 6)).astype(np.float32)
    ck["fc.3.bias"] = np.zeros(2, np.float32)
    ktmeta = {"version": 1, "classes": ["ants", "bees"], "epoch": 3,
              "arch": {"variant": "resnet-custom", "stride_on_3x3": 0, "bn_eps": 0.001,
                       "norm": {"bgr": 1, "scale": 1, "mean": [103.939, 116.779, 123.68], "std": [1, 1, 1]}}}
    write(OUT + "/kt_keras.safetensors",
          st_bytes(tv_list(ck), {"format": "pt", "kt": json.dumps(ktmeta)}))
    # tf.keras (Keras 2.x applications) names, no topology: conventions apply.
    tk = []
    for name, arr in tiny.items():
        if name.endswith("num_batches_tracked"):
            continue
        base, field = name.rsplit(".", 1)
        p = base.split(".")
        if p[0] == "fc":
            lay = "predictions"
        elif p[0] in ("conv1", "bn1"):
            lay = "conv1_" + ("conv" if p[0] == "conv1" else "bn")
        else:
            s, b = int(p[0][5:]) + 1, int(p[1]) + 1
            i = 0 if p[2] == "downsample" else int(p[2][-1])
            isconv = p[3] == "0" if p[2] == "downsample" else p[2].startswith("conv")
            lay = "conv%d_block%d_%d_%s" % (s, b, i, "conv" if isconv else "bn")
        if lay == "predictions":
            m = {"weight": ("kernel", arr.T), "bias": ("bias", arr)}[field]
        elif arr.ndim == 4:
            m = ("kernel", arr.transpose(2, 3, 1, 0))
        else:
            m = ({"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}[field], arr)
        tk.append((lay + "/" + m[0], np.ascontiguousarray(m[1]), "F32"))
    write(OUT + "/tiny_tfkeras.safetensors", st_bytes(tk))

    # Reference forward passes (float64) on a fixed input, odd size 45.
    x = np.random.default_rng(11).standard_normal((2, 3, 45, 45)).astype(np.float32).astype(np.float64)
    pts = ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "logits"]
    write(OUT + "/ref_input.bin", x.astype("<f4").tobytes())
    write_ref(OUT + "/ref_narrow50", forward(narrow, x, 1e-5, True), pts + ["layer3.2"])
    write_ref(OUT + "/ref_narrow50_keras", forward(narrow, x, 1e-3, False, nb), pts + ["layer3.2"])
    write_ref(OUT + "/ref_basic18", forward(basic, x, 1e-5, True), pts)

    # ---- malformed files (on the tiny net); each must fail with a message
    bad = OUT + "/bad"
    os.makedirs(bad)
    good = st_bytes(tv_list(tiny))
    write(bad + "/short.safetensors", good[:5])
    write(bad + "/truncated.safetensors", good[:len(good) - 100])
    write(bad + "/hdrlen.safetensors", struct.pack("<Q", len(good) * 2) + good[8:])
    hl = struct.unpack("<Q", good[:8])[0]
    write(bad + "/badjson.safetensors", good[:8] + good[8:8 + hl].replace(b'"dtype"', b'"dtype" ', 1).replace(b'{', b'[', 2) + good[8 + hl:])

    def edit(fn):
        return st_bytes(tv_list(tiny), header_edit=fn)

    def set_dtype(h):
        h["layer2.0.conv2.weight"]["dtype"] = "F64"
    write(bad + "/dtype.safetensors", edit(set_dtype))

    def out_of_bounds(h):
        h["layer3.0.bn1.running_var"]["data_offsets"] = [10 ** 9, 10 ** 9 + 8]
    write(bad + "/offsets.safetensors", edit(out_of_bounds))

    def overlap(h):
        a = h["layer1.0.conv1.weight"]["data_offsets"]
        b = h["layer1.0.conv2.weight"]
        n = b["data_offsets"][1] - b["data_offsets"][0]
        b["data_offsets"] = [a[0], a[0] + n]
    write(bad + "/overlap.safetensors", edit(overlap))

    def size_mismatch(h):
        h["layer4.0.conv3.weight"]["shape"] = [8, 2, 1, 2]
    write(bad + "/size.safetensors", edit(size_mismatch))

    nan = dict(tiny)
    nan["layer2.0.bn2.weight"] = nan["layer2.0.bn2.weight"].copy()
    nan["layer2.0.bn2.weight"][1] = np.nan
    write(bad + "/nan.safetensors", st_bytes(tv_list(nan)))
    nan16 = dict(tiny)
    nan16["layer1.0.conv1.weight"] = nan16["layer1.0.conv1.weight"] * 1e6   # overflows F16 -> Inf
    write(bad + "/inf_f16.safetensors", st_bytes(tv_list(nan16, "F16")))

    miss = {k: v for k, v in tiny.items() if k != "layer3.0.bn2.running_mean"}
    write(bad + "/missing.safetensors", st_bytes(tv_list(miss)))
    shp = dict(tiny)
    shp["layer2.0.conv2.weight"] = np.zeros((2, 2, 1, 1), np.float32)
    write(bad + "/shape.safetensors", st_bytes(tv_list(shp)))
    neg = dict(tiny)
    neg["layer1.0.bn3.running_var"] = -neg["layer1.0.bn3.running_var"]
    write(bad + "/negvar.safetensors", st_bytes(tv_list(neg)))
    dup = tv_list(tiny) + [("module.conv1.weight", tiny["conv1.weight"], "F32")]
    write(bad + "/duplicate.safetensors", st_bytes(dup))
    gap = dict(tiny)
    del gap["layer1.0.conv1.weight"]
    write(bad + "/nostage.safetensors", st_bytes(tv_list(gap)))
    five = tv_list(tiny) + [("extra", np.zeros((1, 1, 1, 1, 2), np.float32), "F32")]
    write(bad + "/ndim5.safetensors", st_bytes(five))
    write(bad + "/notresnet.safetensors", st_bytes([("weight", np.ones(3, np.float32), "F32")]))
    write_tfjs(bad + "/keras_noshard", tiny, tb, 3, drop_shard=1)
    write_tfjs(bad + "/keras_shortshard", tiny, tb, 3, cut_shard=8)
    write_tfjs(bad + "/keras_badjson", tiny, tb, 3, bad_json=True)
    write_tfjs(bad + "/keras_same_stride2", tiny, tb, 3, nshards=1, stride_on_3x3=True, same_stride2=True)

    total = 0
    for root, _, files in os.walk(OUT):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print("wrote %s: %d bytes" % (OUT, total))


if __name__ == "__main__":
    main()
