"""Pretrain the proxy-supervised course backbone ("course_vit"): a ViT-Tiny-width timm ViT.

Why: Rein needs a *pretrained* frozen backbone whose patch features already generalise.
DINOv2 weights cannot be downloaded offline, and a random frozen ViT teaches nothing, so the
course pretrains its own small "foundation model" here, on CPU, in under 90 minutes.

How (plainly): this is a *supervised proxy task* on a procedural corpus, not DINOv2's
self-supervision on 142M natural images. Every training sample is a street layout drawn from
the renderer's broad layout distribution (``domain=None``) and rendered twice, in two random
styles (``random_style``: far more palettes, textures, lightings, weathers than the
benchmark's source domain). The renderer knows the geometry of what it draws, so the ViT
learns to predict, densely from its patch tokens (light linear heads, discarded afterwards):

  1. the 7 coarse Cityscapes *categories* (flat, construction, object, nature, sky, human,
     vehicle), derived from the label ids through the Cityscapes category table; never the
     19 train classes the benchmark scores;
  2. log depth;
  3. boundaries (between object instances, from the instance map, and between categories);
  4. class-agnostic region geometry that separates classes *within* a category without
     naming them: for the region (object instance, or connected region of the renderer's
     partition) a pixel belongs to, its log metric height and width (bounding box in pixels
     times depth: a pole is tall and thin, a sign small, a wall low and long), and the
     pixel's relative height inside the region (a part cue: top/bottom of a person);
  5. cross-style consistency: the patch tokens of the two renders of one layout (same crop),
     each minus its image's mean token, must agree (cosine), so features depend on content
     and not on style.

Inputs are 64 x 128 (patch 8 -> 8 x 16 tokens). Half the samples are whole scenes rendered
at 64 x 128 (half the benchmark's 128 x 256 scale), half are 64 x 128 crops of 128 x 256
renders (the benchmark's native scale, where thin poles/signs are twice as wide in pixels),
so the features work at both scales. The model is a plain timm VisionTransformer; the heads
are dropped at export, which writes timm key names to safetensors plus a json with the exact
constructor kwargs, sha256, command, seed, steps and wall time.

Data seeds: item ``i`` of run seed ``s`` uses ``np.random.default_rng([PRETRAIN_SEED_TAG, s, i])``
(a 3-word seed sequence, :func:`reinlite.experiments.corpus.corpus_rng`). The benchmark seeds
its generators with other seed sequences (see reinlite.data.synthetic), so the pretraining
corpus is disjoint from the benchmark's images. Data are indexed by the global sample number,
so a resumed run sees exactly the samples an uninterrupted one would.

Usage (the shipped weights were made with the command recorded in
reinlite/weights/course_vit.json, then ``python data_scripts/pretrain_course_vit.py``; the
same flags run under ``reinlite pretrain``):

    reinlite pretrain --out /tmp/course_vit_run --steps N --seed 0
    # interrupted? run the same command again: it resumes from /tmp/course_vit_run/ckpt.pt
    reinlite pretrain --out /tmp/course_vit_run --export reinlite/weights   # from a checkout: ship it
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from reinlite.engine.optim import build_optimizer, ndim_decay_groups, set_lr, warmup_cosine_lr
from reinlite.engine.step import train_step
from reinlite.experiments.corpus import (DEFAULT_EXPORT_DIR, FULL_SIZE, IN_SIZE, PRETRAIN_SEED_TAG, VIT_KWARGS,
                                         build_vit, corpus_rng, random_window, render_scene, sample_layout,
                                         to_tensor_image)

log = logging.getLogger(__name__)

# Cityscapes label id -> category id (the official table): 0 void, 1 flat, 2 construction,
# 3 object, 4 nature, 5 sky, 6 human, 7 vehicle. We train on categories 1..7 -> 0..6.
_CATEGORY_OF_LABEL_ID = {
    **{i: 0 for i in range(0, 7)},
    7: 1, 8: 1, 9: 1, 10: 1,
    11: 2, 12: 2, 13: 2, 14: 2, 15: 2, 16: 2,
    17: 3, 18: 3, 19: 3, 20: 3,
    21: 4, 22: 4,
    23: 5,
    24: 6, 25: 6,
    26: 7, 27: 7, 28: 7, 29: 7, 30: 7, 31: 7, 32: 7, 33: 7,
}
CATEGORY_NAMES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
IGNORE = 255
LUT = np.full(256, IGNORE, dtype=np.uint8)
for _lid, _cat in _CATEGORY_OF_LABEL_ID.items():
    if _cat > 0:
        LUT[_lid] = _cat - 1

N_GEOM = 3  # log height, log width, relative y inside the region
DEPTH_EPS = 1e-3


# ----------------------------------------------------------------------------- targets
def region_geometry(label: np.ndarray, instance: np.ndarray, depth: np.ndarray,
                    pixel_scale: float):
    """Per-pixel geometry of the region each pixel belongs to.

    Regions: object instances (instance > 0), else connected components of the renderer's
    label partition. Returns float32 [3, H, W] (log metric height, log metric width,
    relative y in [0, 1]) and a bool mask [H, W] (void, sky and 1-pixel regions excluded).
    ``pixel_scale`` converts pixels to full-resolution (128 x 256) pixels.
    """
    H, W = label.shape
    seg = np.zeros((H, W), np.int32)
    nxt = 1
    inst_ids = np.unique(instance[instance > 0])
    for iid in inst_ids:
        seg[instance == iid] = nxt
        nxt += 1
    stuff = instance <= 0
    for lid in np.unique(label[stuff]):
        if LUT[lid] == IGNORE or LUT[lid] == 4:  # void, sky (category 5 -> index 4)
            continue
        cc, n = ndimage.label(stuff & (label == lid))
        if n:
            seg[cc > 0] = cc[cc > 0] + (nxt - 1)
            nxt += n
    geom = np.zeros((N_GEOM, H, W), np.float32)
    mask = np.zeros((H, W), bool)
    if nxt == 1:
        return geom, mask
    logd = np.log(np.maximum(depth, DEPTH_EPS))
    idx = np.arange(1, nxt)
    mean_logd = ndimage.mean(logd, labels=seg, index=idx)
    slices = ndimage.find_objects(seg)
    ys = np.arange(H, dtype=np.float32)[:, None]
    for k, sl in enumerate(slices):
        if sl is None:
            continue
        h = (sl[0].stop - sl[0].start) * pixel_scale
        w = (sl[1].stop - sl[1].start) * pixel_scale
        m = seg[sl] == (k + 1)
        if m.sum() < 2:
            continue
        d = float(mean_logd[k])
        sub = geom[:, sl[0], sl[1]]
        sub[0][m] = math.log(h) + d - 4.0
        sub[1][m] = math.log(w) + d - 4.0
        rel = (ys[sl[0]] - sl[0].start + 0.5) / max(sl[0].stop - sl[0].start, 1)
        sub[2][m] = np.broadcast_to(rel, m.shape)[m]
        mask[sl][m] = True
    return geom, mask


def boundaries(cat: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """1 where the 4-neighbourhood crosses an instance or a category boundary."""
    b = np.zeros(cat.shape, bool)
    for a in (cat, instance):
        dy = a[1:, :] != a[:-1, :]
        dx = a[:, 1:] != a[:, :-1]
        b[1:, :] |= dy
        b[:-1, :] |= dy
        b[:, 1:] |= dx
        b[:, :-1] |= dx
    return b


def make_targets(out: dict, pixel_scale: float):
    label = out["label"]
    inst = out["instance"].astype(np.int32)
    depth = out["depth"].astype(np.float32)
    cat = LUT[label]
    logd = np.log(np.maximum(depth, DEPTH_EPS)).astype(np.float32)
    dmask = np.isfinite(logd) & (cat != 4) & (cat != IGNORE)  # no depth for sky / void
    logd = np.where(dmask, logd, 0.0).astype(np.float32)
    geom, gmask = region_geometry(label, inst, depth, pixel_scale)
    bnd = boundaries(cat, inst)
    return dict(cat=cat, logd=logd, dmask=dmask, geom=geom, gmask=gmask, bnd=bnd)


class PairDataset(torch.utils.data.Dataset):
    """Item i -> 2 pairs; a pair = two random-style renders of one broad layout, same window.

    With probability ``crop_prob`` item i is one layout rendered at 128 x 256 (native benchmark
    scale) in two styles, from which two 64 x 128 windows are cut (two pairs, one render cost);
    otherwise it is two layouts rendered whole at 64 x 128 (half scale). Each pair is flipped
    horizontally with probability 1/2 (both views alike).
    """

    def __init__(self, seed: int, n: int, crop_prob: float = 0.5):
        self.seed, self.n, self.crop_prob = seed, n, crop_prob

    def __len__(self):
        return self.n

    def __getitem__(self, i: int):
        rng = corpus_rng(self.seed, i)
        crop = rng.random() < self.crop_prob
        if crop:
            layout = sample_layout(rng)
            views = []
            for _ in range(2):
                out = render_scene(rng, layout, size=FULL_SIZE)
                t = make_targets(out, 1.0)
                t["img"] = to_tensor_image(out["image"])
                views.append(t)
            wins = [random_window(rng) for _ in range(2)]
            pairs = [[_window(t, y0, x0, flip) for t in views] for (y0, x0, flip) in wins]
        else:
            pairs = []
            for _ in range(2):
                layout = sample_layout(rng)
                flip = rng.random() < 0.5
                views = []
                for _ in range(2):
                    out = render_scene(rng, layout, size=IN_SIZE)
                    t = make_targets(out, FULL_SIZE[0] / IN_SIZE[0])
                    t["img"] = to_tensor_image(out["image"])
                    views.append(_window(t, 0, 0, flip))
                pairs.append(views)
        # -> {key: [2 pairs, 2 views, ...]}
        return {k: torch.from_numpy(np.stack([np.stack([p[0][k], p[1][k]]) for p in pairs]))
                for k in pairs[0][0]}


def _window(t: dict, y0: int, x0: int, flip: bool) -> dict:
    res = {}
    for k, v in t.items():
        v = v[..., y0:y0 + IN_SIZE[0], x0:x0 + IN_SIZE[1]]
        res[k] = np.ascontiguousarray(v[..., ::-1] if flip else v)
    return res


def collate(items):
    """[B items of 2 pairs] -> tensors [4B, ...]: view a of pair j at j, view b at 2B + j."""
    out = {}
    for k in items[0]:
        x = torch.cat([it[k] for it in items])  # [2B pairs, 2 views, ...]
        out[k] = torch.cat([x[:, 0], x[:, 1]])
    return out


# ----------------------------------------------------------------------------- model
class ProxyHeads(nn.Module):
    """Light heads on patch tokens: one linear layer to an 8x8 pixel block per token."""

    def __init__(self, dim: int, patch: int, n_cat: int = 7):
        super().__init__()
        self.patch = patch
        self.n_out = n_cat + 1 + 1 + N_GEOM
        self.dense = nn.Linear(dim, self.n_out * patch * patch)
        self.n_cat = n_cat

    def forward(self, tok, gh, gw):
        B = tok.shape[0]
        y = self.dense(tok)  # [B, N, K*p*p]
        y = y.transpose(1, 2).reshape(B, self.n_out * self.patch ** 2, gh, gw)
        y = F.pixel_shuffle(y, self.patch)  # [B, K, H, W]
        c = self.n_cat
        return dict(cat=y[:, :c], logd=y[:, c], bnd=y[:, c + 1], geom=y[:, c + 2:])


def patch_tokens(vit, x):
    feats = vit.forward_features(x)  # [B, 1 + N, C] after the final norm
    return feats[:, vit.num_prefix_tokens:]


def losses(vit, heads, batch, w):
    x = batch["img"]
    B2 = x.shape[0]
    gh, gw = x.shape[2] // vit.patch_embed.patch_size[0], x.shape[3] // vit.patch_embed.patch_size[1]
    tok = patch_tokens(vit, x)
    pred = heads(tok, gh, gw)
    L = {}
    L["cat"] = F.cross_entropy(pred["cat"], batch["cat"].long(), ignore_index=IGNORE)
    dm = batch["dmask"]
    L["depth"] = (F.smooth_l1_loss(pred["logd"], batch["logd"], reduction="none") * dm).sum() / dm.sum().clamp(min=1)
    L["bnd"] = F.binary_cross_entropy_with_logits(pred["bnd"], batch["bnd"].float(),
                                                  pos_weight=torch.tensor(3.0))
    gm = batch["gmask"].unsqueeze(1)
    L["geom"] = (F.smooth_l1_loss(pred["geom"], batch["geom"], reduction="none") * gm).sum() / (gm.sum() * N_GEOM).clamp(min=1)
    # cosine between the two views' tokens after removing each image's mean token, so that a
    # component shared by all patches cannot satisfy it (it must match patch by patch)
    z = tok - tok.mean(dim=1, keepdim=True)
    za, zb = F.normalize(z[: B2 // 2], dim=-1), F.normalize(z[B2 // 2:], dim=-1)
    L["consist"] = (1 - (za * zb).sum(-1)).mean()
    total = sum(w[k] * v for k, v in L.items())
    with torch.no_grad():
        acc = (pred["cat"].argmax(1) == batch["cat"]).float()
        valid = batch["cat"] != IGNORE
        L["cat_acc"] = (acc * valid).sum() / valid.sum().clamp(min=1)
    return total, L


# ----------------------------------------------------------------------------- export
def export(ckpt_path: Path, dest: Path):
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    from safetensors.torch import save_file
    dest.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in ck["vit"].items()}
    wpath = dest / "course_vit.safetensors"
    save_file(sd, str(wpath), metadata={"format": "pt", "source": "reinlite pretrain_course_vit"})  # as shipped
    sha = hashlib.sha256(wpath.read_bytes()).hexdigest()
    kw = dict(VIT_KWARGS)
    kw["img_size"] = list(kw["img_size"])
    meta = {
        "timm_kwargs": kw,
        "sha256": sha,
        "command": ck["command"],
        "earlier_commands": ck.get("history", []),
        "seed": ck["seed"],
        "steps": ck["step"],
        "batch_items": ck["args"]["batch"],
        "images_seen": ck["step"] * ck["args"]["batch"] * 4,
        "wall_minutes": round(ck["elapsed"] / 60, 1),
        "machine": "2 shared CPU cores, fp32",
        "data_seeds": f"np.random.default_rng([{PRETRAIN_SEED_TAG}, {ck['seed']}, i]) for item i "
                      f"in [0, {ck['step'] * ck['args']['batch']}) (item i = 2 pairs of style views)",
        "input": "64 x 128 (patch 8): whole scenes rendered at 64x128 and crops of 128x256 renders",
        "objective": ("supervised proxy task on procedurally rendered street scenes in random styles: "
                      "dense prediction of the 7 coarse Cityscapes categories, log depth, instance/"
                      "category boundaries and class-agnostic region geometry (log metric height, "
                      "width, relative y), plus cross-style cosine consistency of patch tokens "
                      "between two renders of the same layout; linear heads discarded"),
        "final_losses": ck.get("last_losses", {}),
    }
    (dest / "course_vit.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s (%.1f MB, sha256 %s...) and course_vit.json", wpath, wpath.stat().st_size / 1e6, sha[:12])


# ----------------------------------------------------------------------------- main
class PretrainError(ValueError):
    """A run folder that cannot be resumed with the arguments given."""


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=Path, default=Path("/tmp/course_vit_run"),
                    help="run folder: ckpt.pt, log.jsonl, command.txt")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8, help="items per step (x2 pairs x2 style views = 4x images)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--w-consist", type=float, default=0.1)
    ap.add_argument("--w-geom", type=float, default=0.5)
    ap.add_argument("--export", type=Path, nargs="?", const=DEFAULT_EXPORT_DIR, default=None, metavar="DIR",
                    help=f"only export <out>/ckpt.pt to DIR/course_vit.{{safetensors,json}} (DIR: "
                         f"./{DEFAULT_EXPORT_DIR} under the current directory if left out; to ship "
                         f"the weights, reinlite/weights from a checkout)")
    ap.add_argument("--reschedule", action="store_true",
                    help="resume a checkpoint made with another --steps: the cosine schedule ends at "
                         "the new --steps (recorded in the checkpoint's history)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop (after checkpointing) when this session has run this long")


def run(args: argparse.Namespace, command: str) -> int:
    """Train (or resume, or only export) as ``args`` say; ``command`` is recorded in the checkpoint."""
    ckpt_path = args.out / "ckpt.pt"
    if args.export is not None:
        export(ckpt_path, args.export)
        return 0

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    vit = build_vit()
    heads = ProxyHeads(VIT_KWARGS["embed_dim"], VIT_KWARGS["patch_size"])
    params = list(vit.parameters()) + list(heads.parameters())
    opt = build_optimizer(ndim_decay_groups(params, args.wd), lr=args.lr, betas=(0.9, 0.999))
    step, elapsed, history = 0, 0.0, []
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        vit.load_state_dict(ck["vit"])
        heads.load_state_dict(ck["heads"])
        opt.load_state_dict(ck["opt"])
        step, elapsed = ck["step"], ck["elapsed"]
        history = ck.get("history", [])
        if ck["seed"] != args.seed or (ck["args"]["steps"] != args.steps and not args.reschedule):
            raise PretrainError(f"{ckpt_path} was made with --steps {ck['args']['steps']} --seed "
                                f"{ck['seed']}; resume with the same values (or --reschedule to end the "
                                f"cosine schedule at a new --steps)")
        if ck["args"]["steps"] != args.steps:
            # shorten (or lengthen) the run: the cosine schedule is recomputed for the new total
            # from this step on; both commands are kept in the record
            history = history + [dict(until_step=step, command=ck["command"])]
            log.info("rescheduled: %d -> %d total steps from step %d", ck["args"]["steps"], args.steps, step)
        else:
            command = ck["command"]
        log.info("resuming from %s at step %d (%.1f min so far)", ckpt_path, step, elapsed / 60)
    else:
        (args.out / "command.txt").write_text(command + "\n")
    if step >= args.steps:
        log.info("already finished; export with --export DIR")
        return 0

    w = dict(cat=1.0, depth=1.0, bnd=1.0, geom=args.w_geom, consist=args.w_consist)
    ds = PairDataset(args.seed, args.steps * args.batch)
    sampler = range(step * args.batch, args.steps * args.batch)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, sampler=sampler, collate_fn=collate,
                                     num_workers=args.workers, persistent_workers=False,
                                     prefetch_factor=4 if args.workers else None,
                                     worker_init_fn=_worker_init)

    def save(last):
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(dict(vit=vit.state_dict(), heads=heads.state_dict(), opt=opt.state_dict(),
                        step=step, elapsed=elapsed, seed=args.seed, command=command, history=history,
                        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                        last_losses=last), tmp)
        os.replace(tmp, ckpt_path)

    from tqdm import tqdm
    vit.train()
    heads.train()
    t_start = time.time()
    t_last = t_start
    last = {}
    logf = open(args.out / "log.jsonl", "a")
    pbar = tqdm(total=args.steps, initial=step, desc="pretrain course_vit", mininterval=10,
                dynamic_ncols=False, ncols=110)
    ema = None
    for batch in dl:
        set_lr(opt, warmup_cosine_lr(args.lr, step, args.steps, args.warmup))
        result = train_step(lambda b: losses(vit, heads, b, w), batch,
                            lambda out: dict(out[1], loss=out[0]), opt, params=params, grad_clip=1.0)
        L = {k: v for k, v in result.losses.items() if k != "loss"}
        step += 1
        now = time.time()
        elapsed += now - t_last
        t_last = now
        last = {k: round(float(v.detach()), 4) for k, v in L.items()}
        ema = last if ema is None else {k: 0.95 * ema[k] + 0.05 * last[k] for k in last}
        pbar.update(1)
        pbar.set_postfix(cat=f"{ema['cat']:.3f}", acc=f"{ema['cat_acc']:.3f}",
                         cons=f"{ema['consist']:.3f}", refresh=False)
        if step % 10 == 0 or step == args.steps:
            logf.write(json.dumps(dict(step=step, elapsed_min=round(elapsed / 60, 2), **last)) + "\n")
            logf.flush()
        stop = args.max_minutes is not None and (now - t_start) / 60 > args.max_minutes
        if step % args.ckpt_every == 0 or step == args.steps or stop:
            save(last)
        if stop:
            log.info("stopping at step %d (--max-minutes); rerun the same command to resume", step)
            break
    pbar.close()
    logf.close()
    if step == args.steps:
        log.info("done: %d steps in %.1f min; export with reinlite pretrain --out %s --export DIR",
                 step, elapsed / 60, args.out)
    return 0


def _worker_init(_):
    torch.set_num_threads(1)


def main(argv: Optional[Sequence[str]] = None, prog: str = "reinlite pretrain") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(args, command=prog + " " + " ".join(shlex.quote(a) for a in argv))


if __name__ == "__main__":
    raise SystemExit(main())
