"""Training: configs, the model (Rein backbone + Mask2Former head), the loop, checkpoints.

    reinlite train --config course [key=value ...]      # or a path to a .json config
    torchrun --nproc_per_node=2 -m reinlite.cli train --config gta2cs_dinov2_large

A config is a nested JSON object; every key must be one of :data:`DEFAULTS` (a misspelt
key is an error that names it). ``key=value`` overrides use dotted keys and JSON values:
``optim.iters=200 model.head.pixel_decoder=fpn data.root=data/benchmark``.

What the loop does, per step k (the release's recipe, rein-method.md):
    lr_k = lr * (1 - k / iters) ** 0.9                         (poly schedule)
    batch = the k-th batch of a seeded, epoch-wise permutation (+ per-sample augmentation seed)
    loss  = Mask2FormerLoss(head(backbone(images)), labels)     (bf16 autocast on a GPU)
    AdamW step on the trainable parameters only (Rein + head), optional grad-norm clipping

Exact resume: the data order and every random draw of step k depend only on (seed, k):
the global RNG is re-seeded at the start of each step. A checkpoint stores the trainable
weights (safetensors, with the step and the config in its metadata) and the optimiser
state (``torch.save``, read back with ``weights_only=True``); a run killed after step k
and resumed from its last checkpoint ends with bit-identical weights on a CPU.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .head import Mask2FormerHead, semantic_inference
from .losses import Mask2FormerLoss

CONFIG_DIR = Path(__file__).with_name("configs")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CKPT_NAME = "checkpoint.safetensors"
OPTIM_NAME = "optimizer.pt"
FORMAT = "reinlite-train-v1"

# ----------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 42,
    "device": "auto",           # auto (cuda if available) | cpu | cuda
    "amp": "auto",              # auto: bf16 autocast on a GPU, none on a CPU | bf16 | none
    "threads": None,            # torch CPU threads (None: torch's default)
    "out_dir": "runs/{name}",
    "model": {
        "backbone": "course_vit",   # a timm ViT name or course_vit
        "pretrained": True,         # true | false | a local weights file
        "img_size": None,           # the size the ViT is built at (None: its own)
        "patch_size": None,         # None: the model's own (the release: 16)
        "out_indices": None,        # None: (7, 11, 15, 23) for 24 blocks, else evenly spaced
        "backbone_kwargs": {},      # extra timm constructor kwargs (free-form)
        "method": "rein",           # rein | frozen | full | lora | vpt | adaptformer (reinlite.peft)
        "method_kwargs": {},        # the baseline's options, e.g. {"rank": 8} for lora (free-form)
        "rein": {"num_tokens": 100, "rank": 16, "query_dim": 256},  # Rein kwargs, or null
        "head": {
            "num_classes": 19,
            "hidden_dim": 256,
            "num_layers": 9,
            "num_heads": 8,
            "ffn_dim": 2048,
            "mask_dim": 256,
            "num_queries": 100,     # used without Rein; with Rein it is rein.num_tokens
            "pixel_decoder": "msdeform",
            "pixel_decoder_layers": 6,
            "pixel_decoder_ffn": 1024,
            "pixel_decoder_points": 4,
        },
    },
    "loss": {
        "class_weight": 2.0,
        "mask_weight": 5.0,
        "dice_weight": 5.0,
        "no_object_weight": 0.1,
        "num_points": 12544,
        "oversample_ratio": 3.0,
        "importance_ratio": 0.75,
    },
    "data": {
        "kind": "benchmark",        # benchmark | folders | random (tiny shapes, for tests)
        "root": "data/benchmark",
        "source": "gta",
        "source_split": "train",
        "targets": ["cityscapes", "bdd100k", "mapillary"],
        "target_split": "val",
        "roots": {},                # per-domain roots (kind "folders"): {"gta": "...", ...}
        "crop_size": [512, 512],
        "scale_range": [0.5, 2.0],  # random rescale factors of the (resized) image
        "train_resize": None,       # before rescaling: short side (int) or [H, W]; None: native
        "cat_max_ratio": 0.75,
        "flip": True,
        "photometric": True,
        "num_workers": 2,
        "random_size": [64, 64],    # kind "random": image size and number of images
        "random_count": 16,
    },
    "optim": {
        "iters": 40000,
        "batch_size": 4,            # per process
        "lr": 1e-4,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "poly_power": 0.9,
        "grad_clip": None,          # max grad norm, or None
    },
    "train": {
        "log_every": 50,
        "ckpt_every": 4000,
        "resume": "auto",           # auto (out_dir's checkpoint if any) | a checkpoint | none
        "progress": True,
        "tensorboard": False,
    },
    "eval": {
        "mode": "slide",            # slide | whole
        "crop": [512, 512],
        "stride": [341, 341],
        "resize": None,             # [H, W] before inference, or {domain: [H, W]}; None: native
        "batch_size": 1,            # images per forward pass (same-sized images only)
        "max_images": None,         # evaluate on the first N images of each domain
    },
}
FREE_FORM = {"model.backbone_kwargs", "model.method_kwargs", "data.roots", "eval.resize"}


class ConfigError(ValueError):
    """A config that cannot be used (unknown key, bad value)."""


def _check_keys(cfg: dict, ref: dict, prefix: str = "") -> None:
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if key not in ref:
            close = difflib.get_close_matches(key, list(ref), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}; known keys under "
                              f"'{prefix or '<top>'}': {', '.join(sorted(ref))}")
        if dotted in FREE_FORM:
            continue
        if dotted == "model.rein":
            if value is not None:
                _check_rein_kwargs(value)
            continue
        if isinstance(ref[key], dict) and isinstance(value, dict):
            _check_keys(value, ref[key], dotted + ".")
        elif isinstance(ref[key], dict) and value is not None:
            raise ConfigError(f"config key '{dotted}' must be an object, got {value!r}")


def _check_rein_kwargs(value) -> None:
    from .rein import Rein

    if not isinstance(value, dict):
        raise ConfigError(f"config key 'model.rein' must be an object or null, got {value!r}")
    allowed = set(inspect.signature(Rein.__init__).parameters) - {"self", "num_layers", "embed_dim"}
    for key in value:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean 'model.rein.{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key 'model.rein.{key}'{hint}; Rein accepts "
                              f"{', '.join(sorted(allowed))}")


def _merge(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("none", "null"):
            return None
        if low in ("true", "false"):
            return low == "true"
        return text


def apply_overrides(cfg: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as JSON, else kept as strings)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node, ref = cfg, DEFAULTS
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            free = ref is None or parent in FREE_FORM or parent == "model.rein"
            if not free and part not in ref:
                close = difflib.get_close_matches(part, list(ref), n=1)
                hint = f" (did you mean '{'.'.join(parts[:i] + [close[0]])}'?)" if close else ""
                raise ConfigError(f"unknown config key '{'.'.join(parts[:i + 1])}'{hint}")
            if i == len(parts) - 1:
                node[part] = _parse_value(text)
            else:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
                ref = None if free or not isinstance(ref[part], dict) else ref[part]
    _check_keys(cfg, DEFAULTS)
    return cfg


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | os.PathLike | dict, overrides: Sequence[str] = ()) -> dict:
    """A full config: DEFAULTS <- the named/pathed JSON <- ``key=value`` overrides."""
    if isinstance(name_or_path, dict):
        user = name_or_path
    else:
        path = Path(name_or_path)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise FileNotFoundError(f"config {str(name_or_path)!r} not found: not a file and not one "
                                    f"of the shipped configs ({', '.join(config_names())})")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        user.pop("_comment", None)
    _check_keys(user, DEFAULTS)
    cfg = _merge(DEFAULTS, user)
    return apply_overrides(cfg, overrides)


def out_dir_of(cfg: dict) -> Path:
    return Path(str(cfg["out_dir"]).format(name=cfg["name"]))


# ----------------------------------------------------------------------------------------
# Data: augmentation and the step-indexed sampler
# ----------------------------------------------------------------------------------------
def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] (or [3, H, W]) -> float, ImageNet-normalised."""
    x = images_uint8.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(-1, 1, 1)
    return (x - mean) / std


