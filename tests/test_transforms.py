"""reinlite.data.transforms: the one training augmentation, each piece against its definition."""
import colorsys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import numpy as np
import pytest
import torch

from reinlite.data import transforms as T
from reinlite.data.transforms import PhotometricParams, PhotoMetricDistortion, TrainAugment

RELEASE_SIDES = [int(512 * x * 0.1) for x in range(5, 21)]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def sample(h=40, w=60, classes=5, seed=0):
    g = gen(seed)
    return (torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
            torch.randint(0, classes, (h, w), generator=g))


def plain(crop, **kw):
    """No resize, flip or photometric: only crop + normalise + pad."""
    kw = dict(dict(flip=False, photometric=False, cat_max_ratio=1.0), **kw)
    return TrainAugment(crop, **kw)


# ----------------------------------------------------------------------------- normalisation
def test_normalize_uses_timm_constants():
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert T.IMAGENET_MEAN == tuple(IMAGENET_DEFAULT_MEAN) and T.IMAGENET_STD == tuple(IMAGENET_DEFAULT_STD)
    img = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    x = T.normalize(img)
    mean, std = torch.tensor(T.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(T.IMAGENET_STD).view(3, 1, 1)
    assert x.dtype == torch.float32 and x.shape == img.shape
    assert torch.allclose(x, (img.float() / 255 - mean) / std, atol=1e-6)
    assert torch.allclose(T.normalize(img[0]), x[0])
    with pytest.raises(TypeError, match="uint8"):
        T.normalize(img.float() / 255)


# ----------------------------------------------------------------------------- the course config
@dataclass
class DataCfg:
    crop_size: list
    train_resize: Optional[object] = None
    scale_range: Optional[list] = None
    short_sides: Optional[list] = None
    max_long_side: Optional[int] = None
    cat_max_ratio: float = 0.75
    flip: bool = True
    photometric: bool = True


def test_course_config_shapes_and_sizes():
    cfg = SimpleNamespace(crop_size=[64, 128], train_resize=[64, 128], scale_range=[0.75, 1.5],
                          short_sides=None, max_long_side=None, cat_max_ratio=0.75, flip=True,
                          photometric=True)
    aug = TrainAugment.from_config(cfg)
    assert repr(aug) == repr(TrainAugment.from_config(DataCfg([64, 128], [64, 128], [0.75, 1.5])))
    img, lab = sample(128, 256, classes=19)
    padded = 0
    for s in range(12):
        x, y = aug(img, lab, gen(s))
        assert x.shape == (3, 64, 128) and x.dtype == torch.float32
        assert y.shape == (64, 128) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= set(range(19)) | {255}
        padded += bool((y == 255).any())
    assert 0 < padded < 12                                  # scale < 1 pads, scale > 1 does not
    sizes = {aug.output_size(128, 256, gen(s)) for s in range(300)}
    assert min(sizes) >= (48, 96) and max(sizes) <= (96, 192)     # [64, 128] x [0.75, 1.5]
    assert all(abs(w - 2 * h) <= 1 for h, w in sizes)
    short = TrainAugment((8, 8), train_resize=24)                  # int: the short side
    assert short.output_size(40, 60, gen(0)) == (24, 36)


def test_same_seed_same_output_different_seed_different():
    aug = TrainAugment((32, 48), train_resize=[40, 60], scale_range=(0.5, 2.0))
    img, lab = sample()
    a = aug(img, lab, gen(5))
    torch.manual_seed(123)                                         # the global RNG plays no part
    b = aug(img, lab, gen(5))
    c = aug(img, lab, gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    outs = {aug(img, lab, gen(s))[0].sum().item() for s in range(6)}
    assert len(outs) == 6


def test_accepts_hwc_arrays_and_refuses_wrong_input():
    img, lab = sample(20, 30)
    aug = plain((20, 30))
    x, y = aug(img.permute(1, 2, 0).numpy(), lab.numpy().astype(np.uint8), gen(0))
    assert torch.equal(x, T.normalize(img)) and torch.equal(y, lab)
    with pytest.raises(TypeError, match="uint8"):
        aug(img.float() / 255, lab, gen(0))
    with pytest.raises(ValueError, match="does not match"):
        aug(img, lab[:10], gen(0))
    with pytest.raises(TypeError, match="Generator"):
        aug(img, lab, 0)


# ----------------------------------------------------------------------------- resize
def test_short_side_choices_of_the_release():
    assert RELEASE_SIDES[0] == 256 and RELEASE_SIDES[-1] == 1024 and len(RELEASE_SIDES) == 16
    aug = TrainAugment((512, 512), short_sides=RELEASE_SIDES, max_long_side=2048)
    sizes = [aug.output_size(1052, 1914, gen(s)) for s in range(600)]   # a GTA5 image
    assert {h for h, _ in sizes} == set(RELEASE_SIDES)               # every choice, nothing else
    assert all(w == int(1914 * h / 1052 + 0.5) for h, w in sizes)    # ratio kept, mmseg rounding
    wide = {aug.output_size(500, 2000, gen(s)) for s in range(600)}   # long side capped
    assert (512, 2048) in wide and max(w for _, w in wide) == 2048
    assert all(w == 4 * h or w == 2048 for h, w in wide)
    assert aug.output_size(2000, 500, gen(0))[0] <= 2048              # portrait: the height
    with pytest.raises(ValueError, match="two resize modes"):
        TrainAugment((64, 64), short_sides=[64], scale_range=[0.5, 2])


def test_resize_keeps_label_ids_and_the_pipeline_uses_it():
    img, lab = sample(40, 60, classes=7)
    aug = plain((10, 15), train_resize=[10, 15])
    x, y = aug(img, lab, gen(0))
    assert x.shape == (3, 10, 15) and set(y.unique().tolist()) <= set(lab.unique().tolist())
    assert torch.equal(y, lab[::4, ::4])                           # nearest, as OpenCV / torch


# ----------------------------------------------------------------------------- crop, flip, pad
def test_crop_is_redrawn_until_no_class_dominates():
    lab = torch.zeros(64, 64, dtype=torch.long)
    lab[:, 48:] = 1                                   # class 1 only in a 16-px strip on the right
    def ok(box):
        t, l, h, w = box
        _, c = lab[t:t + h, l:l + w].unique(return_counts=True)
        return len(c) > 1 and c.max().item() / c.sum().item() < 0.75

    redraw = TrainAugment((16, 16), cat_max_ratio=0.75)
    once = TrainAugment((16, 16), cat_max_ratio=1.0)
    rate = np.mean([ok(redraw.crop_box(lab, gen(s))) for s in range(300)])
    rate0 = np.mean([ok(once.crop_box(lab, gen(s))) for s in range(300)])
    # one draw succeeds with p = 7/49; 11 draws (mmseg: 1 + up to 10 re-draws): 1 - (6/7)^11 = 0.82
    assert 0.10 < rate0 < 0.20 and 0.72 < rate < 0.92
    # a single-class label never satisfies the rule: still terminates, with a valid box
    t, l, h, w = redraw.crop_box(torch.zeros(64, 64, dtype=torch.long), gen(0))
    assert (h, w) == (16, 16) and 0 <= t <= 48 and 0 <= l <= 48
    # the rule itself: ignore excluded, "<" (not "<="), at least two classes
    for dtype in (torch.long, torch.uint8):                  # (uint8 labels: the histogram path)
        def cols(*runs):
            return torch.cat([torch.full((4, n), c, dtype=dtype) for c, n in runs], 1)

        assert redraw.crop_ok(cols((255, 12), (0, 2), (1, 2)))  # 50 / 50 of the labelled pixels
        assert not redraw.crop_ok(cols((0, 12), (1, 4)))        # 0.75 is not < 0.75
        assert redraw.crop_ok(cols((0, 11), (1, 5)))
        assert not redraw.crop_ok(cols((255, 8), (3, 8)))       # one class
        assert not redraw.crop_ok(cols((255, 16)))

def test_pad_after_normalisation_image_zero_label_ignore():
    img, lab = sample(20, 30)
    x, y = plain((32, 48))(img, lab, gen(0))
    assert x.shape == (3, 32, 48) and y.shape == (32, 48)
    assert torch.equal(x[:, :20, :30], T.normalize(img)) and torch.equal(y[:20, :30], lab)
    assert (x[:, 20:] == 0).all() and (x[:, :, 30:] == 0).all()     # 0 = the mean colour
    assert (y[20:] == 255).all() and (y[:, 30:] == 255).all()
    # a crop larger in one direction only pads that one
    x, y = plain((16, 48))(img, lab, gen(0))
    assert (y[:, 30:] == 255).all() and not (y[:, :30] == 255).any()


def test_flip():
    img, lab = sample(20, 30)
    x, y = plain((20, 30), flip=1.0)(img, lab, gen(0))
    assert torch.equal(x, T.normalize(img).flip(-1)) and torch.equal(y, lab.flip(-1))
    half = plain((20, 30), flip=True)
    flipped = [torch.equal(half(img, lab, gen(s))[1], lab.flip(-1)) for s in range(200)]
    assert 0.4 < np.mean(flipped) < 0.6


# ----------------------------------------------------------------------------- photometric
def test_photometric_draws_follow_mmseg():
    pm = PhotoMetricDistortion()
    g = gen(0)
    ps = [pm.sample(g) for _ in range(4000)]
    hues = [p.hue for p in ps if p.hue is not None]
    assert all(isinstance(h, int) for h in hues)
    assert min(hues) == -18 and max(hues) == 17                 # numpy randint(-18, 18)
    degrees = [p.hue_degrees for p in ps if p.hue is not None]
    assert min(degrees) == -36 and max(degrees) == 34            # +-36 degrees, not +-18
    for name in ("brightness", "contrast", "saturation", "hue"):
        assert 0.45 < np.mean([getattr(p, name) is not None for p in ps]) < 0.55, name
    first = [p.contrast_first for p in ps]
    assert 0.45 < np.mean(first) < 0.55
    # contrast is reached in both branches, each with p 1/2
    for branch in (True, False):
        sub = [p for p in ps if p.contrast_first is branch]
        assert 0.45 < np.mean([p.contrast is not None for p in sub]) < 0.55
    b = [p.brightness for p in ps if p.brightness is not None]
    c = [p.contrast for p in ps if p.contrast is not None]
    s = [p.saturation for p in ps if p.saturation is not None]
    assert -32 <= min(b) < -30 and 30 < max(b) <= 32
    assert 0.5 <= min(c) < 0.55 and 1.45 < max(c) <= 1.5 and 0.5 <= min(s) and max(s) <= 1.5


def _px(rgb):
    return torch.tensor(rgb, dtype=torch.uint8).T.reshape(3, 1, -1)   # [N, 3] -> [3, 1, N]


def _rgb(x):
    return x.reshape(3, -1).T.tolist()


def test_brightness_and_contrast_truncate_like_mmseg():
    pm = PhotoMetricDistortion()
    x = _px([[0, 100, 250], [10, 101, 170]])
    up = pm.apply(x, PhotometricParams(10.7, True, None, None, None))
    assert _rgb(up) == [[10, 110, 255], [20, 111, 180]]         # + 10.7, clip, truncate
    down = pm.apply(x, PhotometricParams(-20.5, True, None, None, None))
    assert _rgb(down) == [[0, 79, 229], [0, 80, 149]]
    con = pm.apply(x, PhotometricParams(None, True, 1.5, None, None))
    assert _rgb(con) == [[0, 150, 255], [15, 151, 255]]         # plain multiplication, no blend


def test_contrast_before_or_after_saturation():
    pm = PhotoMetricDistortion()
    x = _px([[200, 100, 100]])
    first = pm.apply(x, PhotometricParams(None, True, 1.5, 0.5, None))
    last = pm.apply(x, PhotometricParams(None, False, 1.5, 0.5, None))
    # first: (255, 150, 150) -> S * 0.5 around V = 255 -> (255, 202, 202)
    assert _rgb(first) == [[255, 202, 202]]
    # last: S * 0.5 around V = 200 -> (200, 150, 150) -> x 1.5 -> (255, 225, 225)
    assert _rgb(last) == [[255, 225, 225]]


def _hsv(rgb):
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))


