"""Procedural street scenes with exact Cityscapes labels: the embedded DGSS benchmark.

A scene is split in two independent random draws, so that *what* is in a picture and *how it
looks* can be varied separately, exactly the split that domain generalisation is about:

- a **layout** (``sample_layout``): camera (height, horizon, focal length, roll), the road
  (lanes, sidewalks, yaw, markings, crosswalk), the two street sides (facades, walls, fences,
  hedges with their heights and extents), a distant skyline, and the objects (cars, trucks,
  buses, a tram, persons, riders on bicycles / motorcycles, parked bicycles, poles with
  street lamps, traffic lights and signs, trees), all in metres in a camera-centred world;
- a **style** (``domain_style`` / ``random_style``): palettes, procedural texture,
  lighting and shadows, night, fog, rain, sensor noise, blur, JPEG, vignetting.

``render(layout, style, size=(H, W), rng=rng)`` is a small numpy z-buffer renderer: a ground
plane, vertical street-side planes and camera-facing billboards, each pixel keeping the nearest
surface. Geometry is in world units, so any output size gives the same scene.

World coordinates: X to the right, Y up (0 on the ground), Z forward from the camera (metres).
A ground point at depth Z is seen at image row ``horizon*H + f*cam_height/Z`` with
``f = focal*W`` pixels.

Example::

    rng = np.random.default_rng(0)
    layout = sample_layout(rng, domain="gta")
    style = domain_style("gta", rng)
    out = render(layout, style, size=(128, 256), rng=rng)
    out["image"]     # uint8 [H, W, 3]
    out["label"]     # uint8 [H, W] Cityscapes label ids (7 road, ..., 33 bicycle; 0 void, 1 ego vehicle)
    out["depth"]     # float32 [H, W] metres along the optical axis; sky = SKY_DEPTH (1000 m)
    out["instance"]  # int32 [H, W] 0 for stuff, one id (1, 2, ...) per thing instance

Everything is a deterministic function of the generator's state.

The package is split by these three jobs: ``layout.py`` (what is where, and the shared
constants), ``style.py`` (how it looks) and the rendering, ``render.py`` (the z-buffer, the
ground and street-side planes, shading) with ``painters.py`` (one painter per object kind).
"""
from __future__ import annotations

from reinlite.data.synthetic.layout import DOMAINS, LABEL_IDS, SKY_DEPTH, SOURCE_DOMAIN, TARGET_DOMAINS, sample_layout
from reinlite.data.synthetic.render import render, render_sample
from reinlite.data.synthetic.style import domain_style, random_style

__all__ = ["DOMAINS", "SOURCE_DOMAIN", "TARGET_DOMAINS", "LABEL_IDS", "SKY_DEPTH",
           "sample_layout", "domain_style", "random_style", "render", "render_sample"]