def _to_chw_uint8(image) -> torch.Tensor:
    t = torch.as_tensor(image)
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    return t.contiguous().to(torch.uint8)


class TrainAugment:
    """The release's training pipeline, scaled: random rescale, random crop (a crop whose
    most frequent class covers more than ``cat_max_ratio`` is re-drawn, up to 10 times),
    horizontal flip and photometric distortion. All randomness comes from ``generator``.

    image uint8 [3, H, W], label long [H, W] -> (uint8 [3, h, w], long [h, w]), (h, w) = crop.
    """

    def __init__(self, crop_size, scale_range=(0.5, 2.0), cat_max_ratio=0.75, flip=True,
                 photometric=True, resize=None, ignore_index=255):
        self.crop = tuple(int(c) for c in crop_size)
        self.scale_range = tuple(scale_range) if scale_range else (1.0, 1.0)
        self.cat_max_ratio, self.flip, self.photometric = cat_max_ratio, flip, photometric
        self.resize = resize if isinstance(resize, int) or not resize else tuple(resize)
        self.ignore_index = ignore_index

    def __call__(self, image, label, g: torch.Generator):
        image = _to_chw_uint8(image)
        label = torch.as_tensor(label).long()
        h, w = image.shape[-2:]
        if isinstance(self.resize, int):  # short side -> resize
            f = self.resize / min(h, w)
            h, w = round(h * f), round(w * f)
        elif self.resize:
            h, w = self.resize
        lo, hi = self.scale_range
        s = lo + (hi - lo) * torch.rand((), generator=g).item()
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        img = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)[0]
        lab = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        ch, cw = self.crop
        if nh < ch or nw < cw:  # pad: image with 0, label with ignore
            ph, pw = max(ch - nh, 0), max(cw - nw, 0)
            img = F.pad(img, (0, pw, 0, ph), value=0.0)
            lab = F.pad(lab, (0, pw, 0, ph), value=self.ignore_index)
            nh, nw = img.shape[-2:]
        for _ in range(10):
            y0 = int(torch.randint(0, nh - ch + 1, (), generator=g))
            x0 = int(torch.randint(0, nw - cw + 1, (), generator=g))
            crop_lab = lab[y0:y0 + ch, x0:x0 + cw]
            if self.cat_max_ratio >= 1.0:
                break
            vals, counts = torch.unique(crop_lab[crop_lab != self.ignore_index], return_counts=True)
            if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                break
        img = img[:, y0:y0 + ch, x0:x0 + cw]
        lab = crop_lab
        if self.flip and torch.rand((), generator=g).item() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        if self.photometric:
            img = photometric_distortion(img, g)
        return img.round().clamp(0, 255).to(torch.uint8), lab.contiguous()


