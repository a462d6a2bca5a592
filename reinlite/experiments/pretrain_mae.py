"""Pretrain the self-supervised course backbone ``course_vit_mae`` (masked-image modelling).

Why: the shipped ``course_vit`` learnt from supervised proxies of the benchmark's task, so its
frozen features already fit it. The paper's VFMs are self-supervised (DINOv2, MAE) or trained
on other objectives, and Rein's gain over a frozen backbone grows as the frozen features fit
the task less (Table 2: MAE-L +11.3). This backbone is the course's analogue of MAE-L: the
same ViT shape as ``course_vit``, the same kind of procedural corpus
(:mod:`reinlite.experiments.corpus`), and **no labels of any kind**.

The objective, after He et al., "Masked Autoencoders Are Scalable Vision Learners" (2022):

    x          [B, 3, 64, 128]  ImageNet-normalised image  ->  N = 8 x 16 = 128 patches of 8 x 8
    keep       [B, N_vis]       a random subset, N_vis = N (1 - mask_ratio) (32 at ratio 0.75)
    z = E(patch_embed(x)[keep] + pos[keep])   the encoder sees the visible patches only
                                              (plus the class token)   [B, 1 + N_vis, C]
    y = D(unshuffle([z, mask_token x (N - N_vis)]) + pos_dec)      [B, N, p*p*3]
    t_n = (t_n - mean(t_n)) / sqrt(var(t_n) + 1e-6)                per-patch normalised pixels
    L = sum_n m_n ||y_n - t_n||^2 / (p*p*3 sum_n m_n)              masked patches only (m_n = 1)

Encoder = a plain timm VisionTransformer (exported with timm key names); its position
embedding is fixed 2-D sine-cosine as in MAE (exported too). The decoder (a few narrow
transformer blocks) is discarded at export.

Deterministic from ``--seed``: the weights' init, the data (item i of seed s draws from
``corpus_rng(MAE_STREAM, s, i)``, disjoint from the benchmark and from course_vit's corpus)
and each step's masks (a generator seeded by (seed, step)) do not depend on interruptions,
so a resumed run (``--resume``) continues exactly.

    reinlite pretrain-mae --out /work/runs/mae --steps N --batch B --seed 0
    reinlite pretrain-mae --out /work/runs/mae --steps N --batch B --seed 0 --resume
    reinlite pretrain-mae --out /work/runs/mae --export reinlite/weights   # from a checkout: ship it
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from reinlite.engine.optim import build_optimizer, ndim_decay_groups, set_lr, warmup_cosine_lr
from reinlite.engine.step import train_step
from reinlite.experiments.corpus import DEFAULT_EXPORT_DIR, PRETRAIN_SEED_TAG, VIT_KWARGS, ImageCorpus, build_vit

log = logging.getLogger(__name__)

NAME = "course_vit_mae"
MAE_STREAM = 0x4D4145  # "MAE": second word of this corpus' seed sequences
CKPT = "ckpt.pt"


class PretrainError(ValueError):
    """A run folder or a set of arguments that cannot be used as asked."""


# ----------------------------------------------------------------------------- pieces
def sincos_pos_embed(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding [grid_h * grid_w, dim] (MAE's, row-major grid).

    Half the channels encode the row, half the column; each half is
    [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim/4)), k = 0 .. dim/4 - 1.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                            torch.arange(grid_w, dtype=torch.float64), indexing="ij")

    def one(pos: Tensor) -> Tensor:
        angle = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    return torch.cat([one(ys), one(xs)], dim=1).float()


def patchify(images: Tensor, p: int) -> Tensor:
    """[B, 3, H, W] -> [B, (H/p)(W/p), p*p*3], patches in row-major order, pixels (py, px, c)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def random_keep(batch: int, n: int, n_keep: int, generator: torch.Generator) -> Tensor:
    """Per-sample random subsets of patch indices to keep: long [batch, n_keep] (MAE's noise argsort)."""
    noise = torch.rand(batch, n, generator=generator)
    return noise.argsort(dim=1)[:, :n_keep]