def test_hue_delta_is_in_opencv_units_two_degrees_each():
    rgb = torch.randint(30, 226, (200, 3), generator=gen(1))
    x = _px(rgb.tolist())
    for delta in (18, -18, 5):
        out = _rgb(T.hsv_hue(x, delta))
        for a, b in zip(rgb.tolist(), out):
            ha, sa, va = _hsv(a)
            if sa < 0.2:
                continue                                  # hue is ill-defined for greys
            hb, sb, vb = _hsv(b)
            shift = ((hb - ha + 0.5) % 1.0 - 0.5) * 360
            assert abs(shift - 2 * delta) < 3, (a, b, shift)
            assert abs(vb - va) < 2 / 255 and abs(sb - sa) < 0.03


def test_saturation_scales_hsv_s_keeping_hue_and_value():
    rgb = torch.randint(0, 256, (300, 3), generator=gen(2)).tolist()
    x = _px(rgb)
    for alpha in (0.5, 1.4):
        out = _rgb(T.hsv_saturation(x, alpha))
        for a, b in zip(rgb, out):
            h, s, v = _hsv(a)
            want = [round(255 * c) for c in colorsys.hsv_to_rgb(h, min(s * alpha, 1.0), v)]
            assert max(abs(p - q) for p, q in zip(b, want)) <= 1, (a, b, want)
    # not torchvision's adjust_saturation (a blend with the luma grey)
    import torchvision.transforms.v2.functional as TF

    tv = TF.adjust_saturation(_px([[200, 100, 100]]), 0.5)
    assert _rgb(T.hsv_saturation(_px([[200, 100, 100]]), 0.5)) == [[200, 150, 150]] != _rgb(tv)


def test_photometric_in_the_pipeline_is_seeded():
    img, lab = sample(20, 30)
    aug = plain((20, 30), photometric=True)
    outs = [aug(img, lab, gen(s))[0] for s in range(8)]
    assert any(not torch.equal(o, T.normalize(img)) for o in outs)
    assert torch.equal(aug(img, lab, gen(3))[0], outs[3])


# ----------------------------------------------------------------------------- config
def test_from_config_takes_any_object_and_checks_values():
    d = dict(crop_size=[16, 16], scale_range=None, flip=False)
    a = TrainAugment.from_config(d)
    b = TrainAugment.from_config(SimpleNamespace(**d))
    assert repr(a) == repr(b) and a.flip_prob == 0 and a.photometric is not None  # missing: default
    with pytest.raises(ValueError, match="crop_size"):
        TrainAugment.from_config(SimpleNamespace(flip=True))
    with pytest.raises(ValueError, match="cat_max_ratio"):
        TrainAugment((16, 16), cat_max_ratio=0)
    with pytest.raises(ValueError, match="scale_range"):
        TrainAugment((16, 16), scale_range=[2.0, 1.0])
    with pytest.raises(TypeError):
        TrainAugment((16, 16), [0.5, 2.0])                      # options are keywords only