def photometric_distortion(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """mmseg-style photometric distortion on float [3, H, W] in 0..255: each of brightness
    (+-32), contrast (x 0.5..1.5), saturation (x 0.5..1.5) and hue (+-18 degrees) applied
    with probability 1/2."""
    import torchvision.transforms.v2.functional as TF

    def coin():
        return torch.rand((), generator=g).item() < 0.5

    def uni(a, b):
        return a + (b - a) * torch.rand((), generator=g).item()

    img = img.clamp(0, 255)
    if coin():
        img = (img + uni(-32, 32)).clamp(0, 255)
    if coin():
        img = (img * uni(0.5, 1.5)).clamp(0, 255)
    x = img / 255.0
    if coin():
        x = TF.adjust_saturation(x, uni(0.5, 1.5))
    if coin():
        x = TF.adjust_hue(x, uni(-18, 18) / 360.0)
    return x.clamp(0, 1) * 255.0


class RandomShapesDataset(torch.utils.data.Dataset):
    """Tiny learnable data for tests: a background class and 1-3 rectangles, each class with
    its own colour (plus noise). Item i is a function of (seed, i).
    Returns dict(image uint8 [3, H, W], label long [H, W], name)."""

    def __init__(self, count=16, size=(64, 64), num_classes=19, seed=0, classes=(0, 2, 10, 13)):
        self.count, self.size, self.seed = count, tuple(size), seed
        self.classes = [c for c in classes if c < num_classes]
        g = torch.Generator().manual_seed(1234)
        self.colors = torch.randint(0, 256, (num_classes, 3), generator=g)

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + int(i))
        h, w = self.size
        label = torch.full((h, w), self.classes[0], dtype=torch.long)
        for _ in range(int(torch.randint(1, 4, (), generator=g))):
            c = self.classes[1 + int(torch.randint(0, len(self.classes) - 1, (), generator=g))]
            y0, x0 = (int(torch.randint(0, h // 2, (), generator=g)), int(torch.randint(0, w // 2, (), generator=g)))
            y1, x1 = (y0 + int(torch.randint(h // 8, h // 2, (), generator=g)),
                      x0 + int(torch.randint(w // 8, w // 2, (), generator=g)))
            label[y0:y1, x0:x1] = c
        image = self.colors[label].permute(2, 0, 1).float()
        image = image + 20 * torch.randn(3, h, w, generator=g)
        return dict(image=image.clamp(0, 255).to(torch.uint8), label=label, name=f"shape_{i:04d}")


def load_sample(dataset, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 image [3, H, W], long train ids [H, W]) of item ``index`` of any dataset whose
    items are dict(image, label) or (image, label) pairs; a reinlite.data folder dataset is
    read through its ``load`` (uint8 arrays, no transform)."""
    if hasattr(dataset, "load"):
        image, label = dataset.load(index)
    else:
        item = dataset[index]
        if isinstance(item, dict):
            image, label = item["image"], item["label"]
        else:
            image, label = item[0], item[1]
    image = torch.as_tensor(image)
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)
    if image.is_floating_point():  # [0, 1] floats (the folder datasets' default transform)
        image = (image * 255.0).round().clamp(0, 255)
    return image.contiguous().to(torch.uint8), torch.as_tensor(label).long()


class AugmentedDataset(torch.utils.data.Dataset):
    """Wraps a dataset; ``ds[(index, aug_seed)]`` -> (uint8 image, long label) augmented
    with a generator seeded by ``aug_seed`` (so a batch depends only on the step)."""

    def __init__(self, dataset, augment: TrainAugment):
        self.dataset, self.augment = dataset, augment

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        image, label = load_sample(self.dataset, index)
        g = torch.Generator().manual_seed(int(seed))
        return self.augment(image, label, g)


def _mix(*values: int) -> int:
    h = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 62) - 1)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for steps start..iters-1, this rank's batch: [(index, aug_seed)] * batch_size.

    Global sample position p = (step * world + rank) * batch_size + j walks through
    epoch-wise permutations seeded by (seed, epoch); aug_seed = hash(seed, p).
    """

    def __init__(self, n: int, batch_size: int, iters: int, seed: int, start: int = 0,
                 rank: int = 0, world: int = 1):
        if n == 0:
            raise ValueError("the training dataset is empty")
        self.n, self.bs, self.iters, self.seed = n, batch_size, iters, seed
        self.start, self.rank, self.world = start, rank, world
        self._perm_epoch, self._perm = -1, None

    def _index(self, p: int) -> int:
        epoch = p // self.n
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
            self._perm_epoch = epoch
        return int(self._perm[p % self.n])

    def __len__(self):
        return max(0, self.iters - self.start)

    def __iter__(self):
        for step in range(self.start, self.iters):
            base = (step * self.world + self.rank) * self.bs
            yield [(self._index(base + j), _mix(self.seed, base + j)) for j in range(self.bs)]


def _collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.stack([b[1] for b in batch])
    return images, labels


def resolve_path(path) -> Path:
    """A relative path that does not exist from the current folder is tried from the
    repository root (so notebooks started in notebooks/ find data/benchmark)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = Path(__file__).resolve().parents[1] / p
    return alt if alt.exists() else p


def build_dataset(cfg: dict, domain: str, split: str):
    """A dataset of the domain (items: dict(image, label[, name]) or (image, label)) with
    Cityscapes *train ids* (0..18, 255 ignore) as labels."""
    d = cfg["data"]
    kind = d["kind"]
    if kind == "random":
        seed = _mix(cfg["seed"], domain, split) % 100000
        return RandomShapesDataset(d["random_count"], d["random_size"],
                                   cfg["model"]["head"]["num_classes"], seed=seed)
    if kind == "benchmark":
        from .data.benchmark import benchmark_datasets

        root = resolve_path(d["roots"].get(domain, d["root"]) if d["roots"] else d["root"])
        sets = benchmark_datasets(root)
        key = domain if not (domain == "gta" and split == "val") else "gta_val"
        if key not in sets:
            raise ConfigError(f"domain {domain!r} is not in the benchmark at {root} "
                              f"(it has {', '.join(sorted(sets))})")
        return sets[key]
    if kind == "folders":
        from .data.datasets import build_dataset as folder_dataset

        root = d["roots"].get(domain) if d["roots"] else None
        if root is None:
            raise ConfigError(f"data.roots has no folder for domain {domain!r}")
        name = {"gta": "gta5"}.get(domain, domain)
        if name == "synthia":
            return folder_dataset(name, root)
        if name == "mapillary" and split == "val":
            split = "validation"
        return folder_dataset(name, root, split=split)
    raise ConfigError(f"unknown data.kind {kind!r}: use benchmark, folders or random")


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------
class Segmentor(nn.Module):
    """A frozen ViT with Rein (``backbone``) + a Mask2Former head (``head``).

    forward(images [B, 3, H, W], ImageNet-normalised) -> the head's dict (pred_logits
    [B, m, K+1], pred_masks [B, m, H/4, W/4], aux_outputs).
    predict(images) -> semantic scores [B, K, H, W].
    """

    def __init__(self, backbone: nn.Module, head: Mask2FormerHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images):
        feats, queries = self.backbone(images)
        return self.head(feats, queries)

    @torch.no_grad()
    def predict(self, images):
        out = self.forward(images)
        return semantic_inference(out["pred_logits"], out["pred_masks"], images.shape[-2:])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self.named_parameters() if p.requires_grad}


def _pretrained_value(v):
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def build_model(cfg: dict) -> Segmentor:
    """Backbone (reinlite.build_backbone) + head from ``cfg['model']``."""
    from .backbone import build_backbone

    m = cfg["model"]
    img_size = m["img_size"]
    if isinstance(img_size, list):
        img_size = tuple(img_size)
    if m["method"] in ("rein", None):
        bb = build_backbone(m["backbone"], pretrained=_pretrained_value(m["pretrained"]),
                            img_size=img_size, patch_size=m["patch_size"],
                            out_indices=m["out_indices"], rein=m["rein"], **m["backbone_kwargs"])
    else:  # a baseline the paper compares with (no Rein queries: the head learns its own)
        from .peft import build_peft_backbone

        bb = build_peft_backbone(m["method"], m["backbone"], pretrained=_pretrained_value(m["pretrained"]),
                                 img_size=img_size, patch_size=m["patch_size"],
                                 out_indices=m["out_indices"], model_kwargs=m["backbone_kwargs"],
                                 **m["method_kwargs"])
    h = dict(m["head"])
    rein = getattr(bb, "rein", None)
    with_queries = rein is not None and getattr(rein, "link_to_queries", True)
    if with_queries:
        h["num_queries"] = rein.num_tokens
        query_dim = rein.query_dim
    else:
        query_dim = h["hidden_dim"]
    head = Mask2FormerHead(bb.embed_dim, query_source="rein" if with_queries else "learned",
                           query_dim=query_dim, **h)
    return Segmentor(bb, head)


def build_criterion(cfg: dict) -> Mask2FormerLoss:
    return Mask2FormerLoss(num_classes=cfg["model"]["head"]["num_classes"], **cfg["loss"])


# ----------------------------------------------------------------------------------------
# Optimiser and schedule
# ----------------------------------------------------------------------------------------
NO_DECAY_KEYS = ("norm", "query_embed", "level_embed", "learnable_tokens", "rein.scale",
                 "pos_embed", "cls_token", "reg_token")
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups (the release's custom keys:
    norms, query/level embeddings, Rein's tokens and scale get weight decay 0; so do a
    fully fine-tuned ViT's position embedding and cls/register tokens)."""
    norm_params = {id(p) for mod in model.modules() if isinstance(mod, _NORM_TYPES)
                   for p in mod.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_params or any(k in name for k in NO_DECAY_KEYS):
            no_decay.append(name)
        else:
            decay.append(name)
    params = dict(model.named_parameters())
    return [dict(params=[params[n] for n in decay], weight_decay=weight_decay, names=decay),
            dict(params=[params[n] for n in no_decay], weight_decay=0.0, names=no_decay)]


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.AdamW:
    o = cfg["optim"]
    groups = param_groups(model, o["weight_decay"])
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])


def poly_lr(base_lr: float, step: int, iters: int, power: float = 0.9) -> float:
    """lr at ``step`` (0-based): base * (1 - step / iters) ** power (mmseg PolyLR, eta_min 0)."""
    return base_lr * (1 - min(step, iters) / iters) ** power


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------
def save_checkpoint(out_dir: Path, model: Segmentor, optimizer, step: int, cfg: dict) -> Path:
    """Write ``checkpoint.safetensors`` (trainable weights, metadata: step, config) and
    ``optimizer.pt`` (optimiser state + step) atomically (temp file + rename)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    meta = {"format": FORMAT, "step": str(step), "config": json.dumps(cfg)}
    tmp_w, tmp_o = out_dir / (CKPT_NAME + ".tmp"), out_dir / (OPTIM_NAME + ".tmp")
    save_file(weights, str(tmp_w), metadata=meta)
    if optimizer is not None:
        torch.save({"step": step, "optimizer": optimizer.state_dict()}, tmp_o)
        os.replace(tmp_o, out_dir / OPTIM_NAME)
    os.replace(tmp_w, out_dir / CKPT_NAME)
    return out_dir / CKPT_NAME


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, metadata) of a reinlite training checkpoint (a file, or a run folder)."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({err})") from err
    return weights, meta


def load_trainable(model: Segmentor, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load trainable weights strictly: a checkpoint of another model is an error listing
    the missing and unexpected keys (and shape mismatches)."""
    from .checkpoint import CheckpointError

    expected = model.trainable_state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in sorted(set(expected) & set(weights))
                  if tuple(weights[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match this model (trainable weights):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:12])
                         + (" ..." if len(missing) > 12 else ""))
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:12])
                         + (" ..." if len(unexpected) > 12 else ""))
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:6]))
        raise CheckpointError("\n".join(lines))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(params[k].dtype))


