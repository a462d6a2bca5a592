"""Image styles: *how* a picture looks, drawn independently of its layout.

``domain_style(domain, rng)`` draws one image's style in a benchmark domain; ``random_style(rng)``
a much broader distribution (the course backbone's pretraining). A style holds palettes,
procedural texture amplitudes, lighting and shadows, night, fog, rain, sensor noise, blur, JPEG
quality and vignetting; the renderer (``render.py``) reads it, nothing here touches pixels.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

from reinlite.data.synthetic.layout import DOMAINS

__all__ = ["domain_style", "random_style"]

_BASE_PALETTES = {
    "gta": dict(road=(0.30, 0.29, 0.28), sidewalk=(0.66, 0.60, 0.52), wall=(0.78, 0.70, 0.58),
                fence=(0.45, 0.35, 0.25), pole=(0.35, 0.35, 0.33), vegetation=(0.22, 0.52, 0.12),
                terrain=(0.60, 0.52, 0.30), sky=(0.25, 0.50, 0.95), horizon=(0.70, 0.85, 1.0),
                person=(0.55, 0.35, 0.25), marking=(0.95, 0.92, 0.80),
                buildings=[(0.88, 0.74, 0.52), (0.82, 0.46, 0.30), (0.93, 0.90, 0.84),
                           (0.40, 0.62, 0.62), (0.88, 0.62, 0.60), (0.70, 0.66, 0.40)],
                cars=[(0.85, 0.08, 0.08), (0.10, 0.25, 0.85), (0.05, 0.05, 0.05),
                      (0.95, 0.95, 0.95), (0.95, 0.80, 0.10), (0.10, 0.60, 0.20)],
                clothes=[(0.8, 0.1, 0.1), (0.1, 0.3, 0.9), (0.9, 0.8, 0.2), (0.1, 0.1, 0.1),
                         (0.95, 0.95, 0.95), (0.2, 0.7, 0.3)],
                glass=(0.20, 0.35, 0.50)),
    "cityscapes": dict(road=(0.34, 0.34, 0.36), sidewalk=(0.52, 0.50, 0.49), wall=(0.55, 0.53, 0.50),
                       fence=(0.40, 0.40, 0.38), pole=(0.30, 0.31, 0.32),
                       vegetation=(0.26, 0.34, 0.18), terrain=(0.40, 0.42, 0.28),
                       sky=(0.78, 0.81, 0.85), horizon=(0.88, 0.89, 0.90),
                       person=(0.45, 0.38, 0.34), marking=(0.82, 0.82, 0.80),
                       buildings=[(0.55, 0.55, 0.54), (0.70, 0.66, 0.58), (0.55, 0.40, 0.33),
                                  (0.42, 0.42, 0.43), (0.75, 0.72, 0.66), (0.62, 0.58, 0.50)],
                       cars=[(0.70, 0.71, 0.72), (0.10, 0.10, 0.11), (0.20, 0.24, 0.33),
                             (0.85, 0.85, 0.84), (0.40, 0.40, 0.42), (0.45, 0.15, 0.15)],
                       clothes=[(0.15, 0.15, 0.17), (0.30, 0.30, 0.35), (0.50, 0.45, 0.40),
                                (0.20, 0.25, 0.40), (0.60, 0.20, 0.20), (0.75, 0.75, 0.72)],
                       glass=(0.25, 0.28, 0.30)),
    "bdd100k": dict(road=(0.45, 0.44, 0.42), sidewalk=(0.60, 0.58, 0.55), wall=(0.60, 0.55, 0.50),
                    fence=(0.50, 0.48, 0.45), pole=(0.40, 0.38, 0.35),
                    vegetation=(0.30, 0.40, 0.22), terrain=(0.52, 0.48, 0.35),
                    sky=(0.55, 0.68, 0.85), horizon=(0.85, 0.88, 0.90),
                    person=(0.50, 0.40, 0.35), marking=(0.90, 0.85, 0.50),
                    buildings=[(0.65, 0.55, 0.45), (0.75, 0.72, 0.68), (0.45, 0.35, 0.30),
                               (0.55, 0.60, 0.62), (0.85, 0.80, 0.70), (0.40, 0.40, 0.40)],
                    cars=[(0.80, 0.80, 0.80), (0.12, 0.12, 0.12), (0.55, 0.10, 0.10),
                          (0.25, 0.30, 0.45), (0.95, 0.95, 0.95), (0.50, 0.50, 0.45)],
                    clothes=[(0.2, 0.2, 0.25), (0.6, 0.6, 0.6), (0.3, 0.3, 0.5), (0.6, 0.2, 0.2),
                             (0.1, 0.1, 0.1), (0.8, 0.7, 0.5)],
                    glass=(0.15, 0.18, 0.22)),
}
_BASE_PALETTES["acdc"] = _BASE_PALETTES["cityscapes"]


def _jitter(rng, c, amount):
    return tuple(float(v) for v in np.clip(np.asarray(c) + rng.normal(0, amount, 3), 0, 1))


def _random_color(rng, s=(0.0, 1.0), v=(0.1, 1.0)):
    return tuple(float(x) for x in colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v)))


def _mix_palettes(rng):
    """A world-wide palette: each entry taken from a random base palette, jittered (Mapillary)."""
    names = ["gta", "cityscapes", "bdd100k"]
    out = {}
    for k in _BASE_PALETTES["gta"]:
        src = _BASE_PALETTES[names[rng.integers(0, 3)]][k]
        if isinstance(src, list):
            out[k] = [_jitter(rng, c, 0.08) for c in src]
        else:
            out[k] = _jitter(rng, src, 0.06)
    return out


def _texture_amps(base, rng, spread=0.3):
    amps = dict(road=0.18, sidewalk=0.20, building=0.20, wall=0.25, fence=0.2, pole=0.05,
                traffic_light=0.05, traffic_sign=0.05, vegetation=0.55, terrain=0.45, sky=0.03,
                person=0.10, rider=0.10, car=0.06, truck=0.08, bus=0.06, train=0.08,
                motorcycle=0.08, bicycle=0.05, ego_vehicle=0.05, unlabeled=0.2)
    return {k: float(v * base * math.exp(rng.normal(0, spread))) for k, v in amps.items()}


def domain_style(domain: str, rng: np.random.Generator) -> dict:
    """Draw the style of one image of ``domain`` (a JSON-serialisable dict).

    Keys: ``palette`` (RGB in [0, 1] per surface, lists for buildings / cars / clothes),
    ``texture`` (per-class amplitude of the procedural noise), ``texture_cell`` (noise scale,
    fraction of the image height), ``brightness``, ``contrast``, ``saturation``, ``gamma``,
    ``tint`` (RGB gains), ``sun_side`` (-1 / 1), ``shadow`` (0..1), ``night`` (0..1),
    ``fog`` (extinction per metre), ``fog_color``, ``rain`` (0..1), ``clouds``, ``blur``
    (Gaussian sigma in pixels at 256 px height), ``noise`` (std of sensor noise),
    ``jpeg`` (quality or None), ``vignette``, ``glare``.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if domain == "mapillary":
        pal = _mix_palettes(rng)
    else:
        pal = {k: ([_jitter(rng, c, 0.04) for c in v] if isinstance(v, list) else _jitter(rng, v, 0.03))
               for k, v in _BASE_PALETTES[domain].items()}
    st = dict(palette=pal, sun_side=int(rng.choice([-1, 1])), night=0.0, fog=0.0,
              fog_color=(0.75, 0.76, 0.78), rain=0.0, glare=0.0, jpeg=None)
    if domain == "gta":
        st.update(texture=_texture_amps(0.6, rng), texture_cell=float(rng.uniform(0.02, 0.05)),
                  brightness=float(rng.uniform(1.0, 1.15)), contrast=float(rng.uniform(1.15, 1.35)),
                  saturation=float(rng.uniform(1.3, 1.6)), gamma=float(rng.uniform(0.85, 1.0)),
                  tint=_jitter(rng, (1.06, 1.0, 0.9), 0.03), shadow=float(rng.uniform(0.45, 0.7)),
                  clouds=float(rng.uniform(0.0, 0.15)), blur=0.0, noise=0.005,
                  vignette=float(rng.uniform(0.0, 0.1)))
        if rng.random() < 0.1:
            st["night"] = float(rng.uniform(0.6, 0.8))
    elif domain == "cityscapes":
        st.update(texture=_texture_amps(1.0, rng), texture_cell=float(rng.uniform(0.01, 0.03)),
                  brightness=float(rng.uniform(0.8, 1.0)), contrast=float(rng.uniform(0.8, 0.95)),
                  saturation=float(rng.uniform(0.55, 0.75)), gamma=float(rng.uniform(1.0, 1.15)),
                  tint=_jitter(rng, (0.96, 1.02, 1.0), 0.02), shadow=float(rng.uniform(0.0, 0.25)),
                  clouds=float(rng.uniform(0.1, 0.3)), blur=float(rng.uniform(0.6, 1.0)),
                  noise=float(rng.uniform(0.01, 0.02)), vignette=float(rng.uniform(0.1, 0.25)))
    elif domain == "bdd100k":
        st.update(texture=_texture_amps(0.9, rng), texture_cell=float(rng.uniform(0.015, 0.04)),
                  brightness=float(rng.uniform(0.85, 1.1)), contrast=float(rng.uniform(0.7, 0.9)),
                  saturation=float(rng.uniform(0.6, 0.9)), gamma=float(rng.uniform(0.9, 1.1)),
                  tint=_jitter(rng, (1.0, 1.0, 1.03), 0.04), shadow=float(rng.uniform(0.1, 0.4)),
                  clouds=float(rng.uniform(0.0, 0.3)), blur=float(rng.uniform(0.8, 1.4)),
                  noise=float(rng.uniform(0.015, 0.035)), vignette=float(rng.uniform(0.1, 0.3)),
                  jpeg=int(rng.integers(35, 70)), glare=float(rng.uniform(0.05, 0.2)))
        r = rng.random()
        if r < 0.3:
            st["night"] = float(rng.uniform(0.75, 0.9))
        elif r < 0.45:
            st["rain"] = float(rng.uniform(0.3, 0.8))
            st["fog"] = float(rng.uniform(0.003, 0.01))
    elif domain == "mapillary":
        st.update(texture=_texture_amps(0.8, rng, 0.5), texture_cell=float(rng.uniform(0.01, 0.05)),
                  brightness=float(rng.uniform(0.8, 1.15)), contrast=float(rng.uniform(0.8, 1.2)),
                  saturation=float(rng.uniform(0.7, 1.3)), gamma=float(rng.uniform(0.85, 1.15)),
                  tint=_jitter(rng, (1.0, 1.0, 1.0), 0.06), shadow=float(rng.uniform(0.0, 0.6)),
                  clouds=float(rng.uniform(0.0, 0.4)), blur=float(rng.uniform(0.0, 0.7)),
                  noise=float(rng.uniform(0.0, 0.02)), vignette=float(rng.uniform(0.0, 0.2)),
                  jpeg=int(rng.integers(70, 95)))
        if rng.random() < 0.08:
            st["night"] = float(rng.uniform(0.6, 0.85))
    else:  # acdc: fog, night or rain, one per image
        st.update(texture=_texture_amps(1.0, rng), texture_cell=float(rng.uniform(0.01, 0.03)),
                  brightness=float(rng.uniform(0.75, 0.95)), contrast=float(rng.uniform(0.75, 0.9)),
                  saturation=float(rng.uniform(0.4, 0.7)), gamma=float(rng.uniform(1.0, 1.2)),
                  tint=_jitter(rng, (0.97, 1.0, 1.03), 0.02), shadow=0.0,
                  clouds=float(rng.uniform(0.1, 0.4)), blur=float(rng.uniform(0.8, 1.5)),
                  noise=float(rng.uniform(0.015, 0.03)), vignette=float(rng.uniform(0.1, 0.3)))
        cond = ("fog", "night", "rain")[int(rng.integers(0, 3))]
        st["condition"] = cond
        if cond == "fog":
            st["fog"] = float(rng.uniform(0.02, 0.06))
        elif cond == "night":
            st["night"] = float(rng.uniform(0.8, 0.93))
            st["noise"] = float(rng.uniform(0.03, 0.05))
        else:
            st["rain"] = float(rng.uniform(0.5, 1.0))
            st["fog"] = float(rng.uniform(0.005, 0.015))
            st["fog_color"] = (0.6, 0.62, 0.65)
    if "condition" not in st:
        st["condition"] = "night" if st["night"] else "rain" if st["rain"] else \
            "fog" if st["fog"] else "clear"
    return st


