"""Benchmark (not a unit test): how good are a backbone's *frozen* patch features?

A linear probe (a 1x1 conv, 192 -> 19 classes, on standardised patch tokens of the last block,
logits upsampled bilinearly to the label size) is trained on the embedded benchmark's source
domain (``gta``) and scored, as mIoU over the 19 Cityscapes classes, on the held-out source
images and on every unseen target domain. It compares the shipped course backbone
(``build_backbone("course_vit", pretrained=True)``) with a randomly initialised ViT of the
same shape (timm's default init, seed 0), or any of the shipped course backbones
(``--backbones course_vit course_vit_mae random``). The issue asks for >= 3x the random ViT's
mIoU on every target domain; the probe says whether that holds. mIoU is reinlite.engine.evaluate's
(one definition for the whole project: nanmean over the classes whose union is not empty).

It also saves a PCA picture of patch features (docs/img/course_vit_pca.png): one street
layout rendered in every benchmark domain's style, the first three principal components of
the patch features (fitted jointly on all domains) shown as RGB, so the same objects should
get the same colours across domains for a good backbone, and noise for a random one.

Usage:
    reinlite probe                       # defaults below
    reinlite probe --bench /tmp/probe_bench --source 300 --target 100 \\
        --size 128 256 --weights-dir /tmp/course_vit_export --json out.json
    reinlite probe --backbones course_vit_mae random --pca docs/img/course_vit_mae_pca.png
The benchmark is written first if ``--bench`` holds none (``reinlite data benchmark``'s writer).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reinlite.models.backbone import count_parameters, create_vit
from reinlite.weights import COURSE_BACKBONES, COURSE_VIT
from reinlite.data import IGNORE_INDEX as IGNORE
from reinlite.data.transforms import normalize
from reinlite.engine.evaluate import confusion_matrix, mean_iou
from reinlite.engine.optim import build_optimizer, poly_lr
from reinlite.engine.step import train_step

log = logging.getLogger(__name__)
RANDOM = "random"          # a randomly initialised ViT of the course shape (seed 0)
RANDOM_LABEL = "random ViT"


def normalise(images_uint8_nhwc) -> torch.Tensor:
    """uint8 [N, H, W, 3] (numpy or tensor) -> float32 [N, 3, H, W], ImageNet-normalised
    (reinlite.data.transforms.normalize)."""
    return normalize(torch.as_tensor(images_uint8_nhwc).permute(0, 3, 1, 2))


def build(kind: str, size, weights=None):
    """kind: a course backbone name (its shipped weights, or the file ``weights``), 'course'
    (= course_vit) or 'random' (a ViT of the same shape, timm's init, seed 0)."""
    torch.manual_seed(0)
    name = COURSE_VIT if kind == "course" else kind
    if name == RANDOM:
        vit = create_vit(COURSE_VIT, pretrained=False, img_size=tuple(size))
    elif name in COURSE_BACKBONES:
        vit = create_vit(name, pretrained=weights if weights else True, img_size=tuple(size))
    else:
        raise ValueError(f"unknown probe backbone {kind!r}; expected one of "
                         f"{sorted(COURSE_BACKBONES) + [RANDOM]}")
    return vit.eval()


def label_of(name: str) -> str:
    return RANDOM_LABEL if name == RANDOM else name


@torch.no_grad()
def features(vit, images: np.ndarray, batch: int = 32) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, C, H/p, W/p] (last block, final norm)."""
    out = []
    p = vit.patch_embed.patch_size[0]
    for i in range(0, len(images), batch):
        x = normalise(images[i:i + batch])
        t = vit.forward_features(x)[:, vit.num_prefix_tokens:]
        B, N, C = t.shape
        out.append(t.transpose(1, 2).reshape(B, C, x.shape[2] // p, x.shape[3] // p))
    return torch.cat(out)


def load_domain(ds, n, size):
    imgs, masks = [], []
    from PIL import Image
    for i in range(min(n, len(ds))):
        img, mask = ds.load(i)
        if img.shape[:2] != tuple(size):
            img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
            mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
        imgs.append(img)
        masks.append(mask)
    return np.stack(imgs), torch.from_numpy(np.stack(masks).astype(np.int64))


def train_probe(feat, masks, num_classes, epochs=30, lr=1e-2, batch=32, seed=0):
    torch.manual_seed(seed)
    mu = feat.mean((0, 2, 3), keepdim=True)
    sd = feat.std((0, 2, 3), keepdim=True) + 1e-6
    probe = nn.Conv2d(feat.shape[1], num_classes, 1)
    opt = build_optimizer(probe.parameters(), lr=lr, weight_decay=1e-4)
    n = len(feat)
    steps = epochs * ((n + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            x = (feat[idx] - mu) / sd
            train_step(lambda z: F.interpolate(probe(z), size=masks.shape[-2:], mode="bilinear", align_corners=False),
                       x, lambda logits: F.cross_entropy(logits, masks[idx], ignore_index=IGNORE), opt)
            sched.step()
    return lambda f: probe((f - mu) / sd)


@torch.no_grad()
def miou(predict, feat, masks, num_classes, batch=64):
    """mIoU (%) of ``predict(feat)`` against ``masks``: reinlite.engine.evaluate's confusion matrix and mean_iou.

    Returns (mIoU, confusion matrix [K, K] int64).
    """
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for i in range(0, len(feat), batch):
        logits = F.interpolate(predict(feat[i:i + batch]), size=masks.shape[-2:], mode="bilinear",
                               align_corners=False)
        conf += confusion_matrix(logits.argmax(1), masks[i:i + batch], num_classes, IGNORE)
    return mean_iou(conf), conf


def pca_figure(vits: dict, path: Path, size, seed=123, layouts=2):
    """One layout per column block, rendered in every domain's style; PCA(3) of patch features."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from reinlite.data import synthetic as syn
    from reinlite.data import classes as C

    doms = list(syn.DOMAINS)
    cols = ["image", "labels"] + [f"{k} PCA" for k in vits]
    fig, axes = plt.subplots(len(doms), layouts * len(cols),
                             figsize=(1.9 * layouts * len(cols), 1.05 * len(doms) + 0.4))
    for li in range(layouts):
        rng = np.random.default_rng([seed, li])
        layout = syn.sample_layout(rng, domain="gta")
        imgs, labs = [], []
        for d in doms:
            r = syn.render(layout, syn.domain_style(d, rng), size=tuple(size), rng=rng)
            imgs.append(r["image"])
            labs.append(C.map_ids(r["label"], C.CITYSCAPES_LUT))
        imgs = np.stack(imgs)
        pcs = {}
        for name, vit in vits.items():
            f = features(vit, imgs)  # [D, C, h, w]
            D, Cc, h, w = f.shape
            X = f.permute(0, 2, 3, 1).reshape(-1, Cc)
            X = X - X.mean(0)
            _, _, V = torch.pca_lowrank(X, q=3, center=False, niter=4)
            Y = X @ V[:, :3]
            lo, hi = torch.quantile(Y, 0.02, dim=0), torch.quantile(Y, 0.98, dim=0)
            Y = ((Y - lo) / (hi - lo + 1e-6)).clamp(0, 1)
            pcs[name] = Y.reshape(D, h, w, 3).numpy()
        for r_, d in enumerate(doms):
            panels = [imgs[r_], C.colorize(labs[r_])] + [pcs[k][r_] for k in vits]
            for c_, panel in enumerate(panels):
                ax = axes[r_, li * len(cols) + c_]
                ax.imshow(panel, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r_ == 0:
                    ax.set_title(cols[c_], fontsize=8)
            axes[r_, li * len(cols)].set_ylabel(d, fontsize=8)
    fig.suptitle("Patch features, PCA -> RGB (fitted jointly over the domains of each layout)", fontsize=9)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rein_vs_full(data, doms, nc, size, steps=200, batch=8, seed=0, weights=None):
    """The course's "Superior" claim in small: Rein vs full fine-tuning of course_vit.

    Same simple head for both (the four feature maps resized to stride 8, concatenated,
    1x1 conv to 19 classes), trained on the source images for ``steps`` steps; mIoU on the
    held-out source and every target. Rein: m=32 tokens, rank 8, backbone frozen, AdamW 1e-3.
    Full fine-tuning: every backbone weight trains (AdamW 1e-4 backbone, 1e-3 head).
    """
    from reinlite import build_backbone
    res = {}
    for method in ("rein", "full"):
        torch.manual_seed(seed)
        bb = build_backbone("course_vit", pretrained=weights if weights else True, img_size=tuple(size),
                            rein=dict(num_tokens=32, rank=8, query_dim=64) if method == "rein" else None)
        head = nn.Conv2d(4 * bb.embed_dim, nc, 1)
        if method == "full":
            for q in bb.vit.parameters():
                q.requires_grad_(True)
            groups = [{"params": list(bb.vit.parameters()), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}]
        else:
            groups = [{"params": bb.trainable_parameters() + list(head.parameters()), "lr": 1e-3}]
        opt = build_optimizer(groups, lr=1e-3, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: poly_lr(1.0, k, steps))

        def forward(x):
            feats, _ = bb(x)
            h, w = x.shape[2] // 8, x.shape[3] // 8
            f = torch.cat([F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False) for m in feats], 1)
            return F.interpolate(head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)

        imgs, masks = data["gta"]
        g = torch.Generator().manual_seed(seed)
        bb.train()
        t = time.time()
        for k in range(steps):
            idx = torch.randint(0, len(imgs), (batch,), generator=g)
            x = normalise(imgs[idx.numpy()])
            y = masks[idx]
            if k % 2:
                x, y = x.flip(-1), y.flip(-1)
            loss = train_step(forward, x, lambda logits: F.cross_entropy(logits, y, ignore_index=IGNORE), opt).loss
            sched.step()
        bb.eval()
        n_train = count_parameters(bb, trainable_only=True) + count_parameters(head)
        res[method] = {"trainable_params": n_train}
        with torch.no_grad():
            for d in doms:
                im, mk = data[d]
                xs = normalise(im)
                logits = torch.cat([forward(xs[i:i + 32]) for i in range(0, len(xs), 32)])
                res[method][d] = miou(lambda z: z, logits, mk, nc)[0]
        log.info("  %s: %d steps in %.0f s, last loss %.3f", method, steps, time.time() - t, loss.item())
    return res


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--bench", type=Path, default=Path("/tmp/probe_bench"))
    ap.add_argument("--bench-seed", type=int, default=0)
    ap.add_argument("--source", type=int, default=300, help="source images the probe trains on")
    ap.add_argument("--target", type=int, default=100, help="images per target domain (and held-out source)")
    ap.add_argument("--size", type=int, nargs=2, default=(128, 256), help="H W the ViT sees")
    ap.add_argument("--backbones", nargs="+", default=[COURSE_VIT, RANDOM],
                    choices=sorted(COURSE_BACKBONES) + [RANDOM],
                    help="backbones to probe (default: course_vit random); each pretrained one is "
                         "compared with the random ViT")
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="folder with <name>.safetensors of the course backbones (default: the shipped "
                         "reinlite/weights); e.g. the output of reinlite pretrain --export DIR")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--pca", type=Path, default=Path("docs/img/course_vit_pca.png"))
    ap.add_argument("--no-pca", action="store_true")
    ap.add_argument("--rein-vs-full", type=int, default=0, metavar="STEPS",
                    help="instead of the probe: train Rein and full fine-tuning of course_vit with a "
                         "simple head for STEPS steps on the source, report mIoU per domain")


