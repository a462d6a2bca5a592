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


# TEMPORARY (lead): the training pipeline moved from train.py; replaced by the one pipeline.
import torch.nn.functional as F  # noqa: E402


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] (or [3, H, W]) -> float, ImageNet-normalised."""
    x = images_uint8.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(-1, 1, 1)
    return (x - mean) / std


def _to_chw_uint8_t(image) -> torch.Tensor:
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
        image = _to_chw_uint8_t(image)
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
        img = img.round().clamp(0, 255).to(torch.uint8)
        return normalize(img), lab.contiguous()

    @classmethod
    def from_config(cls, d) -> "TrainAugment":
        """From ``cfg.data`` (TEMPORARY: the old pipeline, until the one pipeline lands)."""
        return cls(d.crop_size, d.scale_range, d.cat_max_ratio, d.flip, d.photometric, d.train_resize)


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


