"""What a gpu-check run is: its phases and their time budgets, the paper's Table 8, the
tiny mode's overrides, :class:`Settings` (the CLI's arguments) and the release config it
measures (:func:`check_config`, read by :func:`config_facts`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

RELEASE = "gta2cs_dinov2_large"
PAPER = dict(gpu="RTX 3090 Ti", iters=40000, rein_hours=9.5, rein_gb=10.0, full_hours=11.2, full_gb=14.7)
PAPER["time_ratio"] = round(PAPER["rein_hours"] / PAPER["full_hours"], 2)   # 0.85
PAPER["memory_ratio"] = round(PAPER["rein_gb"] / PAPER["full_gb"], 2)       # 0.68

PHASES = ("step_rein_bf16", "step_rein_fp32", "profile", "step_full_bf16", "step_full_fp32",
          "train", "slide", "ddp", "compile", "train_cli")
# (budget, minimum) seconds per phase, in the order they run; the total is --budget.
GPU_BUDGETS = {"build_rein": (60, 5), "step_rein_bf16": (35, 10), "step_rein_fp32": (45, 10),
               "profile": (30, 10), "build_full": (40, 5), "step_full_bf16": (35, 10), "step_full_fp32": (45, 10),
               "train": (110, 30), "slide": (25, 8), "ddp": (60, 30), "compile": (120, 60),
               "train_cli": (60, 40)}
# Tiny: caps only; the two torchrun children get more (two interpreters start on a CPU).
TINY_BUDGETS = {k: (max(b // 2, 10), 1) for k, (b, _) in GPU_BUDGETS.items()}
TINY_BUDGETS.update(ddp=(120, 1), train_cli=(120, 1))
TINY_PHASES = tuple(p for p in PHASES if p != "train_cli")  # `reinlite train`: tests/test_train.py
GIB = 2 ** 30

# The tiny mode: a 4-block ViT-Ti/16 at 64 x 64 with a small head of the same kind (msdeform).
TINY_OVERRIDES = [
    "model.backbone=vit_tiny_patch16_224", "model.img_size=64", "model.patch_size=16",
    'model.backbone_kwargs={"depth": 4}', "model.out_indices=null",
    'model.rein={"num_tokens": 16, "rank": 4, "query_dim": 64}',
    "model.head.hidden_dim=64", "model.head.num_layers=3", "model.head.num_heads=4",
    "model.head.ffn_dim=128", "model.head.mask_dim=64", "model.head.num_queries=16",
    "model.head.pixel_decoder_layers=2", "model.head.pixel_decoder_ffn=128",
    "loss.num_points=256", "optim.batch_size=2", "optim.lr=0.0005", "data.crop_size=[64,64]",
    "eval.crop=[64,64]", "eval.stride=[43,43]",
]


@dataclass
class Settings:
    """What one gpu-check run does (the CLI's arguments)."""

    out: str = "runs/gpu_check"
    tiny: bool = False
    device: str = "auto"            # auto | cuda | cpu
    budget_s: float = 480.0         # the whole run, model construction included
    warmup: Optional[int] = None    # None: 5 (tiny 1)
    steps: Optional[int] = None     # measured steps; None: 20 (tiny 3)
    train_steps: Optional[int] = None  # None: 200 (tiny 12)
    slide_images: Optional[int] = None  # None: 20 (tiny 2)
    ddp_steps: int = 3
    compile: Optional[bool] = None  # None: on a GPU yes, in tiny mode on the CPU no
    phases: Optional[Sequence[str]] = None  # None: all of PHASES (tiny: TINY_PHASES)
    data_root: str = "data/benchmark"

    def resolved(self) -> "Settings":
        s = Settings(**asdict(self))
        s.warmup = (1 if s.tiny else 5) if s.warmup is None else s.warmup
        s.steps = (3 if s.tiny else 20) if s.steps is None else s.steps
        s.train_steps = (12 if s.tiny else 200) if s.train_steps is None else s.train_steps
        s.slide_images = (2 if s.tiny else 20) if s.slide_images is None else s.slide_images
        if s.device == "auto":  # reinlite.engine.device's rule; the tiny mode is the CPU mode
            from reinlite.engine.device import pick_device

            s.device = "cpu" if s.tiny else pick_device("auto").type
        if s.compile is None:
            s.compile = s.device == "cuda"
        s.phases = list((TINY_PHASES if s.tiny else PHASES) if s.phases is None else s.phases)
        unknown = sorted(set(s.phases) - set(PHASES))
        if unknown:
            raise ValueError(f"unknown gpu-check phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
        return s


# Everything that touches the project's config / builder / data lives in these functions.
def check_config(tiny: bool, method: str = "rein", extra: Sequence[str] = ()):
    """The release config with random weights (``method``: rein | full; full fine-tuning
    trains the backbone at lr x 0.1); tiny: a 4-block ViT-Ti/16 at 64 x 64, a small head."""
    from reinlite.config import load_config

    overrides = ["model.pretrained=false", f"model.method={method}"]
    overrides += ["optim.backbone_lr_mult=0.1"] if method == "full" else []
    overrides += TINY_OVERRIDES if tiny else []
    return load_config(RELEASE, overrides + list(extra))


def config_facts(cfg) -> dict[str, Any]:
    """The few config values the check needs and reports, read in one place."""
    m = cfg.model
    return dict(backbone=m.backbone, img_size=m.img_size, method=m.method,
                num_classes=int(m.head.num_classes), crop=list(cfg.data.crop_size),
                batch_size=int(cfg.optim.batch_size), lr=float(cfg.optim.lr),
                backbone_lr_mult=float(cfg.optim.backbone_lr_mult), grad_clip=cfg.optim.grad_clip,
                poly_power=float(cfg.optim.poly_power), iters=int(cfg.optim.iters),
                eval_crop=list(cfg.eval.crop), eval_stride=list(cfg.eval.stride), seed=int(cfg.seed),
                rein=dict(num_tokens=m.rein.num_tokens, rank=m.rein.rank, query_dim=m.rein.query_dim),
                num_points=int(cfg.loss.num_points))