def load_benchmark(args) -> tuple[dict, list[str]]:
    """{domain: (uint8 images [N, H, W, 3], long masks [N, H, W])} and the evaluated domains."""
    from reinlite.data.benchmark import benchmark_datasets, write_benchmark

    if not (args.bench / "benchmark.json").is_file():
        # the default benchmark (``reinlite data benchmark --out DIR``); the probe reads the first
        # --source training images, the first --target held-out source images and target images
        log.info("writing the default benchmark to %s (seed %d) ...", args.bench, args.bench_seed)
        write_benchmark(args.bench, seed=args.bench_seed, workers=2)
    ds = benchmark_datasets(args.bench)
    doms = [d for d in ds if d not in ("gta",)]
    data = {"gta": load_domain(ds["gta"], args.source, args.size)}
    for d in doms:
        data[d] = load_domain(ds[d], args.target, args.size)
    return data, doms


def _weights(args, name: str):
    return (args.weights_dir / f"{name}.safetensors") if args.weights_dir is not None else None


def run_rein_vs_full(args, data, doms, nc) -> dict:
    res = rein_vs_full(data, doms, nc, args.size, steps=args.rein_vs_full, weights=_weights(args, COURSE_VIT))
    targets = [d for d in doms if d != "gta_val"]
    cols = ["gta_val"] + targets
    lines = [f"Rein vs full fine-tuning of course_vit, simple head, {args.rein_vs_full} steps x 8 on "
             f"{len(data['gta'][0])} source images, {args.size[0]}x{args.size[1]}, mIoU:",
             "| method | trainable | " + " | ".join(cols) + " | target mean |",
             "|---|---:|" + "---:|" * (len(cols) + 1)]
    for m, r in res.items():
        lines.append(f"| {m} | {r['trainable_params']:,} | " + " | ".join(f"{r[c]:.1f}" for c in cols)
                     + f" | {np.mean([r[d] for d in targets]):.1f} |")
    out = dict(results=res, table="\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


def run(args) -> dict:
    """The probe (or ``--rein-vs-full``) as ``args`` say; returns the results and the printed table."""
    from reinlite.data import classes as C

    torch.set_num_threads(args.threads)
    t0 = time.time()
    data, doms = load_benchmark(args)
    nc = C.NUM_CLASSES
    if args.rein_vs_full:
        return run_rein_vs_full(args, data, doms, nc)
    names = list(dict.fromkeys(args.backbones))
    vits = {label_of(n): build(n, args.size, None if n == RANDOM else _weights(args, n)) for n in names}
    results = {}
    for name, vit in vits.items():
        t = time.time()
        feats = {d: features(vit, imgs) for d, (imgs, _) in data.items()}
        predict = train_probe(feats["gta"], data["gta"][1], nc, epochs=args.epochs)
        results[name] = {d: miou(predict, feats[d], data[d][1], nc)[0] for d in doms}
        log.info("  %s: probed in %.0f s", name, time.time() - t)
    targets = [d for d in doms if d != "gta_val"]
    cols = ["gta_val"] + targets
    lines = [f"Linear probe on frozen last-block patch tokens, trained on {len(data['gta'][0])} "
             f"source (gta) images, {tuple(args.size)[0]}x{tuple(args.size)[1]} input, mIoU (19 classes):",
             "| backbone | " + " | ".join(c + (" (source, held out)" if c == "gta_val" else "") for c in cols)
             + " | target mean |",
             "|---|" + "---:|" * (len(cols) + 1)]
    for name, r in results.items():
        mean_t = float(np.mean([r[d] for d in targets]))
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + f" | {mean_t:.1f} |")
    ratios, oks = {}, {}
    if RANDOM_LABEL in results:
        rand = results[RANDOM_LABEL]
        for name, r in results.items():
            if name == RANDOM_LABEL:
                continue
            ratios[name] = {d: r[d] / max(rand[d], 1e-6) for d in targets}
            short = "course" if name == COURSE_VIT else name
            lines.append(f"| {short} / random | " + " | ".join(
                f"{r[c] / max(rand[c], 1e-6):.1f}x" for c in cols) + " | |")
        for name in ratios:
            oks[name] = all(v >= 3 for v in ratios[name].values())
            lines.append(f"{name} >= 3x the random ViT on every target domain: {'YES' if oks[name] else 'NO'}")
    table = "\n".join(lines)
    out = dict(results=results, size=list(args.size), source=len(data["gta"][0]), target=args.target,
               bench=str(args.bench), bench_seed=args.bench_seed, epochs=args.epochs,
               miou="reinlite.engine.evaluate.mean_iou (nanmean over classes with a non-empty union)",
               table=table)
    if COURSE_VIT in ratios:  # the keys of the first probe's record
        out.update(ratio=ratios[COURSE_VIT], ok=oks[COURSE_VIT])
    out.update(ratios=ratios, oks=oks)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    if not args.no_pca:
        pca_figure(vits, args.pca, args.size)
        out["pca"] = str(args.pca)
    out["seconds"] = round(time.time() - t0)
    return out


def main(argv: Optional[Sequence[str]] = None, prog: str = "reinlite probe") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = run(args)
    print(out["table"])
    if "pca" in out:
        print(f"saved {out['pca']}")
    print(f"total {out.get('seconds', 0)} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
