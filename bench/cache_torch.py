#!/usr/bin/python3
"""The PyTorch side of bench/cache_bench.sh: fine-tune a frozen ResNet-50 for N
epochs on an image folder the way a typical PyTorch script does it, with the
frozen part under torch.no_grad(), recomputed every epoch.

    /usr/bin/python3 bench/cache_torch.py --weights weights/resnet50-keras/package/ResNet50/model.json \\
        --data ../shared/data/hymenoptera --cut avgpool --epochs 10 [--json out.json]

The network is the one kt trains: the Keras (TF.js) ImageNet ResNet-50 read
from model.json and its shards, converted to torchvision modules (kernels HWIO
-> OIHW, stride on the first 1x1 of a stage as Keras/Caffe v1 has it, BN eps
1e-3, each conv's bias folded into the running mean of the batch norm after
it, which is exact in real arithmetic). Preprocessing is kt's for these
weights: shorter side to 256 (Pillow bilinear), centre crop 224, BGR, minus
the Caffe means. No augmentation (the benchmark compares cached training,
which needs a fixed input per image).

--cut avgpool: the whole backbone frozen (eval, no_grad), a Linear(2048, C)
head trained. --cut layer3: conv1..layer3 frozen; layer4 (train-mode batch
norm) and the head trained. SGD lr 0.01, momentum 0.9, batch 32, shuffled,
torch.set_num_threads(2). Each epoch trains, then evaluates the validation
folder. The DataLoader decodes in the main process by default (--workers 0):
on this 2-core machine, worker processes next to torch's 2 OpenMP threads
oversubscribe the cores and made each epoch several times slower (about
118 s instead of the expected ~25 s with 2 workers), so 0 is PyTorch's best
case here. Files PIL cannot open (a GIF is fine for PIL
but kt skips it) are skipped like kt skips them: only .jpg/.jpeg/.png.

Prints one JSON object: wall seconds of the N epochs (data loading
included; imports and weight loading excluded), per-epoch seconds, final
validation accuracy.
"""
import argparse
import json
import os
import sys
import time


def load_keras(model_json):
    """{keras tensor name: numpy array} from a TF.js layers model."""
    import numpy as np
    with open(model_json) as f:
        m = json.load(f)
    base = os.path.dirname(os.path.abspath(model_json))
    out = {}
    for group in m["weightsManifest"]:
        blob = b"".join(open(os.path.join(base, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            assert w["dtype"] == "float32", w
            n = 1
            for d in w["shape"]:
                n *= d
            out[w["name"]] = np.frombuffer(blob, "<f4", n, off).reshape(w["shape"]).copy()
            off += 4 * n
    return out


def build_model(model_json, classes):
    import numpy as np
    import torch
    import torchvision
    k = load_keras(model_json)
    m = torchvision.models.resnet50(weights=None)
    # Keras v1: stride 2 on the first 1x1 of a stage (and the shortcut), not the 3x3.
    for layer in (m.layer2, m.layer3, m.layer4):
        layer[0].conv1.stride = (2, 2)
        layer[0].conv2.stride = (1, 1)

    def conv(mod, name):
        mod.weight.data = torch.from_numpy(np.ascontiguousarray(k[name + "/kernel"].transpose(3, 2, 0, 1)))
        return k[name + "/bias"]

    def bn(mod, name, bias):
        mod.eps = 1e-3
        mod.weight.data = torch.from_numpy(k[name + "/gamma"])
        mod.bias.data = torch.from_numpy(k[name + "/beta"])
        mod.running_mean.data = torch.from_numpy(k[name + "/moving_mean"] - bias)
        mod.running_var.data = torch.from_numpy(k[name + "/moving_variance"])

    bn(m.bn1, "bn_conv1", conv(m.conv1, "conv1"))
    for s, layer in enumerate((m.layer1, m.layer2, m.layer3, m.layer4)):
        for i, blk in enumerate(layer):
            tag = "%d%s" % (s + 2, "abcdefghijklmnopqrstuvwxyz"[i])
            for j, (c, b) in enumerate(((blk.conv1, blk.bn1), (blk.conv2, blk.bn2), (blk.conv3, blk.bn3))):
                br = "2" + "abc"[j]
                bn(b, "bn%s_branch%s" % (tag, br), conv(c, "res%s_branch%s" % (tag, br)))
            if blk.downsample is not None:
                bn(blk.downsample[1], "bn%s_branch1" % tag, conv(blk.downsample[0], "res%s_branch1" % tag))
    m.fc = torch.nn.Linear(2048, classes)
    return m


class Folder:
    """root/<class>/<image>, classes sorted, only JPEG/PNG files (kt skips the rest)."""

    def __init__(self, root):
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.items = []
        for ci, c in enumerate(self.classes):
            for dp, _, fs in sorted(os.walk(os.path.join(root, c))):
                for f in sorted(fs):
                    if f.lower().endswith((".jpg", ".jpeg", ".png")) and not f.startswith("."):
                        self.items.append((os.path.join(dp, f), ci))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from PIL import Image
        path, label = self.items[i]
        im = Image.open(path).convert("RGB")
        w, h = im.size
        size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        im = im.resize(size, Image.BILINEAR)
        w, h = im.size
        left, top = round((w - 224) / 2), round((h - 224) / 2)
        im = im.crop((left, top, left + 224, top + 224))
        x = np.asarray(im, dtype=np.float32)[:, :, ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), label


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="Keras TF.js model.json")
    ap.add_argument("--data", required=True, help="folder with train/ and val/")
    ap.add_argument("--cut", choices=("avgpool", "layer3"), required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader worker processes (default 0: see the note at the top)")
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(2)
    torch.manual_seed(0)
    train, val = Folder(os.path.join(a.data, "train")), Folder(os.path.join(a.data, "val"))
    m = build_model(a.weights, len(train.classes))
    for p in m.parameters():
        p.requires_grad_(False)
    m.eval()
    if a.cut == "avgpool":
        frozen = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4,
                               m.avgpool, nn.Flatten(1))
        trained = m.fc
        params = list(m.fc.parameters())
    else:
        frozen = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3)
        trained = nn.Sequential(m.layer4, m.avgpool, nn.Flatten(1), m.fc)
        params = list(m.layer4.parameters()) + list(m.fc.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    dl = torch.utils.data.DataLoader(train, batch_size=a.batch, shuffle=True, num_workers=a.workers)
    vl = torch.utils.data.DataLoader(val, batch_size=a.batch, shuffle=False, num_workers=a.workers)

    t0 = time.perf_counter()
    epochs = []
    acc = 0.0
    for e in range(a.epochs):
        te = time.perf_counter()
        trained.train()
        for x, y in dl:
            with torch.no_grad():
                f = frozen(x)
            loss = F.cross_entropy(trained(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in vl:
                correct += (trained(frozen(x)).argmax(1) == y).sum().item()
                n += len(y)
        acc = correct / max(n, 1)
        epochs.append(time.perf_counter() - te)
        print("torch epoch %d/%d: %.1f s, val acc %.4f" % (e + 1, a.epochs, epochs[-1], acc),
              file=sys.stderr, flush=True)
    r = {"cut": a.cut, "epochs": a.epochs, "train": len(train), "val": len(val),
         "wall_s": time.perf_counter() - t0, "epoch_s": epochs, "val_acc": acc,
         "workers": a.workers, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