def random_style(rng: np.random.Generator) -> dict:
    """A much broader style distribution than the benchmark domains (same keys as ``domain_style``).

    Palettes are random colours (any hue, independent per surface) half of the time and
    strongly jittered domain palettes otherwise; texture, lighting, weather, blur and noise
    are drawn from ranges wider than any domain's. Used to pretrain the course backbone.
    """
    if rng.random() < 0.5:
        pal = {}
        for k, v in _BASE_PALETTES["gta"].items():
            pal[k] = ([_random_color(rng) for _ in range(6)] if isinstance(v, list)
                      else _random_color(rng, s=(0.0, 0.9)))
    else:
        base = _BASE_PALETTES[("gta", "cityscapes", "bdd100k")[int(rng.integers(0, 3))]]
        pal = {k: ([_jitter(rng, c, 0.2) for c in v] if isinstance(v, list) else _jitter(rng, v, 0.15))
               for k, v in base.items()}
    r = rng.random()
    st = dict(palette=pal, texture=_texture_amps(float(rng.uniform(0.2, 2.0)), rng, 0.6),
              texture_cell=float(rng.uniform(0.005, 0.08)),
              brightness=float(rng.uniform(0.6, 1.3)), contrast=float(rng.uniform(0.6, 1.5)),
              saturation=float(rng.uniform(0.2, 1.8)), gamma=float(rng.uniform(0.7, 1.4)),
              tint=tuple(float(v) for v in rng.uniform(0.8, 1.2, 3)),
              sun_side=int(rng.choice([-1, 1])), shadow=float(rng.uniform(0, 0.8)),
              night=float(rng.uniform(0.5, 0.95)) if r < 0.15 else 0.0,
              fog=float(rng.uniform(0.005, 0.08)) if 0.15 <= r < 0.3 else 0.0,
              fog_color=tuple(float(v) for v in rng.uniform(0.5, 0.95, 3)),
              rain=float(rng.uniform(0.2, 1.0)) if 0.3 <= r < 0.4 else 0.0,
              clouds=float(rng.uniform(0, 0.6)), blur=float(rng.uniform(0, 2.0)),
              noise=float(rng.uniform(0, 0.05)), vignette=float(rng.uniform(0, 0.4)),
              jpeg=int(rng.integers(20, 95)) if rng.random() < 0.4 else None,
              glare=float(rng.uniform(0, 0.3)) if rng.random() < 0.3 else 0.0)
    st["condition"] = "night" if st["night"] else "rain" if st["rain"] else \
        "fog" if st["fog"] else "clear"
    return st
