"""Show that the embedded benchmark's domain shift is real.

Trains a small fully-convolutional CNN from scratch on the source domain (gta, train split)
and reports mIoU (19 classes) on held-out source images (gta val) and on every target domain.
A model that learnt the source scores clearly lower on the unseen targets.

    reinlite domain-shift --root data/benchmark [--steps 600] [--scale 0.5]

Runs on the CPU in a few minutes (2 threads); images are downscaled by --scale for speed.
mIoU is reinlite.engine.evaluate's (nanmean over the classes whose union is not empty).
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reinlite.data import IGNORE_INDEX, NUM_CLASSES
from reinlite.data.benchmark import benchmark_datasets
from reinlite.data.transforms import normalize
from reinlite.engine.evaluate import confusion_matrix, iou_from_confusion, mean_iou
from reinlite.engine.optim import build_optimizer
from reinlite.engine.step import train_step

log = logging.getLogger(__name__)


def load_all(ds, scale, limit=None):
    """Whole dataset -> uint8 images [N, 3, h, w], uint8 masks [N, h, w] (downscaled)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    xs, ys = [], []
    for i in range(n):
        img, mask = ds.load(i)
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        y = torch.from_numpy(mask)[None, None].float()
        h, w = int(round(img.shape[0] * scale)), int(round(img.shape[1] * scale))
        xs.append(F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
                  .round().clamp(0, 255).byte()[0])
        ys.append(F.interpolate(y, (h, w), mode="nearest")[0, 0].byte())
    return torch.stack(xs), torch.stack(ys)


class SmallFCN(nn.Module):
    """A 6-layer CNN: [B, 3, H, W] -> logits [B, 19, H, W] (stride-8 features, one skip)."""

    def __init__(self, width=32, num_classes=NUM_CLASSES):
        super().__init__()

        def block(cin, cout, stride=1, dil=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dil, dilation=dil, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.s2 = nn.Sequential(block(3, width, 2), block(width, width))
        self.s8 = nn.Sequential(block(width, 2 * width, 2), block(2 * width, 4 * width, 2),
                                block(4 * width, 4 * width, dil=2), block(4 * width, 4 * width, dil=4))
        self.head = nn.Conv2d(4 * width + width, num_classes, 1)

    def forward(self, x):
        a = self.s2(x)
        b = self.s8(a)
        b = F.interpolate(b, a.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(torch.cat([a, b], 1))
        return F.interpolate(out, x.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def miou(model, xs, ys, batch=64):
    """mIoU (%) with reinlite.engine.evaluate's confusion matrix and mean_iou; also per-class IoU [K]."""
    model.eval()
    conf = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for i in range(0, len(xs), batch):
        pred = model(normalize(xs[i:i + batch])).argmax(1)
        conf += confusion_matrix(pred, ys[i:i + batch], NUM_CLASSES, IGNORE_INDEX)
    return mean_iou(conf), iou_from_confusion(conf)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--root", default="data/benchmark")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)


def run(args) -> dict:
    """Train the small CNN on the source, score every other domain; returns rows and the table."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = benchmark_datasets(args.root)
    data = {k: load_all(v, args.scale) for k, v in ds.items()}
    log.info("loaded %s at %s in %.0f s", ", ".join(f"{k} {len(v[0])}" for k, v in data.items()),
             tuple(data["gta"][0].shape[-2:]), time.perf_counter() - t0)
    xs, ys = data["gta"]
    model = SmallFCN()
    opt = build_optimizer(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    t1 = time.perf_counter()
    for step in range(args.steps):
        model.train()
        idx = torch.randint(len(xs), (args.batch,))
        x, y = xs[idx], ys[idx].long()
        flip = torch.rand(args.batch) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        loss = train_step(model, normalize(x), lambda logits: F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX),
                          opt).loss
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            log.info("step %4d loss %.3f", step, loss.item())
    log.info("trained %d steps (batch %d) in %.0f s", args.steps, args.batch, time.perf_counter() - t1)
    rows = []
    for name, (x, y) in data.items():
        if name == "gta":
            continue
        m, _ = miou(model, x, y)
        rows.append((name, m))
    lines = ["| domain | role | images | mIoU (%) |", "|---|---|---|---|"]
    for name, m in rows:
        role = "held-out source" if name == "gta_val" else "unseen target"
        lines.append(f"| {name} | {role} | {len(data[name][0])} | {m:.1f} |")
    tgt = [m for n, m in rows if n != "gta_val"]
    lines.append(f"| targets (mean) | | | {np.mean(tgt):.1f} |")
    return dict(rows=dict(rows), target_mean=float(np.mean(tgt)), table="\n".join(lines),
                seconds=round(time.perf_counter() - t0))


def main(argv: Optional[Sequence[str]] = None, prog: str = "reinlite domain-shift") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = run(args)
    print("\n" + out["table"])
    print(f"total {out['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