class MaskedAutoencoder(nn.Module):
    """A timm ViT encoder on visible patches + a narrow transformer decoder on all patches.

    forward(images [B, 3, H, W], keep long [B, N_vis]) -> (pred [B, N, p*p*3], mask [B, N]),
    mask = 1 for the patches the encoder did not see.
    """

    def __init__(self, vit: nn.Module, dec_dim: int = 128, dec_depth: int = 2, dec_heads: int = 4):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.vit = vit
        self.p = int(vit.patch_embed.patch_size[0])
        gh, gw = (int(g) for g in vit.patch_embed.grid_size)
        self.grid = (gh, gw)
        dim = int(vit.embed_dim)
        if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "no_embed_class", False):
            raise ValueError("MaskedAutoencoder expects a ViT with one class token inside pos_embed")
        with torch.no_grad():  # MAE: fixed sin-cos positions, class token at position zero
            vit.pos_embed.zero_()
            vit.pos_embed[0, 1:] = sincos_pos_embed(gh, gw, dim)
        vit.pos_embed.requires_grad_(False)
        self.dec_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        pos = torch.zeros(1, 1 + gh * gw, dec_dim)
        pos[0, 1:] = sincos_pos_embed(gh, gw, dec_dim)
        self.register_buffer("dec_pos", pos, persistent=False)
        self.dec_blocks = nn.ModuleList(
            [Block(dec_dim, dec_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(dec_depth)])
        self.dec_norm = nn.LayerNorm(dec_dim)
        self.dec_pred = nn.Linear(dec_dim, self.p * self.p * 3)

    def encode(self, images: Tensor, keep: Tensor) -> Tensor:
        """Visible patches (+ class token) through the encoder: [B, 1 + N_vis, C] after the final norm."""
        vit = self.vit
        x = vit.patch_embed(images)                                  # [B, N, C]
        x = x + vit.pos_embed[:, 1:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = vit.norm_pre(torch.cat([cls, x], dim=1))
        for block in vit.blocks:
            x = block(x)
        return vit.norm(x)

    def forward(self, images: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        B = images.shape[0]
        n = self.grid[0] * self.grid[1]
        z = self.dec_embed(self.encode(images, keep))                # [B, 1 + N_vis, D]
        full = self.mask_token.expand(B, n, -1).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, z.shape[-1]), z[:, 1:])
        x = torch.cat([z[:, :1], full], dim=1) + self.dec_pos
        for block in self.dec_blocks:
            x = block(x)
        pred = self.dec_pred(self.dec_norm(x))[:, 1:]                 # [B, N, p*p*3]
        mask = torch.ones(B, n, device=images.device)
        mask.scatter_(1, keep, 0.0)
        return pred, mask


def mae_loss(pred: Tensor, images: Tensor, mask: Tensor, p: int, eps: float = 1e-6) -> Tensor:
    """Mean squared error on per-patch normalised pixels, over masked patches only.

    pred [B, N, p*p*3], images [B, 3, H, W], mask [B, N] (1 = masked) -> scalar.
    """
    target = patchify(images, p)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mean) / (var + eps).sqrt()
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