def load_model(checkpoint: str | os.PathLike, cfg: Optional[dict] = None,
               overrides: Sequence[str] = ()) -> tuple[Segmentor, dict]:
    """Rebuild the model of a checkpoint (its config is in the metadata) and load it."""
    weights, meta = read_checkpoint(checkpoint)
    if cfg is None:
        if "config" not in meta:
            raise ValueError(f"{checkpoint}: no config in the checkpoint's metadata; pass --config")
        cfg = load_config(json.loads(meta["config"]), overrides)
    torch.manual_seed(cfg["seed"])  # a backbone built with pretrained=False is reproducible
    model = build_model(cfg)
    load_trainable(model, weights, str(checkpoint))
    return model.eval(), cfg


# ----------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------
def _dist_setup(device_pref: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


class NonFiniteLoss(RuntimeError):
    """Training stopped: the loss became NaN or infinite."""


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------
def train(cfg: dict, *, stop_at: Optional[int] = None,
          on_step: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train with ``cfg`` (from :func:`load_config`). Returns dict(checkpoint, step, losses,
    seconds, out_dir).

    stop_at: stop (after saving a checkpoint) once this many steps are done; the run can
        be resumed later (``train.resume=auto``).
    on_step: called as on_step(step, losses) after every optimiser step (tests use it to
        simulate a crash).
    """
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    rank, world, device = _dist_setup(cfg["device"])
    is_main = rank == 0
    out_dir = out_dir_of(cfg)
    o, t = cfg["optim"], cfg["train"]
    iters = int(o["iters"])
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg).to(device)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]

    start = 0
    resume = t["resume"]
    ckpt_path = None
    if resume and str(resume).lower() not in ("none", "false", "no"):
        ckpt_path = out_dir / CKPT_NAME if str(resume).lower() == "auto" else Path(resume)
        if ckpt_path.is_dir():
            ckpt_path = ckpt_path / CKPT_NAME
        if str(resume).lower() != "auto" and not ckpt_path.is_file():
            raise FileNotFoundError(f"train.resume: checkpoint not found: {ckpt_path}")
        if ckpt_path.is_file():
            weights, meta = read_checkpoint(ckpt_path)
            load_trainable(model, weights, str(ckpt_path))
            opt_path = ckpt_path.with_name(OPTIM_NAME)
            state = torch.load(opt_path, map_location="cpu", weights_only=True)
            if int(state["step"]) != int(meta.get("step", -1)):
                raise ValueError(f"{opt_path} (step {state['step']}) does not belong to "
                                 f"{ckpt_path} (step {meta.get('step')})")
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["step"])
            if is_main:
                print(f"resuming from {ckpt_path} at step {start}", file=sys.stderr)
        else:
            ckpt_path = None

    amp = cfg["amp"]
    amp_on = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if amp not in ("auto", "bf16", "none", None):
        raise ConfigError(f"amp must be auto, bf16 or none, got {amp!r}")

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    d = cfg["data"]
    base = build_dataset(cfg, d["source"], d["source_split"])
    augment = TrainAugment(d["crop_size"], d["scale_range"], d["cat_max_ratio"], d["flip"],
                           d["photometric"], d["train_resize"])
    sampler = StepBatchSampler(len(base), int(o["batch_size"]), iters, cfg["seed"], start, rank, world)
    loader = torch.utils.data.DataLoader(
        AugmentedDataset(base, augment), batch_sampler=sampler, collate_fn=_collate,
        num_workers=int(d["num_workers"]), generator=torch.Generator().manual_seed(cfg["seed"]),
        persistent_workers=False)

    log_file = None
    writer = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
        log_file = open(out_dir / "log.jsonl", "a")
        if t["tensorboard"]:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(out_dir / "tb"))
            except Exception:  # tensorboard not installed
                writer = None
    bar = None
    if is_main and t["progress"] and start < iters:
        from tqdm import tqdm
        bar = tqdm(total=iters, initial=start, desc=f"train {cfg['name']}", dynamic_ncols=True)

    model.train()
    t0 = time.perf_counter()
    last_good = (ckpt_path, start) if ckpt_path else (None, None)
    history = []
    step = start
    try:
        for images, labels in loader:
            torch.manual_seed(_mix(cfg["seed"], "step", step, rank))
            images = normalize(images.to(device, non_blocking=True))
            labels = labels.to(device, non_blocking=True)
            lr = poly_lr(o["lr"], step, iters, o["poly_power"])
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_on):
                outputs = net(images)
            losses = criterion(outputs, labels)
            loss = losses["loss"]
            bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=device)
            if world > 1:
                dist.all_reduce(bad)
            if bad.item() > 0:
                where = (f"the last good checkpoint is {last_good[0]} (step {last_good[1]})"
                         if last_good[0] else "no checkpoint was written yet")
                raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at step {step}: training "
                                    f"stopped; {where}. Try a lower optim.lr, optim.grad_clip or amp=none.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o["grad_clip"]:
                gnorm = torch.nn.utils.clip_grad_norm_(trainable, float(o["grad_clip"]))
            else:
                gnorm = torch.nn.utils.clip_grad_norm_(trainable, float("inf"))
            optimizer.step()
            step += 1
            record = {k: float(losses[k].detach()) for k in ("loss", "loss_cls", "loss_mask", "loss_dice")}
            history.append(record["loss"])
            if on_step is not None:
                on_step(step, record)
            if is_main:
                if step % int(t["log_every"]) == 0 or step == iters or step == start + 1:
                    entry = dict(step=step, lr=lr, grad_norm=float(gnorm), **record,
                                 seconds=round(time.perf_counter() - t0, 2))
                    log_file.write(json.dumps(entry) + "\n")
                    log_file.flush()
                    if writer is not None:
                        for k, v in entry.items():
                            writer.add_scalar(f"train/{k}", v, step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
            done = step == iters or (stop_at is not None and step >= stop_at)
            if step % int(t["ckpt_every"]) == 0 or done:
                if is_main:
                    last_good = (save_checkpoint(out_dir, model, optimizer, step, cfg), step)
                if world > 1:
                    dist.barrier()
            if done:
                break
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()
        if writer is not None:
            writer.close()
    if world > 1:
        # every rank must hold the same weights (DDP keeps them in sync)
        flat = torch.cat([p.detach().float().flatten() for p in trainable])
        sums = [torch.zeros(2, device=device) for _ in range(world)]
        dist.all_gather(sums, torch.stack([flat.sum(), (flat * flat).sum()]))
        if not all(torch.equal(sums[0], s) for s in sums):
            raise RuntimeError("DDP ranks ended with different weights")
    seconds = time.perf_counter() - t0
    if is_main and step > start:
        print(f"trained {cfg['name']}: steps {start}->{step} in {seconds:.1f} s; "
              f"checkpoint {out_dir / CKPT_NAME}", file=sys.stderr)
    elif is_main:
        print(f"{cfg['name']}: already trained to step {step} ({out_dir / CKPT_NAME}); "
              f"nothing to do (train.resume=none or another out_dir starts afresh)", file=sys.stderr)
    return dict(checkpoint=out_dir / CKPT_NAME, step=step, losses=history, seconds=seconds,
                out_dir=out_dir, rank=rank, world=world)


def run_train_cli(args) -> int:
    """`reinlite train --config NAME_OR_PATH [key=value ...]`."""
    cfg = load_config(args.config, args.overrides)
    try:
        result = train(cfg, stop_at=getattr(args, "stop_at", None))
    except NonFiniteLoss as err:
        print(f"reinlite train: error: {err}", file=sys.stderr)
        return 3
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0 if result["step"] > 0 else 1
