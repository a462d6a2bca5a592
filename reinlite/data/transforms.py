"""The one training augmentation: the Rein release's (mmsegmentation's) pipeline, seeded per sample.

The release trains with (mmseg names in brackets)::

    resize the short side to a random choice of 256, 307, ..., 1024, long side <= 2048
                                                     [RandomChoiceResize + ResizeShortestEdge]
    random 512 x 512 crop, re-drawn while one class covers >= 75 % of it  [RandomCrop]
    horizontal flip, p = 1/2                                              [RandomFlip]
    photometric distortion                                                [PhotoMetricDistortion]
    ImageNet normalisation, then padding to the crop: image 0, label 255  [SegDataPreProcessor]

``TrainAugment`` is that pipeline, parameterised by the ``cfg.data`` fields; the course config
replaces the short-side choice by a fixed resize and a continuous scale factor (``train_resize``
+ ``scale_range``). Every random number comes from the ``torch.Generator`` passed with each
sample, so the output is a pure function of (image, label, the generator's seed): the trainer
seeds one generator per sample and step, which is what makes exact resume work.

Resize, crop, flip and pad are ``torchvision.transforms.v2.functional`` on ``tv_tensors.Image`` /
``tv_tensors.Mask`` (bilinear without antialiasing for the image, as OpenCV's ``INTER_LINEAR``
in mmcv; nearest for the label). The crop's re-draw rule and the photometric distortion are
our own, because torchvision's semantics differ from mmseg's (see ``PhotoMetricDistortion``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode

from reinlite.data.classes import IGNORE_INDEX

__all__ = ["TrainAugment", "PhotoMetricDistortion", "PhotometricParams", "normalize",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN: tuple = tuple(IMAGENET_DEFAULT_MEAN)   # (0.485, 0.456, 0.406), from timm
IMAGENET_STD: tuple = tuple(IMAGENET_DEFAULT_STD)     # (0.229, 0.224, 0.225)

_CONFIG_FIELDS = ("crop_size", "train_resize", "scale_range", "short_sides", "max_long_side",
                  "cat_max_ratio", "flip", "photometric")


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] or [3, H, W] (0..255) -> float32 of the same shape, ImageNet-normalised:
    (x / 255 - IMAGENET_MEAN) / IMAGENET_STD per channel. Works on any device."""
    x = torch.as_tensor(images_uint8)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"normalize expects uint8 [B, 3, H, W] or [3, H, W], got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {x.dtype}; "
                        "for floats in [0, 1] multiply by 255 and round first")
    x = TF.to_dtype(x.as_subclass(torch.Tensor), torch.float32, scale=True)
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