# ----------------------------------------------------------------------------- export
def export(ckpt_path: Path, dest: Path) -> Path:
    """Write the encoder as DEST/course_vit_mae.safetensors (timm names) + the json record."""
    from safetensors.torch import save_file

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    dest.mkdir(parents=True, exist_ok=True)
    sd = {k[len("vit."):]: v.contiguous() for k, v in ck["model"].items() if k.startswith("vit.")}
    wpath = dest / f"{NAME}.safetensors"
    save_file(sd, str(wpath), metadata={"format": "pt", "source": "reinlite pretrain-mae"})
    sha = hashlib.sha256(wpath.read_bytes()).hexdigest()
    a = ck["args"]
    kw = dict(VIT_KWARGS, **ck.get("vit_overrides", {}))
    kw["img_size"] = list(kw["img_size"])
    n_items = ck["step"] * a["batch"] // a["views"]
    meta = {
        "timm_kwargs": kw,
        "sha256": sha,
        "command": ck["command"],
        "earlier_commands": ck.get("history", []),
        "seed": ck["seed"],
        "steps": ck["step"],
        "steps_planned": a["steps"],
        "batch_images": a["batch"],
        "images_seen": ck["step"] * a["batch"],
        "scenes_rendered": n_items,
        "wall_minutes": round(ck["elapsed"] / 60, 1),
        "cpu_minutes": round(ck["cpu"] / 60, 1),
        "threads": a["threads"],
        "machine": "2 shared CPU cores, fp32",
        "data_seeds": f"np.random.default_rng([{PRETRAIN_SEED_TAG}, {MAE_STREAM}, {ck['seed']}, i]) "
                      f"for scene i in [0, {n_items})",
        "input": (f"64 x 128 (patch 8): each scene rendered at 128 x 256 gives {a['views']} images: "
                  f"the whole scene at half scale and {a['views'] - 1} random 64 x 128 windows"),
        "objective": (f"masked-image modelling in the spirit of MAE, no labels of any kind: "
                      f"{a['mask_ratio']:.0%} of the 128 patches masked per image, the encoder sees "
                      f"the visible ones only, a {a['dec_depth']}-block {a['dec_dim']}-wide decoder "
                      f"reconstructs the per-patch normalised pixels of the masked ones (MSE on masked "
                      f"patches only); fixed 2-D sin-cos position embedding; decoder discarded"),
        "optimiser": dict(name="AdamW", lr=a["lr"], betas=[0.9, 0.95], weight_decay=a["wd"],
                          warmup=a["warmup"], schedule="cosine to 1% of lr", grad_clip=1.0),
        "final_loss": ck.get("last_loss"),
    }
    (dest / f"{NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s (%.1f MB, sha256 %s...) and %s.json", wpath, wpath.stat().st_size / 1e6, sha[:12], NAME)
    return wpath


