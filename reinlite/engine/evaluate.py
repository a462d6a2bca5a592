"""Evaluation: slide-window inference, confusion matrices, per-class IoU, per-domain mIoU.

    reinlite eval --checkpoint runs/course [--domains cityscapes bdd100k] [key=value ...]
    reinlite predict street.png --checkpoint runs/course [--out DIR]
    labels = predict_image(model, cfg, image)     # PIL / numpy [H, W, 3] / tensor -> [H, W]

IoU of class k from the confusion matrix M (rows: true class, columns: predicted):
    IoU_k = M[k, k] / (sum_j M[k, j] + sum_i M[i, k] - M[k, k])
mIoU = the mean over classes whose union is not empty (mmseg's nanmean: a class absent from
both the labels and the predictions of a domain does not count), reported in percent.

Slide-window inference (the release: resize to 1024 x 512, crop 512, stride 341): windows
of ``crop`` placed every ``stride`` (the last one flush with the border), per-window class
scores summed and divided by the number of windows covering each pixel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from reinlite.config import Config, ConfigError, EvalConfig, load_config
from reinlite.errors import InputError
from reinlite.data.pipeline import build_dataset, load_sample
from reinlite.data.transforms import normalize
from reinlite.engine.device import amp_enabled, pick_device
from reinlite.engine.checkpoint import load_trainable, read_run_checkpoint
from reinlite.models.segmentor import Segmentor, build_model
from reinlite.weights import CheckpointError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------
# Metric
# ----------------------------------------------------------------------------------------
def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """[K, K] int64 counts, M[t, p] = number of pixels of true class t predicted as p
    (pixels labelled ``ignore_index`` or outside 0..K-1 are skipped)."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).cpu()