# ----------------------------------------------------------------------------- random numbers
def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return torch.rand((), generator=g, dtype=torch.float64).item() < p


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi) (high exclusive, as numpy's ``randint``)."""
    return int(torch.randint(lo, hi, (), generator=g))


# ----------------------------------------------------------------------------- photometric
@dataclass(frozen=True)
class PhotometricParams:
    """One draw of ``PhotoMetricDistortion``; None = that step is skipped.

    brightness: additive delta on 0..255; contrast_first: contrast before (True) or after
    (False) saturation and hue; contrast / saturation: factors; hue: delta in OpenCV hue
    units (1 unit = 2 degrees, 180 units = a full turn).
    """
    brightness: Optional[float]
    contrast_first: bool
    contrast: Optional[float]
    saturation: Optional[float]
    hue: Optional[int]

    @property
    def hue_degrees(self) -> Optional[float]:
        return None if self.hue is None else 2.0 * self.hue


class PhotoMetricDistortion:
    """mmseg's ``PhotoMetricDistortion`` on uint8 RGB [3, H, W], randomness from a generator.

    Steps, each applied with probability 1/2 (mmseg's order):

    1. brightness: x + delta, delta ~ uniform(-32, 32), clipped to 0..255
    2. if contrast_first (p 1/2): contrast, x * alpha, alpha ~ uniform(0.5, 1.5), clipped
    3. saturation in HSV: S * alpha, alpha ~ uniform(0.5, 1.5), S clipped to [0, 1]
    4. hue in HSV: H + delta (mod a full turn), delta an integer in [-18, 18) OpenCV units,
       i.e. -36..+34 degrees in steps of 2 (numpy's ``randint(-18, 18)`` excludes 18)
    5. if not contrast_first: contrast as in 2

    Like mmseg, the image is uint8 again after every step: brightness and contrast truncate
    (``astype(uint8)``), the HSV steps round (OpenCV's conversion back to uint8).

    Where torchvision's semantics differ from OpenCV's / mmseg's (so we do not use them):
    ``adjust_brightness`` multiplies (mmseg adds a delta); ``adjust_contrast`` blends with the
    mean grey (mmseg multiplies, no blend); ``adjust_saturation`` blends with the luma grey
    (PIL's ImageEnhance.Color), whereas OpenCV scales the HSV S channel, which keeps hue and
    value (the max channel): each channel moves away from / towards the max channel,
    c' = V - (V - c) * min(alpha, 1 / S). ``adjust_hue`` is the same HSV rotation as OpenCV's
    and is used, with factor = delta / 180; OpenCV's uint8 HSV quantises H to 2-degree bins
    and S, V to 1/255 inside the step, torchvision works in float (results differ by at most
    a few grey levels).
    """

    def __init__(self, brightness_delta: float = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)
        if not 0 <= self.hue_delta <= 90:
            raise ValueError(f"hue_delta is in OpenCV units (180 = a full turn): expected 0..90, "
                             f"got {hue_delta}")

    def sample(self, g: torch.Generator) -> PhotometricParams:
        """Draw the parameters (in mmseg's order: brightness, mode, contrast?, saturation,
        hue, contrast?)."""
        brightness = _uniform(g, -self.brightness_delta, self.brightness_delta) if _coin(g) else None
        contrast_first = _coin(g)
        contrast = None
        if contrast_first and _coin(g):
            contrast = _uniform(g, *self.contrast_range)
        saturation = _uniform(g, *self.saturation_range) if _coin(g) else None
        hue = _randint(g, -self.hue_delta, self.hue_delta) if _coin(g) and self.hue_delta else None
        if not contrast_first and _coin(g):
            contrast = _uniform(g, *self.contrast_range)
        return PhotometricParams(brightness, contrast_first, contrast, saturation, hue)

    def apply(self, image: torch.Tensor, p: PhotometricParams) -> torch.Tensor:
        """uint8 [3, H, W] RGB -> uint8 [3, H, W] with the drawn parameters ``p``."""
        x = image.as_subclass(torch.Tensor)
        if p.brightness is not None:
            x = _affine_uint8(x, beta=p.brightness)
        if p.contrast_first and p.contrast is not None:
            x = _affine_uint8(x, alpha=p.contrast)
        if p.saturation is not None:
            x = hsv_saturation(x, p.saturation)
        if p.hue is not None:
            x = hsv_hue(x, p.hue)
        if not p.contrast_first and p.contrast is not None:
            x = _affine_uint8(x, alpha=p.contrast)
        return x

    def __call__(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply(image, self.sample(g))

    def __repr__(self):
        return (f"PhotoMetricDistortion(brightness_delta={self.brightness_delta:g}, "
                f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta})")


def _affine_uint8(x: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """mmseg's ``convert``: x * alpha + beta, clipped to 0..255, truncated to uint8."""
    return (x.float() * alpha + beta).clamp_(0, 255).to(torch.uint8)


def hsv_saturation(image: torch.Tensor, alpha: float) -> torch.Tensor:
    """Scale the HSV saturation of uint8 RGB [..., 3, H, W] by ``alpha`` (S clipped to 1),
    keeping hue and value: c' = V - (V - c) * min(alpha, V / (V - min)). OpenCV semantics."""
    x = image.float()
    v = x.amax(dim=-3, keepdim=True)
    spread = v - x.amin(dim=-3, keepdim=True)            # V * S
    ratio = torch.minimum(torch.full_like(v, float(alpha)), v / spread.clamp_min(1e-6))
    return (v - (v - x) * ratio).round_().clamp_(0, 255).to(torch.uint8)


def hsv_hue(image: torch.Tensor, delta: int) -> torch.Tensor:
    """Rotate the HSV hue of uint8 RGB [..., 3, H, W] by ``delta`` OpenCV units (2 degrees each)."""
    x = TF.adjust_hue(image.float() / 255.0, delta / 180.0)
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- the pipeline
def _pair(value, name) -> tuple:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be [height, width] (two positive ints), got {value!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


class TrainAugment:
    """The release's training augmentation (see the module docstring), seeded per sample.

    ``aug(image, label, g) -> (image float32 [3, h, w] ImageNet-normalised, label int64 [h, w])``
    with (h, w) = ``crop_size``; where the resized image is smaller than the crop, the image is
    padded (bottom / right) with 0 *after* normalisation (= the mean colour) and the label with
    ``ignore_index``. ``image``: uint8 [3, H, W] (an [H, W, 3] array is accepted too); ``label``:
    integer [H, W] train ids.

    Args (the ``cfg.data`` fields of the same names; ``TrainAugment.from_config(cfg.data)``):
        crop_size: [h, w] of the output.
        short_sides: the release's resize: the short side becomes a random choice of these
            (the release: ``[int(512 * x * 0.1) for x in range(5, 21)]`` = 256..1024).
        max_long_side: with any resize, the long side is then capped at this (ratio kept;
            the release: 2048).
        train_resize: the course's resize (only without ``short_sides``): an int short side,
            or an exact [H, W]; None keeps the native size.
        scale_range: the course's [lo, hi]: after ``train_resize``, a factor ~ uniform(lo, hi)
            (mmseg's RandomResize ratio_range); None = 1.
        cat_max_ratio: a crop whose most frequent class (ignore excluded) covers
            ``cat_max_ratio`` or more of it, or that holds a single class, is re-drawn, up to 10
            times (mmseg's RandomCrop: the 11th box is kept unchecked); 1.0 = never.
        flip: horizontal flip probability; True = 0.5 (the release), False = never.
        photometric: mmseg's PhotoMetricDistortion (True), none (False), or a
            ``PhotoMetricDistortion`` instance.
        ignore_index: the label of padded pixels.

    Sizes are rounded as mmseg does (``int(x + 0.5)``).
    """

    def __init__(self, crop_size, *, train_resize=None, scale_range=None, short_sides=None,
                 max_long_side=None, cat_max_ratio: float = 0.75, flip=True, photometric=True,
                 ignore_index: int = IGNORE_INDEX):
        self.crop_size = _pair(crop_size, "crop_size")
        self.short_sides = None
        if short_sides is not None:
            sides = [short_sides] if isinstance(short_sides, (int, np.integer)) else list(short_sides)
            if not sides or any(int(s) <= 0 for s in sides):
                raise ValueError("short_sides must be a non-empty list of positive ints, "
                                 f"got {short_sides!r}")
            self.short_sides = tuple(int(s) for s in sides)
            if train_resize is not None or scale_range is not None:
                raise ValueError(
                    "short_sides (the release's random short-side resize) and train_resize / "
                    f"scale_range (the course's resize) are two resize modes, got short_sides="
                    f"{short_sides!r} with train_resize={train_resize!r}, scale_range={scale_range!r}; "
                    "set short_sides=None or train_resize=None and scale_range=None")
        if train_resize is None or isinstance(train_resize, (int, np.integer)):
            if train_resize is not None and int(train_resize) <= 0:
                raise ValueError(f"train_resize must be positive, got {train_resize!r}")
            self.train_resize = None if train_resize is None else int(train_resize)
        else:
            self.train_resize = _pair(train_resize, "train_resize")
        self.scale_range = None
        if scale_range is not None:
            try:
                lo, hi = (float(v) for v in scale_range)
            except (TypeError, ValueError):
                raise ValueError(f"scale_range must be [lo, hi], got {scale_range!r}") from None
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range!r}")
            self.scale_range = (lo, hi)
        if max_long_side is not None and int(max_long_side) <= 0:
            raise ValueError(f"max_long_side must be positive or None, got {max_long_side!r}")
        self.max_long_side = None if max_long_side is None else int(max_long_side)
        self.cat_max_ratio = float(cat_max_ratio)
        if not 0 < self.cat_max_ratio <= 1:
            raise ValueError(f"cat_max_ratio must be in (0, 1], got {cat_max_ratio!r}")
        self.flip_prob = 0.5 if flip is True else float(flip or 0.0)
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip must be a bool or a probability, got {flip!r}")
        if isinstance(photometric, PhotoMetricDistortion):
            self.photometric = photometric
        else:
            self.photometric = PhotoMetricDistortion() if photometric else None
        self.ignore_index = int(ignore_index)

    @classmethod
    def from_config(cls, data, **overrides) -> "TrainAugment":
        """From any object with the attributes crop_size, train_resize, scale_range, short_sides,
        max_long_side, cat_max_ratio, flip, photometric (``cfg.data``, a dataclass, a
        SimpleNamespace) or a dict with those keys."""
        if isinstance(data, dict):
            has, get = data.__contains__, data.__getitem__
        else:
            has, get = (lambda k: hasattr(data, k)), (lambda k: getattr(data, k))
        if not has("crop_size"):
            raise ValueError(f"the data config has no crop_size (TrainAugment reads the fields "
                             f"{', '.join(_CONFIG_FIELDS)}; a missing one takes its default)")
        kw = {k: get(k) for k in _CONFIG_FIELDS[1:] if has(k)}
        kw.update(overrides)
        return cls(get("crop_size"), **kw)

    # -- the pieces (each a pure function of its inputs and g) --------------------------------
    def output_size(self, h: int, w: int, g: torch.Generator) -> tuple[int, int]:
        """The (height, width) an [h, w] image is resized to (before the crop)."""
        if self.short_sides is not None:
            f = self.short_sides[_randint(g, 0, len(self.short_sides))] / min(h, w)
            fh, fw = h * f, w * f
        else:
            fh, fw = float(h), float(w)
            if isinstance(self.train_resize, int):
                f = self.train_resize / min(h, w)
                fh, fw = h * f, w * f
            elif self.train_resize is not None:
                fh, fw = map(float, self.train_resize)
            if self.scale_range is not None:
                s = _uniform(g, *self.scale_range)
                fh, fw = fh * s, fw * s
        if self.max_long_side is not None and max(fh, fw) > self.max_long_side:
            c = self.max_long_side / max(fh, fw)
            fh, fw = fh * c, fw * c
        return max(1, int(fh + 0.5)), max(1, int(fw + 0.5))

    def crop_box(self, label: torch.Tensor, g: torch.Generator) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop in ``label`` [H, W]; height / width are the
        crop size clipped to the image (the rest is padding later)."""
        H, W = label.shape[-2:]
        ch, cw = min(self.crop_size[0], H), min(self.crop_size[1], W)

        def draw():
            return _randint(g, 0, H - ch + 1), _randint(g, 0, W - cw + 1)

        top, left = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                if self.crop_ok(label[..., top:top + ch, left:left + cw]):
                    break
                top, left = draw()
        return top, left, ch, cw

    def crop_ok(self, crop: torch.Tensor) -> bool:
        """mmseg's rule: at least two classes (ignore excluded), the most frequent one under
        ``cat_max_ratio`` of the labelled pixels."""
        if crop.dtype == torch.uint8:                       # ids 0..255: a histogram is faster
            counts = torch.bincount(crop.reshape(-1), minlength=256)
            counts[self.ignore_index] = 0
            counts = counts[counts > 0]
        else:
            _, counts = torch.unique(crop[crop != self.ignore_index], return_counts=True)
        return len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio

    def __call__(self, image, label, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(g, torch.Generator):
            raise TypeError(f"TrainAugment needs a torch.Generator as its third argument (all "
                            f"randomness comes from it), got {type(g).__name__}")
        image = _as_chw_uint8(image)
        label = _as_label(label, image.shape[-2:])
        fits_uint8 = label.numel() and 0 <= int(label.min()) and int(label.max()) <= 255
        if fits_uint8 and 0 <= self.ignore_index <= 255:
            label = label.to(torch.uint8)   # the same ids, half the resize time
        h, w = image.shape[-2:]
        img, lab = tv_tensors.Image(image), tv_tensors.Mask(label)
        nh, nw = self.output_size(h, w, g)
        if (nh, nw) != (h, w):
            img = TF.resize(img, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=False)
            lab = TF.resize(lab, [nh, nw], interpolation=InterpolationMode.NEAREST)
        top, left, ch, cw = self.crop_box(lab, g)
        img, lab = TF.crop(img, top, left, ch, cw), TF.crop(lab, top, left, ch, cw)
        if self.flip_prob > 0 and _coin(g, self.flip_prob):
            img, lab = TF.horizontal_flip(img), TF.horizontal_flip(lab)
        x = img.as_subclass(torch.Tensor)
        if self.photometric is not None:
            x = self.photometric(x, g)
        x = normalize(x)
        pad_h, pad_w = self.crop_size[0] - ch, self.crop_size[1] - cw
        if pad_h or pad_w:   # [left, top, right, bottom]
            x = TF.pad(x, [0, 0, pad_w, pad_h], fill=0.0)
            lab = TF.pad(lab, [0, 0, pad_w, pad_h], fill=self.ignore_index)
        return x.contiguous(), lab.as_subclass(torch.Tensor).long().contiguous()

    def __repr__(self):
        if self.short_sides is not None:
            resize = f"short_sides={list(self.short_sides)}"
        else:
            resize = f"train_resize={self.train_resize}, scale_range={self.scale_range}"
        return (f"TrainAugment(crop_size={list(self.crop_size)}, {resize}, max_long_side="
                f"{self.max_long_side}, cat_max_ratio={self.cat_max_ratio}, flip={self.flip_prob}, "
                f"photometric={self.photometric is not None})")


def _as_chw_uint8(image) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(image) if isinstance(image, np.ndarray) else image)
    if t.ndim == 3 and t.shape[0] != 3 and t.shape[-1] == 3:
        t = t.permute(2, 0, 1)
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected an RGB image uint8 [3, H, W] (or [H, W, 3]), got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image (0..255), got {t.dtype}; convert floats in [0, 1] "
                        "with (x * 255).round().to(torch.uint8)")
    return t.as_subclass(torch.Tensor).contiguous()


def _as_label(label, hw) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(label) if isinstance(label, np.ndarray) else label)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"expected integer train ids as the label, got {t.dtype}")
    if tuple(t.shape) != tuple(hw):
        raise ValueError(f"label shape {tuple(t.shape)} does not match the image's {tuple(hw)} (H, W)")
    return t.as_subclass(torch.Tensor).long()
