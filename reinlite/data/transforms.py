"""Training / evaluation transforms following the Rein release's recipe, sized by crop.

Release recipe (512 crops): resize the short side to a random choice of 256..1024 (0.5..2.0 x
the crop, in steps of 0.1, long side at most 4 x crop), random crop with a category max ratio
of 0.75, horizontal flip (p = 0.5), photometric distortion, ImageNet normalisation, padding
to the crop (image 0, labels 255). ``train_transforms(crop_size=(64, 128))`` is the same
recipe for CPU-sized crops.

Each transform maps ``(image uint8 [H, W, 3], mask uint8 [H, W])`` to the same; the last one,
``ToTensorNormalize``, returns ``(float32 [3, H, W] normalised, int64 [H, W])``. Randomness
comes from torch's global generator (seed it with ``torch.manual_seed``; DataLoader workers are
seeded by PyTorch).
"""
from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .classes import IGNORE_INDEX

__all__ = ["Compose", "RandomShortSideResize", "Resize", "RandomCrop", "RandomFlip",
           "PhotoMetricDistortion", "ToTensorNormalize", "Pad", "train_transforms",
           "eval_transforms", "IMAGENET_MEAN", "IMAGENET_STD", "denormalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _rand() -> float:
    return float(torch.rand(()))


def _uniform(lo, hi) -> float:
    return lo + (hi - lo) * _rand()


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img, mask):
        for t in self.transforms:
            img, mask = t(img, mask)
        return img, mask

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def _resize(img, mask, h, w):
    img = np.array(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    if mask is not None:
        mask = np.array(Image.fromarray(mask).resize((w, h), Image.NEAREST))
    return img, mask


class RandomShortSideResize:
    """Resize so the short side is a random choice of ``sizes`` (long side capped at ``max_long``)."""

    def __init__(self, sizes, max_long=None):
        self.sizes, self.max_long = [int(s) for s in sizes], max_long

    def __call__(self, img, mask):
        s = self.sizes[int(torch.randint(len(self.sizes), ()))]
        h, w = img.shape[:2]
        scale = s / min(h, w)
        if self.max_long is not None:
            scale = min(scale, self.max_long / max(h, w))
        return _resize(img, mask, max(int(round(h * scale)), 1), max(int(round(w * scale)), 1))

    def __repr__(self):
        return f"RandomShortSideResize({self.sizes[0]}..{self.sizes[-1]}, max_long={self.max_long})"


class Resize:
    """Resize to (H, W) exactly (image bilinear, mask nearest unless ``resize_mask=False``)."""

    def __init__(self, size, resize_mask=True):
        self.size, self.resize_mask = (int(size[0]), int(size[1])), resize_mask

    def __call__(self, img, mask):
        out, m = _resize(img, mask if self.resize_mask else None, *self.size)
        return out, (m if self.resize_mask else mask)


class RandomCrop:
    """Random ``crop_size`` (H, W) crop; retried up to 10 times until no class covers more than
    ``cat_max_ratio`` of the crop's labelled pixels (ignore excluded), as in mmseg."""

    def __init__(self, crop_size, cat_max_ratio=0.75, ignore_index=IGNORE_INDEX):
        self.crop_size, self.cat_max_ratio, self.ignore_index = tuple(crop_size), cat_max_ratio, ignore_index

    def _box(self, h, w):
        ch, cw = self.crop_size
        y = int(torch.randint(max(h - ch, 0) + 1, ()))
        x = int(torch.randint(max(w - cw, 0) + 1, ()))
        return y, y + min(ch, h), x, x + min(cw, w)

    def __call__(self, img, mask):
        h, w = mask.shape
        box = self._box(h, w)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                crop = mask[box[0]:box[1], box[2]:box[3]]
                cnt = np.bincount(crop.ravel(), minlength=256)
                cnt[self.ignore_index] = 0
                cnt = cnt[cnt > 0]
                if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                    break
                box = self._box(h, w)
        y0, y1, x0, x1 = box
        return img[y0:y1, x0:x1], mask[y0:y1, x0:x1]


class RandomFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, mask):
        if _rand() < self.p:
            return img[:, ::-1], mask[:, ::-1]
        return img, mask


class PhotoMetricDistortion:
    """mmseg's photometric distortion, each step with probability 1/2: brightness
    (+-``brightness_delta`` on 0..255), contrast (x [lo, hi]) before or after, saturation
    (x [lo, hi]), hue (+-``hue_delta`` of 180 degrees as in OpenCV's H channel)."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18):
        self.bd, self.cr, self.sr, self.hd = brightness_delta, contrast_range, saturation_range, hue_delta

    def __call__(self, img, mask):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()  # [3, H, W] 0..255
        if _rand() < 0.5:
            x = (x + _uniform(-self.bd, self.bd)).clamp_(0, 255)
        contrast_first = _rand() < 0.5
        if contrast_first and _rand() < 0.5:
            x = (x * _uniform(*self.cr)).clamp_(0, 255)
        if _rand() < 0.5:
            x = TF.adjust_saturation(x / 255, _uniform(*self.sr)) * 255
        if _rand() < 0.5:
            x = TF.adjust_hue(x / 255, _uniform(-self.hd, self.hd) / 180.0) * 255
        if not contrast_first and _rand() < 0.5:
            x = (x * _uniform(*self.cr)).clamp_(0, 255)
        return x.round_().clamp_(0, 255).byte().permute(1, 2, 0).numpy(), mask


class Pad:
    """Pad bottom / right to at least ``size`` (H, W): image with 0, mask with 255."""

    def __init__(self, size, ignore_index=IGNORE_INDEX):
        self.size, self.ignore_index = tuple(size), ignore_index

    def __call__(self, img, mask):
        h, w = mask.shape
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
            mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=self.ignore_index)
        return img, mask


class ToTensorNormalize:
    """uint8 [H, W, 3], uint8 [H, W] -> float32 [3, H, W] (ImageNet-normalised), int64 [H, W]."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, img, mask):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
        x = (x - self.mean) / self.std
        return x, torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))


def denormalize(x, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Normalised float [..., 3, H, W] -> float in [0, 1] (for display)."""
    m = torch.tensor(mean, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, device=x.device).view(3, 1, 1)
    return (x * s + m).clamp(0, 1)


def train_transforms(crop_size=(512, 512), ratio_range=(0.5, 2.0), cat_max_ratio=0.75,
                     photometric=True, flip=0.5):
    """The release's training pipeline for ``crop_size`` (H, W).

    Short side sizes: ``min(crop) * r`` for r in ratio_range in steps of 0.1 (256..1024 for
    crop 512), long side capped at 4 x max(crop).
    """
    c = min(crop_size)
    steps = np.arange(round(ratio_range[0] * 10), round(ratio_range[1] * 10) + 1)
    sizes = [int(c * x * 0.1) for x in steps]
    ts = [RandomShortSideResize(sizes, max_long=4 * max(crop_size)),
          RandomCrop(crop_size, cat_max_ratio), RandomFlip(flip)]
    if photometric:
        ts.append(PhotoMetricDistortion())
    ts += [Pad(crop_size), ToTensorNormalize()]
    return Compose(ts)


def eval_transforms(size=None, resize_mask=False):
    """Evaluation: optional resize of the image to ``size`` (H, W) (the mask too when
    ``resize_mask``), then normalisation. The release evaluates at 512 x 1024 (BDD 720 x 1280)
    and compares with the labels at full resolution."""
    ts = [] if size is None else [Resize(size, resize_mask=resize_mask)]
    return Compose(ts + [ToTensorNormalize()])