def iou_from_confusion(cm) -> np.ndarray:
    """Per-class IoU in [0, 1] from a confusion matrix; NaN where the union is empty."""
    cm = np.asarray(cm, dtype=np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(cm) -> float:
    """mIoU in percent (nanmean over classes)."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan")


# ----------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------
def _patch_multiple(model) -> int:
    bb = getattr(model, "backbone", None)
    return int(getattr(bb, "patch_size", 1) or 1)


def _padded_predict(model: Segmentor, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Scores [B, K, h, w] of x [B, 3, h, w]; pads to a multiple of ``multiple`` first."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return model.predict(x)[..., :h, :w].float()


@torch.inference_mode()
def slide_inference(model: Segmentor, image: torch.Tensor, crop: Sequence[int],
                    stride: Sequence[int], num_classes: int, multiple: Optional[int] = None) -> torch.Tensor:
    """Class scores [B, K, H, W] of a normalised image [B, 3, H, W] by sliding windows.

    Rows of windows: ceil((H - crop_h) / stride_h) + 1 (at least 1), the last window flush
    with the bottom edge; likewise for columns. A window larger than the image is the image.
    """
    b, _, h, w = image.shape
    ch, cw = min(int(crop[0]), h), min(int(crop[1]), w)
    sh, sw = int(stride[0]), int(stride[1])
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    multiple = multiple or _patch_multiple(model)
    scores = image.new_zeros((b, num_classes, h, w), dtype=torch.float32)
    count = image.new_zeros((1, 1, h, w), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * sh, h - ch)
            x1 = min(c * sw, w - cw)
            win = image[:, :, y1:y1 + ch, x1:x1 + cw]
            scores[:, :, y1:y1 + ch, x1:x1 + cw] += _padded_predict(model, win, multiple)
            count[:, :, y1:y1 + ch, x1:x1 + cw] += 1
    return scores / count


@torch.inference_mode()
def infer(model: Segmentor, image_uint8: torch.Tensor, mode: str = "whole", crop=(512, 512),
          stride=(341, 341), resize: Optional[Sequence[int]] = None, num_classes: int = 19,
          amp: bool = False) -> torch.Tensor:
    """Predicted train ids [H, W] of a uint8 image [3, H, W] at its own size (or [B, H, W]
    for a batch [B, 3, H, W] of same-sized images).

    ``resize`` (H', W'): run the model at that size and resize the scores back (bilinear).
    """
    device = next(model.parameters()).device
    single = image_uint8.ndim == 3
    x = normalize(image_uint8.to(device))
    if single:
        x = x[None]
    h, w = x.shape[-2:]
    if resize is not None and tuple(resize) != (h, w):
        x = F.interpolate(x, size=tuple(int(v) for v in resize), mode="bilinear", align_corners=False)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        if mode == "slide":
            scores = slide_inference(model, x, crop, stride, num_classes)
        elif mode == "whole":
            scores = _padded_predict(model, x, _patch_multiple(model))
        else:
            raise ValueError(f"eval.mode must be 'slide' or 'whole', got {mode!r}")
    if scores.shape[-2:] != (h, w):
        scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
    pred = scores.argmax(1)
    return pred[0] if single else pred


def keep_ratio_size(h: int, w: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmseg's ``Resize(scale, keep_ratio=True)``: the size (h', w') of an h x w image scaled
    by one factor so that its long side fits max(scale) and its short side min(scale)
    (Mapillary at 1024 x 512: a 4:3 image becomes 512 x 683)."""
    long_cap, short_cap = max(scale), min(scale)
    f = min(long_cap / max(h, w), short_cap / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def domain_resize(e: EvalConfig, domain: str, image_hw: Sequence[int]):
    """The size to run the model at for an image of ``domain`` (None: its own size)."""
    r = e.resize
    if isinstance(r, dict):
        r = r.get(domain)
    if r is None:
        return None
    if e.keep_ratio:
        return keep_ratio_size(int(image_hw[0]), int(image_hw[1]), r)
    return tuple(int(v) for v in r)


@torch.inference_mode()
def evaluate_dataset(model: Segmentor, dataset, cfg: Config, domain: str = "",
                     progress: bool = True) -> torch.Tensor:
    """Confusion matrix [K, K] of the model on a dataset (items via pipeline.load_sample)."""
    e = cfg.eval
    k = cfg.model.head.num_classes
    device = next(model.parameters()).device
    amp = amp_enabled(cfg.amp, device)
    n = len(dataset) if e.max_images is None else min(len(dataset), int(e.max_images))
    cm = torch.zeros(k, k, dtype=torch.long)
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"eval {domain}", dynamic_ncols=True, leave=False)
    model.eval()
    bs = max(1, int(e.batch_size or 1))
    batch: list = []

    def flush():
        nonlocal cm
        if not batch:
            return
        same = len({tuple(im.shape) for im, _ in batch}) == 1
        if same and len(batch) > 1:
            resize = domain_resize(e, domain, batch[0][0].shape[-2:])
            preds = infer(model, torch.stack([im for im, _ in batch]), e.mode, e.crop,
                          e.stride, resize, k, amp)
        else:
            preds = [infer(model, im, e.mode, e.crop, e.stride,
                           domain_resize(e, domain, im.shape[-2:]), k, amp) for im, _ in batch]
        for pred, (_, label) in zip(preds, batch):
            cm += confusion_matrix(pred.cpu(), label, k)
        batch.clear()

    for i in it:
        batch.append(load_sample(dataset, i))
        if len(batch) == bs:
            flush()
    flush()
    return cm


def evaluate(model: Segmentor, cfg: Config, domains: Optional[Sequence[str]] = None,
             out_dir: Optional[str | Path] = None, progress: bool = True) -> dict:
    """Evaluate on each domain; returns {"domains": {d: {"miou", "iou", "images"}},
    "mean": mean mIoU of the target domains, "table": markdown}. With ``out_dir``, writes
    metrics.json, results.md, confusion.png and miou.png there. Classes are the run's
    ``data.classes``; a dataset that names other classes is refused (naming both lists)."""
    from reinlite.data.classes import CLASSES
    from reinlite.data.kinds import check_same_classes

    d = cfg.data
    names = list(d.classes or CLASSES)
    domains = list(domains) if domains else list(d.targets)
    results, cms = {}, {}
    t0 = time.perf_counter()
    for dom in domains:
        ds = build_dataset(cfg, dom, d.target_split)
        check_same_classes(getattr(ds, "label_names", None), names, f"domain {dom!r}")
        cm = evaluate_dataset(model, ds, cfg, dom, progress)
        cms[dom] = cm.numpy()
        iou = iou_from_confusion(cms[dom])
        n = len(ds) if cfg.eval.max_images is None else min(len(ds), cfg.eval.max_images)
        results[dom] = dict(miou=mean_iou(cms[dom]), images=n,
                            iou={c: (None if np.isnan(v) else round(float(v) * 100, 2))
                                 for c, v in zip(names, iou)})
    targets = [x for x in domains if x != d.source]
    mean = float(np.mean([results[x]["miou"] for x in targets])) if targets else float("nan")
    out = dict(domains=results, mean=mean, targets=targets, seconds=time.perf_counter() - t0)
    out["table"] = format_table(out)
    if out_dir is not None:
        from reinlite.viz import confusion_figure, miou_bar_figure

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(
            {k: v for k, v in out.items() if k != "table"}, indent=1) + "\n")
        (out_dir / "results.md").write_text(out["table"] + "\n")
        confusion_figure(cms, names, out_dir / "confusion.png",
                         mious={k: v["miou"] for k, v in results.items()})
        bars = {k: v["miou"] for k, v in results.items()}
        if targets:
            bars["mean (targets)"] = mean
        miou_bar_figure(bars, out_dir / "miou.png")
        out["files"] = [str(out_dir / f) for f in ("metrics.json", "results.md", "confusion.png", "miou.png")]
    return out