def reconstruction_figure(ckpt_path: Path, path: Path, bench: Optional[Path] = None, n: int = 4,
                          seed: int = 0) -> Path:
    """Masked input | reconstruction | original for ``n`` images (benchmark targets if ``bench``,
    else fresh corpus scenes), at the pretraining size and mask ratio; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from reinlite.experiments.corpus import to_tensor_image

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    a = ck["args"]
    model = MaskedAutoencoder(build_vit(**ck.get("vit_overrides", {})), a["dec_dim"], a["dec_depth"], a["dec_heads"])
    model.load_state_dict(ck["model"])
    model.eval()
    size = tuple(int(v) for v in model.vit.patch_embed.img_size)
    if bench is not None:
        from PIL import Image

        from reinlite.data.benchmark import benchmark_datasets

        sets = benchmark_datasets(bench)
        names = [d for d in sets if d not in ("gta", "gta_val")][:n]
        raw = [np.asarray(Image.fromarray(sets[d].load(0)[0]).resize(size[::-1], Image.BILINEAR))
               for d in names]
        images = torch.from_numpy(np.stack([to_tensor_image(r) for r in raw]))
    else:
        names = [f"corpus {i}" for i in range(n)]
        images = ImageCorpus(seed + 1, n, stream=MAE_STREAM, views=1, size=size, full=(2 * size[0], 2 * size[1]))
        images = torch.cat([images[i] for i in range(n)])
    p = model.p
    gh, gw = model.grid
    n_keep = max(1, int(round(gh * gw * (1 - a["mask_ratio"]))))
    keep = random_keep(len(images), gh * gw, n_keep, step_generator(seed, 0))
    with torch.no_grad():
        pred, mask = model(images, keep)
    target = patchify(images, p)                          # [B, N, p*p*3]
    # the loss predicts per-patch *normalised* pixels; to show them, undo the normalisation with
    # the mean / std of the image's *visible* patches (never the masked patches' own statistics)
    vis = (1 - mask)[..., None]
    mean = (target.mean(-1, keepdim=True) * vis).sum(1, keepdim=True) / vis.sum(1, keepdim=True)
    std = (target.std(-1, keepdim=True) * vis).sum(1, keepdim=True) / vis.sum(1, keepdim=True)
    recon = torch.where(mask[..., None] > 0, pred * std + mean, target)

    def unpatch(x):
        B = x.shape[0]
        return x.reshape(B, gh, gw, p, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(B, gh * p, gw * p, 3)

    from reinlite.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    def to_rgb(x):  # the inverse of reinlite.data.transforms.normalize, channels last
        return (x * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)).clamp(0, 1).numpy()

    grey = unpatch(mask[..., None].expand_as(target)).numpy() > 0
    masked = np.where(grey, 0.5, to_rgb(unpatch(target)))
    cols = [("masked input", masked), ("reconstruction", to_rgb(unpatch(recon))),
            ("original", to_rgb(unpatch(target)))]
    fig, axes = plt.subplots(len(images), 3, figsize=(7.5, 1.35 * len(images) + 0.3))
    for r in range(len(images)):
        for c, (title, arr) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(arr[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(names[r], fontsize=8)
    fig.suptitle(f"{NAME} at step {ck['step']}: {a['mask_ratio']:.0%} of the patches masked (masked patches "
                 f"shown with the visible patches' mean contrast)", fontsize=8)
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the run
def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", type=Path, default=Path("/tmp/course_vit_mae_run"),
                    help="run folder: ckpt.pt, log.jsonl, command.txt")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64, help="images per step (= batch / views scenes)")
    ap.add_argument("--views", type=int, default=4, help="images per rendered scene (1 whole + views-1 windows)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--dec-dim", type=int, default=128)
    ap.add_argument("--dec-depth", type=int, default=2)
    ap.add_argument("--dec-heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop (after checkpointing) when this session has run this long")
    ap.add_argument("--export", type=Path, nargs="?", const=DEFAULT_EXPORT_DIR, default=None, metavar="DIR",
                    help=f"only export <out>/{CKPT} to DIR/{NAME}.{{safetensors,json}} (DIR: "
                         f"./{DEFAULT_EXPORT_DIR} under the current directory if left out; to ship "
                         f"the weights, reinlite/weights from a checkout)")
    ap.add_argument("--figure", type=Path, default=None,
                    help="with --export: also save masked input | reconstruction | original to this PNG")
    ap.add_argument("--figure-bench", type=Path, default=None,
                    help="with --figure: show the first image of each target domain of this benchmark")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: a 2-block, 32-wide ViT


_RESUME_MUST_MATCH = ("steps", "batch", "lr", "warmup", "wd", "mask_ratio", "dec_dim", "dec_depth",
                      "dec_heads", "seed", "tiny", "views")


def run(args: argparse.Namespace, command: Optional[str] = None) -> dict:
    """Train (or resume) to ``args.steps``; returns the last checkpoint's summary."""
    ckpt_path = args.out / CKPT
    if args.export is not None:
        export(ckpt_path, args.export)
        if args.figure is not None:
            reconstruction_figure(ckpt_path, args.figure, args.figure_bench)
        return {}
    torch.set_num_threads(args.threads)
    vit_overrides = dict(embed_dim=32, depth=2, num_heads=2, img_size=(16, 32)) if args.tiny else {}
    torch.manual_seed(args.seed)
    model = MaskedAutoencoder(build_vit(**vit_overrides), args.dec_dim, args.dec_depth, args.dec_heads)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(ndim_decay_groups(params, args.wd), lr=args.lr, betas=(0.9, 0.95))
    saved_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    step, elapsed, cpu, history = 0, 0.0, 0.0, []
    command = command or "reinlite pretrain-mae " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    if ckpt_path.exists():
        if not args.resume:
            raise PretrainError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        differ = [k for k in _RESUME_MUST_MATCH if ck["args"].get(k) != saved_args.get(k)]
        if differ:
            raise PretrainError(
                f"{ckpt_path} was made with other settings: " + ", ".join(
                    f"--{k.replace('_', '-')} {ck['args'].get(k)} (now {saved_args.get(k)})" for k in differ)
                + "; resume with the same values, or choose another --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, elapsed, cpu = ck["step"], ck["elapsed"], ck["cpu"]
        history = ck.get("history", []) + [dict(resumed_at_step=step, command=command)]
        command = ck["command"]
        log.info("resuming %s at step %d (%.1f min wall, %.1f CPU-min so far)", ckpt_path, step,
                 elapsed / 60, cpu / 60)
    elif args.resume:
        raise PretrainError(f"--resume: no checkpoint at {ckpt_path}")
    args.out.mkdir(parents=True, exist_ok=True)
    if step == 0:
        (args.out / "command.txt").write_text(command + "\n")
    last = None
    if step >= args.steps:
        log.info("already finished (%d steps); export with --export DIR", step)
        return dict(step=step, elapsed=elapsed, cpu=cpu)

    sizes = dict(size=(16, 32), full=(32, 64)) if args.tiny else {}
    if args.batch % args.views:
        raise PretrainError(f"--batch {args.batch} must be a multiple of --views {args.views}")
    per_step = args.batch // args.views
    ds = ImageCorpus(args.seed, args.steps * per_step, stream=MAE_STREAM, views=args.views, **sizes)
    n = model.grid[0] * model.grid[1]
    n_keep = max(1, int(round(n * (1 - args.mask_ratio))))

    def save() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step, elapsed=elapsed,
                        cpu=cpu, seed=args.seed, command=command, history=history, args=saved_args,
                        vit_overrides=vit_overrides, last_loss=last), tmp)
        os.replace(tmp, ckpt_path)

    model.train()
    t_start = time.time()
    t_wall, t_cpu = time.time(), time.process_time()
    with open(args.out / "log.jsonl", "a") as logf:
        while step < args.steps:
            images = torch.cat([ds[i] for i in range(step * per_step, (step + 1) * per_step)])
            keep = random_keep(images.shape[0], n, n_keep, step_generator(args.seed, step))
            set_lr(opt, warmup_cosine_lr(args.lr, step, args.steps, args.warmup))
            loss = train_step(model, (images, keep), lambda out: mae_loss(out[0], images, out[1], model.p),
                              opt, params=params, grad_clip=1.0).loss
            step += 1
            now_wall, now_cpu = time.time(), time.process_time()
            elapsed += now_wall - t_wall
            cpu += now_cpu - t_cpu
            t_wall, t_cpu = now_wall, now_cpu
            last = round(float(loss.detach()), 5)
            if step % args.log_every == 0 or step == args.steps:
                logf.write(json.dumps(dict(step=step, loss=last, lr=round(opt.param_groups[0]["lr"], 7),
                                           wall_min=round(elapsed / 60, 2), cpu_min=round(cpu / 60, 2))) + "\n")
                logf.flush()
            stop = args.max_minutes is not None and (now_wall - t_start) / 60 >= args.max_minutes
            if step % args.ckpt_every == 0 or step == args.steps or stop:
                save()
            if stop:
                log.info("stopping at step %d (--max-minutes); rerun with --resume to continue", step)
                break
    if step == args.steps:
        log.info("done: %d steps, %.1f min wall, %.1f CPU-min; export with reinlite pretrain-mae "
                 "--out %s --export DIR", step, elapsed / 60, cpu / 60, args.out)
    return dict(step=step, elapsed=elapsed, cpu=cpu, loss=last)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="reinlite pretrain-mae", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(args, command="reinlite pretrain-mae " + " ".join(shlex.quote(a) for a in argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