def format_table(res: dict) -> str:
    """Markdown: a row of per-domain mIoU (+ the target mean), then per-class IoU."""
    doms = list(res["domains"])
    head = "| | " + " | ".join(doms) + (" | mean (targets) |" if res.get("targets") else " |")
    sep = "|---|" + "---:|" * (len(doms) + (1 if res.get("targets") else 0))
    row = "| mIoU | " + " | ".join(f"{res['domains'][x]['miou']:.1f}" for x in doms)
    row += f" | {res['mean']:.1f} |" if res.get("targets") else " |"
    lines = [head, sep, row]
    classes = list(next(iter(res["domains"].values()))["iou"]) if doms else []
    for c in classes:
        vals = [res["domains"][x]["iou"][c] for x in doms]
        cells = ["-" if v is None else f"{v:.1f}" for v in vals]
        lines.append(f"| {c} | " + " | ".join(cells) + (" | |" if res.get("targets") else " |"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def _model_from_args(args):
    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"checkpoint not found: {args.checkpoint}")
    overrides = getattr(args, "overrides", ()) or ()
    cfg = load_config(args.config, overrides) if getattr(args, "config", None) else None
    model, cfg = load_run(args.checkpoint, cfg, () if cfg else overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    return model.to(pick_device(cfg.device)), cfg


def run_eval_cli(args) -> int:
    """`reinlite eval --checkpoint CKPT [--domains ...] [--out DIR] [key=value ...]`."""
    model, cfg = _model_from_args(args)
    ckpt = Path(args.checkpoint)
    out_dir = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / "eval"
    res = evaluate(model, cfg, args.domains, out_dir)
    print(res["table"])
    print(f"\nmean mIoU over {', '.join(res['targets'])}: {res['mean']:.1f}  "
          f"({res['seconds']:.0f} s); figures and metrics in {out_dir}")
    return 0


def to_uint8_image(image) -> torch.Tensor:
    """An image as uint8 [3, H, W] (or [B, 3, H, W]): a file path, a PIL image, a numpy array
    [H, W, 3] / [H, W] (uint8, or floats in [0, 1]) or a tensor [3, H, W] / [B, 3, H, W] / [H, W, 3]."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        if not Path(image).is_file():
            raise FileNotFoundError(f"image not found: {image}")
        try:
            with Image.open(image) as im:
                image = im.convert("RGB")
        except Exception as err:
            raise ValueError(f"{image}: not an image PIL can read ({err})") from err
    if hasattr(image, "convert"):  # PIL
        image = image.convert("RGB")
    x = torch.from_numpy(np.array(image)) if not isinstance(image, torch.Tensor) else image
    if x.ndim == 2:
        x = x[None].expand(3, -1, -1)
    if x.ndim == 3 and x.shape[0] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        x = x.permute(2, 0, 1)
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3, 4):
        raise ValueError(f"expected an image [H, W, 3] (numpy / PIL) or [3, H, W] (tensor), got "
                         f"shape {tuple(x.shape)}")
    if x.shape[-3] == 4:   # RGBA: drop alpha
        x = x[..., :3, :, :]
    elif x.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if x.is_floating_point():
        x = (x * 255.0).round().clamp(0, 255)
    return x.to(torch.uint8).contiguous()


def predict_image(model: Segmentor, cfg: Config, image, domain: str = "") -> torch.Tensor:
    """Class ids [H, W] (long, on the CPU) of one image at its own size (or [B, H, W] for a
    batch), by the run's eval config: ``eval.mode`` slide or whole, ``eval.resize``. An image
    size the patch size does not divide is padded (zeros after normalisation, cropped off
    after), never an error."""
    e = cfg.eval
    x = to_uint8_image(image)
    device = next(model.parameters()).device
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    resize = domain_resize(e, domain, x.shape[-2:]) if (domain or not isinstance(e.resize, dict)) else None
    return infer(model, x, e.mode, e.crop, e.stride, resize, cfg.model.head.num_classes, amp).cpu()


def predict_files(model: Segmentor, cfg: Config, paths: Sequence[str | Path],
                  out: Optional[str | Path] = None, alpha: float = 0.5) -> list[Path]:
    """Write ``<stem>_pred.png`` (overlay in the run's class colours) for each image, next to
    it or in ``out``."""
    from PIL import Image

    from reinlite.viz import overlay

    written = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
        try:
            img = np.array(Image.open(p).convert("RGB"))
        except Exception as err:
            raise InputError(f"{p}: not an image PIL can read ({err})") from err
        pred = predict_image(model, cfg, img)
        target = (Path(out) if out else p.parent) / f"{p.stem}_pred.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(img, pred.numpy(), alpha, classes=cfg.data.classes)).save(target)
        written.append(target)
    return written


def run_predict_cli(args) -> int:
    """`reinlite predict IMAGE ... --checkpoint CKPT [--out DIR] [--alpha A]`."""
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image not found: {', '.join(missing)}")
    model, cfg = _model_from_args(args)
    for path in predict_files(model, cfg, args.images, args.out, args.alpha):
        print(path)
    return 0


# ----------------------------------------------------------------------------------------
# A trained run, rebuilt from its checkpoint
# ----------------------------------------------------------------------------------------
def load_run(checkpoint: str | os.PathLike, cfg: Optional[Config] = None,
             overrides: Sequence[str] = ()) -> tuple[Segmentor, Config]:
    """Rebuild the model of a run's checkpoint (file or run folder) from the config stored in
    it (or ``cfg``), load the trained weights strictly, and return (model in eval mode, cfg).

    The checkpoint's classes (its stored ``data.classes``) must be the config's: evaluating a
    model on other classes is refused, naming both lists."""
    weights, meta = read_run_checkpoint(checkpoint)
    stored = load_config(json.loads(meta["config"])) if "config" in meta else None
    if cfg is None:
        if stored is None:
            raise CheckpointError(f"{checkpoint}: no config in the checkpoint's metadata; pass a config")
        cfg = load_config(stored, overrides)
    elif overrides:
        cfg = load_config(cfg, overrides)
    if stored is not None and list(stored.data.classes) != list(cfg.data.classes):
        raise ConfigError(f"{checkpoint} was trained on the classes [{', '.join(stored.data.classes)}] "
                          f"but the config names [{', '.join(cfg.data.classes)}]; a model trained on "
                          "some classes cannot be evaluated on others")
    torch.manual_seed(cfg.seed)  # a backbone built with pretrained=False is reproducible
    model = build_model(cfg.model)
    load_trainable(model, weights, str(checkpoint))
    return model.eval(), cfg


class Predictor:
    """A trained run ready for scripts (:func:`load_model`).

    predict(image) -> class ids at the image's size: a PIL image or numpy [H, W, 3] gives a
    numpy int64 [H, W]; a tensor [3, H, W] / [B, 3, H, W] gives a long tensor [H, W] /
    [B, H, W]. Inference follows the run's stored eval config (slide or whole, resize);
    sizes the patch size does not divide are padded.
    overlay(image, labels=None, alpha=0.5) -> uint8 [H, W, 3] in the run's class colours.
    ``classes``: the class names (label id i is ``classes[i]``); ``model`` the Segmentor;
    ``cfg`` the run's config. ``model, cfg = predictor`` unpacks as the older API did.
    """

    def __init__(self, model: Segmentor, cfg: Config):
        self.model, self.cfg = model.eval(), cfg
        self.classes: tuple = tuple(cfg.data.classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "Predictor":
        self.model.to(device)
        return self

    def predict(self, image):
        labels = predict_image(self.model, self.cfg, image)
        return labels if isinstance(image, torch.Tensor) else labels.numpy()

    def overlay(self, image, labels=None, alpha: float = 0.5):
        from reinlite.viz import overlay

        labels = self.predict(image) if labels is None else labels
        rgb = to_uint8_image(image).permute(1, 2, 0).numpy()
        return overlay(rgb, labels, alpha, classes=self.classes)

    def __iter__(self):  # model, cfg = load_model(run): the (Segmentor, Config) of earlier versions
        return iter((self.model, self.cfg))

    def __repr__(self):
        return (f"Predictor({self.cfg.model.backbone} + {self.cfg.model.method}, "
                f"{len(self.classes)} classes: {', '.join(self.classes[:5])}"
                f"{', ...' if len(self.classes) > 5 else ''})")


def load_model(run: str | os.PathLike, device: Optional[str] = None) -> Predictor:
    """A trained run (its folder or checkpoint file) as a :class:`Predictor`:
    ``reinlite.load_model("runs/mine").predict(image)``. The checkpoint alone rebuilds it
    (its config, with the class names, is stored in it). ``device``: default cuda if
    available and the run allows it, else cpu."""
    from pathlib import Path

    if not Path(run).exists():
        raise FileNotFoundError(f"checkpoint not found: {run}")
    model, cfg = load_run(run)
    if device is None:
        device = "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu"
    return Predictor(model.to(device), cfg)
