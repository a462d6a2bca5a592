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
"""
from __future__ import annotations

import colorsys
import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["DOMAINS", "SOURCE_DOMAIN", "TARGET_DOMAINS", "LABEL_IDS", "SKY_DEPTH",
           "sample_layout", "domain_style", "random_style", "render", "render_sample"]

#: Cityscapes label ids the renderer writes (``unlabeled`` and ``ego_vehicle`` map to ignore).
LABEL_IDS = dict(unlabeled=0, ego_vehicle=1, road=7, sidewalk=8, building=11, wall=12, fence=13,
                 pole=17, traffic_light=19, traffic_sign=20, vegetation=21, terrain=22, sky=23,
                 person=24, rider=25, car=26, truck=27, bus=28, train=31, motorcycle=32,
                 bicycle=33)
_L = LABEL_IDS
_THINGS = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")

#: Benchmark domains: the source (a saturated "game" look, written in the GTA5 layout) and the
#: unseen targets (written in the Cityscapes, BDD100K, Mapillary and ACDC layouts).
DOMAINS = ("gta", "cityscapes", "bdd100k", "mapillary", "acdc")
SOURCE_DOMAIN = "gta"
TARGET_DOMAINS = DOMAINS[1:]

#: Depth (metres) written for sky pixels.
SKY_DEPTH = 1000.0
_SKYLINE_DEPTH = 300.0
_ZMAX = 160.0  # street furniture is laid out up to this depth


# ----------------------------------------------------------------------------------------
# Layout statistics per domain (ranges are uniform unless noted)
# ----------------------------------------------------------------------------------------
_LAYOUT = {
    # a game city: wide avenues, tall varied buildings, lots of traffic, few pedestrians
    "gta": dict(cam_height=(1.5, 2.1), horizon=(0.38, 0.50), focal=(0.62, 0.85), roll=0.0,
                lanes=(1, 3), lane_width=(3.4, 4.0), sidewalk=(2.5, 5.0), setback=(0.0, 8.0),
                p_building=0.60, building_height=(6.0, 45.0), p_barrier=0.35,
                cars=3.0, parked=1.0, truck=0.15, bus=0.06, persons=2.0, riders=0.5,
                parked_bikes=0.2, pole_spacing=(22.0, 40.0), p_light=0.35, p_sign=0.35,
                trees=4.0, p_palm=0.5, p_train=0.02, hood=0.0, p_crosswalk=0.3,
                yaw=0.08, p_skyline_veg=0.3, p_verge_terrain=0.5),
    # European city: narrow streets, dense parked cars, many pedestrians, cyclists, ego hood
    "cityscapes": dict(cam_height=(1.15, 1.35), horizon=(0.40, 0.47), focal=(0.85, 1.0),
                       roll=0.0, lanes=(1, 2), lane_width=(3.0, 3.4), sidewalk=(2.0, 4.0),
                       setback=(0.0, 1.5), p_building=0.82, building_height=(9.0, 24.0),
                       p_barrier=0.35, cars=1.5, parked=7.0, truck=0.08, bus=0.05,
                       persons=7.0, riders=1.5, parked_bikes=2.5, pole_spacing=(10.0, 20.0),
                       p_light=0.3, p_sign=0.5, trees=5.0, p_palm=0.0, p_train=0.06,
                       hood=(0.14, 0.2), p_crosswalk=0.3, yaw=0.05, p_skyline_veg=0.3,
                       p_verge_terrain=0.3),
    # US dash cam: wide angle, wide roads, set-back low buildings, more sky and greenery
    "bdd100k": dict(cam_height=(1.2, 1.5), horizon=(0.42, 0.55), focal=(0.50, 0.65), roll=0.0,
                    lanes=(1, 3), lane_width=(3.5, 3.8), sidewalk=(1.5, 3.0),
                    setback=(2.0, 15.0), p_building=0.45, building_height=(4.0, 22.0),
                    p_barrier=0.35, cars=4.0, parked=2.0, truck=0.15, bus=0.05,
                    persons=1.5, riders=0.3, parked_bikes=0.2, pole_spacing=(18.0, 35.0),
                    p_light=0.35, p_sign=0.4, trees=6.0, p_palm=0.1, p_train=0.01,
                    hood=(0.06, 0.12), p_crosswalk=0.2, yaw=0.1, p_skyline_veg=0.5,
                    p_verge_terrain=0.6),
    # world-wide street-level imagery: any camera height, tilted horizons, everything varies
    "mapillary": dict(cam_height=(1.2, 2.8), horizon=(0.30, 0.60), focal=(0.55, 1.0),
                      roll=4.0, lanes=(0, 2), lane_width=(2.8, 3.8), sidewalk=(1.5, 5.0),
                      setback=(0.0, 6.0), p_building=0.65, building_height=(4.0, 30.0),
                      p_barrier=0.4, cars=2.5, parked=3.0, truck=0.12, bus=0.06,
                      persons=4.0, riders=1.0, parked_bikes=1.0, pole_spacing=(12.0, 30.0),
                      p_light=0.3, p_sign=0.5, trees=5.0, p_palm=0.2, p_train=0.04,
                      hood=0.0, p_crosswalk=0.3, yaw=0.12, p_skyline_veg=0.5,
                      p_verge_terrain=0.5),
    # adverse conditions recorded in a European city (fog / night / rain)
    "acdc": dict(cam_height=(1.3, 1.5), horizon=(0.40, 0.48), focal=(0.75, 0.9), roll=0.0,
                 lanes=(1, 2), lane_width=(3.0, 3.5), sidewalk=(2.0, 4.0), setback=(0.0, 4.0),
                 p_building=0.7, building_height=(6.0, 22.0), p_barrier=0.4, cars=2.0,
                 parked=5.0, truck=0.1, bus=0.05, persons=3.0, riders=0.8, parked_bikes=1.0,
                 pole_spacing=(12.0, 25.0), p_light=0.3, p_sign=0.5, trees=6.0, p_palm=0.0,
                 p_train=0.04, hood=0.0, p_crosswalk=0.25, yaw=0.06, p_skyline_veg=0.4,
                 p_verge_terrain=0.5),
}


def _u(rng, r):
    """A uniform draw from a (lo, hi) range, or r itself when it is a number."""
    if isinstance(r, (tuple, list)):
        return float(rng.uniform(r[0], r[1]))
    return float(r)


def _broad_layout_params(rng):
    """Layout statistics for ``domain=None``: each statistic drawn between the domains' extremes."""
    p = {}
    for k in _LAYOUT["gta"]:
        vals = [_LAYOUT[d][k] for d in DOMAINS]
        if isinstance(vals[0], tuple):
            lo = min(v[0] for v in vals)
            hi = max(v[1] for v in vals)
            a, b = sorted(rng.uniform(lo, hi, 2))
            p[k] = (float(a), float(b)) if not isinstance(vals[0][0], int) else (int(lo), int(hi))
        else:
            flat = [v if not isinstance(v, tuple) else v[1] for v in vals]
            p[k] = float(rng.uniform(min(flat) * 0.5, max(flat) * 1.3))
    p["lanes"] = (0, 3)
    p["roll"] = float(rng.uniform(0, 6))
    hood = float(rng.uniform(0, 0.2)) if rng.random() < 0.3 else 0.0
    p["hood"] = hood
    return p


def _poisson_positions(rng, rate_per_100m, z0, z1, min_gap=0.0):
    """Sorted depths of a Poisson process with ``rate_per_100m`` events per 100 m in [z0, z1]."""
    n = rng.poisson(max(rate_per_100m, 0.0) * (z1 - z0) / 100.0)
    z = np.sort(rng.uniform(z0, z1, n))
    if min_gap > 0 and n > 1:
        keep = [0]
        for i in range(1, n):
            if z[i] - z[keep[-1]] >= min_gap:
                keep.append(i)
        z = z[keep]
    return [float(v) for v in z]


def sample_layout(rng: np.random.Generator, domain: str | None = "gta") -> dict:
    """Draw a scene layout (a JSON-serialisable dict, lengths in metres).

    ``domain`` picks the layout statistics of one benchmark domain (see ``DOMAINS``); ``None``
    draws the statistics themselves from a broad range spanning all domains and beyond.
    The returned dict has keys ``camera``, ``road``, ``sides`` (left, right), ``skyline``,
    ``objects`` and ``hood`` (fraction of the image height covered by the ego vehicle).
    """
    if domain is None:
        P = _broad_layout_params(rng)
    else:
        if domain not in _LAYOUT:
            raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS} or None")
        P = _LAYOUT[domain]

    camera = dict(height=_u(rng, P["cam_height"]), horizon=_u(rng, P["horizon"]),
                  focal=_u(rng, P["focal"]),
                  roll=float(rng.uniform(-P["roll"], P["roll"])) if P["roll"] else 0.0)
    lanes_lo, lanes_hi = P["lanes"]
    lanes_l = int(rng.integers(int(lanes_lo), int(lanes_hi) + 1))
    lanes_r = int(rng.integers(max(int(lanes_lo), 1), int(lanes_hi) + 1))
    lw = _u(rng, P["lane_width"])
    half_l, half_r = lanes_l * lw, lanes_r * lw
    if lanes_l == 0:  # one-way street: centre the road under the camera
        half_l = half_r = lanes_r * lw / 2.0
    offset = float(rng.uniform(-0.35, 0.35) * lw)   # camera's lateral position on its lane
    # the camera drives in the right half: the road centre line sits to its left
    center = -(half_r - lw / 2.0) + offset if lanes_l > 0 else offset
    road = dict(center=center, yaw=float(rng.uniform(-P["yaw"], P["yaw"])),
                left=half_l, right=half_r, lane_width=lw, lanes_left=lanes_l,
                lanes_right=lanes_r, markings=bool(rng.random() < 0.85),
                crosswalk=float(rng.uniform(8, 40)) if rng.random() < P["p_crosswalk"] else None,
                patches=int(rng.integers(0, 4)))

    sides = []
    for s in (-1, 1):
        sw = _u(rng, P["sidewalk"])
        setback = _u(rng, P["setback"])
        edge = (road["left"] if s < 0 else road["right"])
        curb = center + s * edge                      # X of the road edge at z = 0
        walk = curb + s * sw                          # outer edge of the sidewalk
        facade = walk + s * setback
        verge = "terrain" if (setback > 0.8 and rng.random() < P["p_verge_terrain"]) else "sidewalk"
        # facade segments (buildings with gaps)
        segs, z = [], float(rng.uniform(-10, 2))
        while z < _ZMAX + 60:
            if rng.random() < P["p_building"]:
                length = float(rng.uniform(8, 35))
                segs.append(dict(z0=z, z1=z + length, kind="building",
                                 height=_u(rng, P["building_height"]),
                                 variant=int(rng.integers(0, 1 << 16)),
                                 window=(float(rng.uniform(2.0, 4.0)),
                                         float(rng.uniform(2.8, 3.6)))))
            else:
                length = float(rng.uniform(4, 20))
                kind = ("vegetation" if rng.random() < 0.5 else "none")
                if kind == "vegetation":
                    segs.append(dict(z0=z, z1=z + length, kind=kind,
                                     height=float(rng.uniform(3, 10)),
                                     variant=int(rng.integers(0, 1 << 16))))
            z += length
        # low barriers along the sidewalk's outer edge (walls, fences, hedges)
        bars, z = [], float(rng.uniform(0, 10))
        while z < _ZMAX:
            length = float(rng.uniform(5, 30))
            if rng.random() < P["p_barrier"]:
                kind = str(rng.choice(["wall", "fence", "fence", "vegetation"]))
                h = float(rng.uniform(0.8, 2.6) if kind != "vegetation" else rng.uniform(0.8, 1.8))
                bars.append(dict(z0=z, z1=z + length, kind=kind, height=h,
                                 variant=int(rng.integers(0, 1 << 16))))
            z += length + float(rng.uniform(2, 25))
        sides.append(dict(side=s, curb=curb, walk=walk, facade=facade, verge=verge,
                          segments=segs, barriers=bars, sidewalk=sw))

    # skyline: distant buildings / tree lines, piecewise constant over viewing direction
    sk, u = [], -2.0
    while u < 2.0:
        w = float(rng.uniform(0.02, 0.25))
        kind = "vegetation" if rng.random() < P["p_skyline_veg"] else "building"
        if rng.random() < 0.15:
            kind = "none"
        sk.append(dict(u0=u, u1=u + w, kind=kind,
                       height=float(rng.uniform(5, 40) if kind == "building" else rng.uniform(8, 25))))
        u += w

    objects = _sample_objects(rng, P, road, sides)
    hood = _u(rng, P["hood"]) if P["hood"] else 0.0
    return dict(domain=domain, camera=camera, road=road, sides=sides, skyline=sk,
                objects=objects, hood=hood)


def _sample_objects(rng, P, road, sides):
    """Objects as dicts {kind, x, z, w, h, variant} (x: centre, metres; z: depth)."""
    objs = []
    yaw = road["yaw"]
    lw = road["lane_width"]

    def road_x(x0, z):
        return x0 + yaw * z

    # moving traffic in the lanes
    lane_centres = [road["center"] - (i + 0.5) * lw for i in range(road["lanes_left"])]
    if road["lanes_left"] == 0:
        lane_centres += [road["center"]]
    else:
        lane_centres += [road["center"] + (i + 0.5) * lw for i in range(road["lanes_right"])]
    for xc in lane_centres:
        for z in _poisson_positions(rng, P["cars"] * 1.0, 6.0, _ZMAX, min_gap=8.0):
            r = rng.random()
            kind = "truck" if r < P["truck"] else ("bus" if r < P["truck"] + P["bus"] else "car")
            objs.append(_vehicle(rng, kind, road_x(xc + rng.normal(0, 0.25), z), z))
        if rng.random() < P["riders"] * 0.15:
            z = float(rng.uniform(5, 60))
            objs.append(dict(kind=str(rng.choice(["bicyclist", "motorcyclist"])),
                             x=road_x(xc + rng.uniform(-1, 1), z), z=z, w=0.7, h=1.7,
                             variant=int(rng.integers(0, 1 << 16))))
    for sd in sides:
        s = sd["side"]
        # parked cars along the curb
        for z in _poisson_positions(rng, P["parked"], 3.0, _ZMAX, min_gap=5.0):
            kind = "car" if rng.random() > P["truck"] * 0.5 else "truck"
            objs.append(_vehicle(rng, kind, road_x(sd["curb"] - s * 1.1, z), z))
        # riders at the road edge
        for z in _poisson_positions(rng, P["riders"], 4.0, 80.0):
            objs.append(dict(kind=str(rng.choice(["bicyclist", "bicyclist", "motorcyclist"])),
                             x=road_x(sd["curb"] - s * rng.uniform(0.5, 1.5), z), z=z, w=0.7,
                             h=1.7, variant=int(rng.integers(0, 1 << 16))))
        # pedestrians on the sidewalk (sometimes in groups)
        for z in _poisson_positions(rng, P["persons"], 3.0, 90.0):
            for k in range(1 + int(rng.random() < 0.3) * int(rng.integers(1, 4))):
                zz = z + rng.uniform(-1.5, 1.5) * k
                x = road_x(sd["curb"] + s * rng.uniform(0.4, sd["sidewalk"] - 0.3), zz)
                objs.append(dict(kind="person", x=x, z=float(max(zz, 2.5)), w=0.55,
                                 h=float(rng.uniform(1.55, 1.9)),
                                 variant=int(rng.integers(0, 1 << 16))))
        # parked bicycles
        for z in _poisson_positions(rng, P["parked_bikes"], 3.0, 60.0):
            objs.append(dict(kind="bicycle", x=road_x(sd["walk"] - s * 0.5, z), z=z, w=1.6,
                             h=1.0, variant=int(rng.integers(0, 1 << 16))))
        # poles: street lamps, traffic lights, signs
        z = float(rng.uniform(2, 15))
        while z < _ZMAX:
            r = rng.random()
            kind = ("traffic_light_pole" if r < P["p_light"] else
                    "sign_pole" if r < P["p_light"] + P["p_sign"] else "lamp_pole")
            h = float(rng.uniform(2.4, 3.2) if kind == "sign_pole" else rng.uniform(4.0, 8.0))
            objs.append(dict(kind=kind, x=road_x(sd["curb"] + s * 0.5, z), z=z, w=0.18, h=h,
                             variant=int(rng.integers(0, 1 << 16)), side=s))
            z += _u(rng, P["pole_spacing"])
        # trees between curb and facade
        for z in _poisson_positions(rng, P["trees"], 3.0, _ZMAX, min_gap=4.0):
            palm = rng.random() < P["p_palm"]
            h = float(rng.uniform(7, 14) if palm else rng.uniform(4, 10))
            x = sd["walk"] - s * 0.8 if sd["verge"] == "sidewalk" else \
                0.5 * (sd["walk"] + sd["facade"])
            objs.append(dict(kind="palm" if palm else "tree", x=road_x(x, z), z=z,
                             w=float(rng.uniform(2.5, 5.0)), h=h,
                             variant=int(rng.integers(0, 1 << 16))))
    if rng.random() < P["p_train"]:  # a tram crossing the street
        z = float(rng.uniform(12, 60))
        objs.append(dict(kind="train", x=road["center"] + float(rng.uniform(-6, 6)), z=z,
                         w=float(rng.uniform(14, 30)), h=float(rng.uniform(3.4, 4.0)),
                         variant=int(rng.integers(0, 1 << 16))))
    return objs


def _vehicle(rng, kind, x, z):
    if kind == "car":
        w, h = rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.7)
    elif kind == "truck":
        w, h = rng.uniform(2.3, 2.6), rng.uniform(2.8, 3.8)
    else:  # bus
        w, h = rng.uniform(2.5, 2.6), rng.uniform(3.0, 3.4)
    return dict(kind=kind, x=float(x), z=float(z), w=float(w), h=float(h),
                variant=int(rng.integers(0, 1 << 16)))


# ----------------------------------------------------------------------------------------
# Styles
# ----------------------------------------------------------------------------------------
_CLASS_KEYS = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light",
               "traffic_sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle", "ego_vehicle", "unlabeled")

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


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
class _Canvas:
    """Z-buffered label / colour / depth / instance maps ([H, W] each, colour [H, W, 3])."""

    def __init__(self, H, W):
        self.H, self.W = H, W
        self.depth = np.full((H, W), np.inf, np.float32)
        self.label = np.zeros((H, W), np.uint8)
        self.inst = np.zeros((H, W), np.int32)
        self.color = np.zeros((H, W, 3), np.float32)
        self.emit = None   # [H, W, 3] light sources, added after night darkening
        self.surface = np.zeros((H, W), np.uint8)  # 1 left facade, 2 right facade, 3 ground

    def paint(self, rows, cols, mask, depth, label, color, inst=0, surface=0):
        """Paint ``mask`` ([h, w] bool over the window rows x cols) where it is nearer."""
        zb = self.depth[rows, cols]
        d = np.broadcast_to(np.asarray(depth, np.float32), mask.shape)
        m = mask & (d < zb)
        if not m.any():
            return m
        zb[m] = d[m]
        self.label[rows, cols][m] = label
        self.inst[rows, cols][m] = inst
        self.surface[rows, cols][m] = surface
        c = np.asarray(color, np.float32)
        if c.ndim == 1:
            self.color[rows, cols][m] = c
        else:
            self.color[rows, cols][m] = np.broadcast_to(c, mask.shape + (3,))[m]
        return m

    def add_emit(self, rows, cols, mask, rgb):
        if self.emit is None:
            self.emit = np.zeros((self.H, self.W, 3), np.float32)
        self.emit[rows, cols][mask] += np.asarray(rgb, np.float32)


def _fractal_noise(rng, H, W, cell_px, octaves=3):
    """Smooth value noise in about [-1, 1], shape [H, W]; ``cell_px`` is the coarsest cell size."""
    out = np.zeros((H, W), np.float32)
    amp, total = 1.0, 0.0
    cell = max(cell_px, 1.0)
    for _ in range(octaves):
        gh, gw = int(H / cell) + 2, int(W / cell) + 2
        g = rng.standard_normal((gh, gw)).astype(np.float32)
        up = np.asarray(Image.fromarray(g, mode="F").resize(
            (int(gw * cell), int(gh * cell)), Image.BILINEAR))[:H, :W]
        out += amp * up
        total += amp
        amp *= 0.5
        cell = max(cell / 2.0, 1.0)
    return out / total


def render(layout: dict, style: dict, size=(128, 256), rng: np.random.Generator | None = None) -> dict:
    """Render one scene.

    Args:
        layout: from ``sample_layout``.
        style: from ``domain_style`` or ``random_style``.
        size: (H, W) in pixels.
        rng: generator for the per-pixel randomness (texture, noise, rain); default seed 0.

    Returns:
        dict with ``image`` uint8 [H, W, 3], ``label`` uint8 [H, W] (Cityscapes label ids),
        ``depth`` float32 [H, W] (metres along the optical axis, sky = ``SKY_DEPTH``) and
        ``instance`` int32 [H, W] (0 for stuff, 1..n for thing instances).
    """
    if rng is None:
        rng = np.random.default_rng(0)
    H, W = int(size[0]), int(size[1])
    cam = layout["camera"]
    roll = cam.get("roll", 0.0)
    if roll:
        # render a larger canvas, rotate it and crop the centre (no empty corners)
        a = math.radians(abs(roll))
        Hb = int(math.ceil(H * math.cos(a) + W * math.sin(a))) + 2
        Wb = int(math.ceil(W * math.cos(a) + H * math.sin(a))) + 2
        big = _render(layout, style, Hb, Wb, rng, f_ref=W)
        return _rotate_crop(big, roll, H, W)
    return _render(layout, style, H, W, rng, f_ref=W)


def _rotate_crop(out, roll, H, W):
    Hb, Wb = out["label"].shape
    r0, c0 = (Hb - H) // 2, (Wb - W) // 2
    res = {}
    for k, v in out.items():
        if k == "image":
            im = Image.fromarray(v).rotate(roll, resample=Image.BILINEAR)
            res[k] = np.asarray(im)[r0:r0 + H, c0:c0 + W].copy()
        else:
            mode = {"label": "L", "depth": "F", "instance": "I"}[k]
            arr = v.astype(np.int32) if k == "instance" else v
            im = Image.fromarray(arr, mode=mode).rotate(roll, resample=Image.NEAREST)
            res[k] = np.asarray(im)[r0:r0 + H, c0:c0 + W].astype(v.dtype).copy()
    return res


def _render(layout, style, H, W, rng, f_ref):
    cam, road = layout["camera"], layout["road"]
    pal = style["palette"]
    f = cam["focal"] * f_ref
    yh = cam["horizon"] * H
    cx = W / 2.0
    hc = cam["height"]
    cv = _Canvas(H, W)
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]       # [H, 1] row centres
    us = ((np.arange(W, dtype=np.float32) + 0.5 - cx) / f)[None, :]  # [1, W] ray slope X/Z

    # --- sky (background) ---
    t = np.clip((yh - ys) / max(yh, 1.0), 0, 1)                  # 0 at horizon, 1 at top
    sky = (np.asarray(pal["horizon"], np.float32) * (1 - t[..., None]) +
           np.asarray(pal["sky"], np.float32) * t[..., None])    # [H, 1, 3]
    cv.paint(slice(None), slice(None), np.ones((H, W), bool), SKY_DEPTH, _L["sky"],
             np.broadcast_to(sky, (H, W, 3)))

    # --- skyline ---
    D = _SKYLINE_DEPTH
    sk = layout["skyline"]
    u0 = np.array([s["u0"] for s in sk], np.float32)
    idx = np.clip(np.searchsorted(u0, us[0], side="right") - 1, 0, len(sk) - 1)
    heights = np.array([s["height"] if s["kind"] != "none" else 0.0 for s in sk], np.float32)[idx]
    kinds = np.array([_L["vegetation"] if s["kind"] == "vegetation" else _L["building"] for s in sk],
                     np.uint8)[idx]
    top = yh - f * (heights - hc) / D
    bot = yh + f * hc / D
    m = (ys >= top[None, :]) & (ys < bot) & (heights[None, :] > 0)
    far_b = np.asarray(pal["buildings"][0], np.float32) * 0.85
    far_v = np.asarray(pal["vegetation"], np.float32) * 0.85
    colr = np.where((kinds == _L["vegetation"])[:, None], far_v, far_b)[None, :, :]
    lab = kinds[None, :].repeat(H, 0)
    _paint_labels(cv, m, D, lab, np.broadcast_to(colr, (H, W, 3)))

    # --- ground plane ---
    r0 = int(max(math.floor(yh), 0))
    if r0 < H:
        _ground(cv, layout, style, ys[r0:], us, f, yh, hc, r0)

    # --- street sides: facades and barriers ---
    for sd in layout["sides"]:
        _side_plane(cv, sd, sd["segments"], sd["facade"], road["yaw"], style, ys, us, f, yh, hc,
                    surface=1 if sd["side"] < 0 else 2)
        _side_plane(cv, sd, sd["barriers"], sd["walk"], road["yaw"], style, ys, us, f, yh, hc,
                    surface=1 if sd["side"] < 0 else 2)

    # --- objects (billboards), instance ids in object order ---
    next_id = [1]
    night = style.get("night", 0.0)
    for ob in layout["objects"]:
        _object(cv, ob, pal, f, yh, hc, cx, next_id, night)

    # --- ego vehicle hood ---
    if layout.get("hood", 0.0) > 0:
        hood = layout["hood"]
        xn = (np.arange(W, dtype=np.float32) + 0.5) / W - 0.5
        top_row = H * (1 - hood) + H * hood * 0.8 * (2 * xn) ** 2        # [W]
        m = ys >= top_row[None, :]
        shade = np.clip(1.0 - (ys - top_row[None, :]) / max(H * hood, 1), 0.3, 1)[..., None]
        col = 0.12 + 0.25 * shade * np.asarray(pal["cars"][1], np.float32)
        cv.paint(slice(None), slice(None), m, 0.5, _L["ego_vehicle"], np.broadcast_to(col, (H, W, 3)))

    img = _shade(cv, style, rng, H, W, ys, yh)
    return dict(image=img, label=cv.label, depth=cv.depth, instance=cv.inst)


def _paint_labels(cv, mask, depth, labels, colors):
    """Paint with per-pixel labels (labels [H, W] uint8, colors [H, W, 3])."""
    d = np.broadcast_to(np.asarray(depth, np.float32), mask.shape)
    m = mask & (d < cv.depth)
    cv.depth[m] = d[m]
    cv.label[m] = labels[m]
    cv.inst[m] = 0
    cv.color[m] = colors[m]
    return m


def _ground(cv, layout, style, ys, us, f, yh, hc, r0):
    """Road, sidewalks, curbs, markings and verges on the plane Y = 0 (rows r0..H)."""
    road, pal = layout["road"], style["palette"]
    z = (f * hc / np.maximum(ys - yh, 1e-3)).astype(np.float32)          # [h, 1]
    z = np.minimum(z, SKY_DEPTH * 0.9)
    X = us * z                                                            # [h, W]
    xr = X - (road["center"] + road["yaw"] * z)                           # relative to centre
    left, right = road["left"], road["right"]
    h = X.shape[0]
    W = X.shape[1]
    left_side, right_side = layout["sides"]
    sw_l, sw_r = left_side["sidewalk"], right_side["sidewalk"]
    is_road = (xr >= -left) & (xr <= right)
    is_walk = ((xr < -left) & (xr >= -left - sw_l)) | ((xr > right) & (xr <= right + sw_r))
    labels = np.full(X.shape, _L["sidewalk"], np.uint8)
    labels[is_road] = _L["road"]
    col = np.empty(X.shape + (3,), np.float32)
    col[:] = np.asarray(pal["sidewalk"], np.float32)
    col[is_road] = np.asarray(pal["road"], np.float32)
    # verges beyond the sidewalks
    for sd, sel in ((left_side, xr < -left - sw_l), (right_side, xr > right + sw_r)):
        if sd["verge"] == "terrain":
            labels[sel] = _L["terrain"]
            col[sel] = np.asarray(pal["terrain"], np.float32)
    # curbs (sidewalk label, lighter)
    curb = ~is_road & ((np.abs(xr + left) < 0.2) | (np.abs(xr - right) < 0.2))
    col[curb] = np.asarray(pal["sidewalk"], np.float32) * 1.2
    # sidewalk paving slabs
    slab = is_walk & ((np.mod(z, 1.2) < 0.06) | (np.mod(xr, 1.2) < 0.06))
    col[slab] *= 0.85
    if road["markings"]:
        lw = road["lane_width"]
        mk = np.zeros(X.shape, bool)
        tol = 0.08 + 0.5 * z / f                                           # at least ~1/2 px
        n_l, n_r = road["lanes_left"], road["lanes_right"]
        dash = np.mod(z, 9.0) < 3.5
        for k in range(-n_l + 1, n_r):
            if n_l == 0:
                continue
            xk = k * lw
            if k == 0:
                mk |= (np.abs(xr - xk) < tol)
            else:
                mk |= (np.abs(xr - xk) < tol) & dash
        mk |= (np.abs(xr + left - 0.3) < tol) | (np.abs(xr - right + 0.3) < tol)
        cw = road.get("crosswalk")
        if cw is not None:
            mk |= (z > cw) & (z < cw + 3.0) & (np.mod(xr, 1.0) < 0.5)
        mk &= is_road
        col[mk] = np.asarray(pal["marking"], np.float32)
    # building shadows on the ground (sun from one side)
    if style.get("shadow", 0) > 0:
        s = style["sun_side"]
        sd = left_side if s < 0 else right_side
        segs = [g for g in sd["segments"] if g["kind"] != "none"]
        if segs:
            z0 = np.array([g["z0"] for g in segs], np.float32)
            z1 = np.array([g["z1"] for g in segs], np.float32)
            hh = np.array([g["height"] for g in segs], np.float32)
            i = np.clip(np.searchsorted(z0, z[:, 0], side="right") - 1, 0, len(segs) - 1)
            hz = np.where(z[:, 0] < z1[i], hh[i], 0.0)[:, None] * 0.6         # [h, 1]
            xf = sd["facade"] + road["yaw"] * z
            # a facade of height hz on side s shades the ground up to 0.6 * hz from it
            sh = (X - xf) * s > -hz
            col[sh] *= (1.0 - style["shadow"])
    rows = slice(r0, r0 + h)
    _paint_labels_window(cv, rows, labels, z, col, surface=3)


def _paint_labels_window(cv, rows, labels, depth, col, surface=0):
    d = np.broadcast_to(depth, labels.shape)
    zb = cv.depth[rows]
    m = d < zb
    zb[m] = d[m]
    cv.label[rows][m] = labels[m]
    cv.inst[rows][m] = 0
    cv.color[rows][m] = col[m]
    cv.surface[rows][m] = surface


def _side_plane(cv, sd, segments, x0, yaw, style, ys, us, f, yh, hc, surface):
    """A vertical plane X = x0 + yaw * Z parallel to the road, covered by ``segments``."""
    if not segments:
        return
    pal = style["palette"]
    s = sd["side"]
    denom = us[0] - yaw                                                    # [W]
    with np.errstate(divide="ignore", invalid="ignore"):
        zc = x0 / denom
    valid = np.isfinite(zc) & (zc > 0.5) & (zc < _ZMAX + 60)
    if not valid.any():
        return
    z0 = np.array([g["z0"] for g in segments], np.float32)
    z1 = np.array([g["z1"] for g in segments], np.float32)
    i = np.clip(np.searchsorted(z0, np.where(valid, zc, 0), side="right") - 1, 0, len(segments) - 1)
    inside = valid & (zc >= z0[i]) & (zc < z1[i])
    if not inside.any():
        return
    hgt = np.array([g["height"] for g in segments], np.float32)[i]
    kind_lab = np.array([_L[g["kind"]] for g in segments], np.uint8)[i]
    zc = np.where(inside, zc, 1.0).astype(np.float32)
    # height above ground of each pixel on the plane: v = hc - (y - yh) * z / f   [H, W]
    v = hc - (ys - yh) * zc[None, :] / f
    # hedges / vegetation get a ragged top
    rag = np.where(kind_lab == _L["vegetation"],
                   0.6 * np.sin(zc * 1.7 + (segments[0]["variant"] % 7)) +
                   0.4 * np.sin(zc * 4.1), 0.0)
    m = inside[None, :] & (v >= 0) & (v < (hgt + rag)[None, :])
    if not m.any():
        return
    rows = np.nonzero(m.any(1))[0]
    rs = slice(rows[0], rows[-1] + 1)
    m = m[rs]
    v = v[rs]
    # colours per segment
    seg_cols = []
    for g in segments:
        if g["kind"] == "building":
            c = pal["buildings"][g["variant"] % len(pal["buildings"])]
        elif g["kind"] == "vegetation":
            c = pal["vegetation"]
        elif g["kind"] == "wall":
            c = pal["wall"]
        else:
            c = pal["fence"]
        seg_cols.append(c)
    col = np.asarray(seg_cols, np.float32)[i][None, :, :].repeat(m.shape[0], 0)   # [h, W, 3]
    is_b = np.broadcast_to((kind_lab == _L["building"])[None, :], m.shape)
    # windows on buildings (facade coordinates: along the street = z, up = v)
    wx = np.array([g.get("window", (3.0, 3.2))[0] for g in segments], np.float32)[i][None, :]
    wy = np.array([g.get("window", (3.0, 3.2))[1] for g in segments], np.float32)[i][None, :]
    fu = np.mod(zc[None, :], wx) / wx
    fv = np.mod(v, wy) / wy
    win = is_b & (fu > 0.25) & (fu < 0.7) & (fv > 0.3) & (fv < 0.8) & (v > 3.0) & \
        (v < hgt[None, :] - 1.0)
    shop = is_b & (v < 2.8) & (v > 0.2) & (fu > 0.1) & (fu < 0.9)
    glass = np.asarray(pal["glass"], np.float32)
    col[win] = glass
    col[shop] = glass * 0.8 + 0.1
    # fences: vertical bars
    is_f = np.broadcast_to((kind_lab == _L["fence"])[None, :], m.shape)
    bars = is_f & (np.mod(zc[None, :] * 4.0, 1.0) < 0.5)
    col[bars] *= 0.6
    col[is_f & (np.abs(v - 0.9 * hgt[None, :]) < 0.08)] *= 0.6
    # roof edge
    col[is_b & (v > hgt[None, :] - 0.4)] *= 0.8
    labels = np.broadcast_to(kind_lab[None, :], m.shape)
    zmap = np.broadcast_to(zc[None, :], m.shape)
    zb = cv.depth[rs]
    mm = m & (zmap < zb)
    zb[mm] = zmap[mm]
    cv.label[rs][mm] = labels[mm]
    cv.inst[rs][mm] = 0
    cv.color[rs][mm] = col[mm]
    cv.surface[rs][mm] = surface
    if style.get("night", 0) > 0:
        lit = win & mm & (np.mod(np.floor(zc[None, :] / wx) * 7 + np.floor(v / wy) * 13
                                 + (segments[0]["variant"] % 5), 5) < 2)
        if lit.any():
            emit = np.zeros(m.shape + (3,), np.float32)
            emit[lit] = (1.0, 0.8, 0.45)
            if cv.emit is None:
                cv.emit = np.zeros((cv.H, cv.W, 3), np.float32)
            cv.emit[rs] += emit * 0.8


def _object(cv, ob, pal, f, yh, hc, cx, next_id, night):
    """Paint one camera-facing object; ``next_id`` is a 1-element list (instance counter)."""
    z = ob["z"]
    if z < 1.5:
        return
    s = f / z                                         # pixels per metre at this depth
    kind = ob["kind"]
    w, h = ob["w"], ob["h"]
    if kind in ("tree", "palm"):
        w_box = w
    elif kind in ("traffic_light_pole", "lamp_pole", "sign_pole"):
        w_box = 3.0
    else:
        w_box = w
    xc = cx + ob["x"] * s
    yb = yh + hc * s                                  # ground contact row
    x0 = int(math.floor(xc - w_box * s / 2 - 1))
    x1 = int(math.ceil(xc + w_box * s / 2 + 1))
    y0 = int(math.floor(yb - h * s - 1))
    y1 = int(math.ceil(yb + 1))
    H, W = cv.H, cv.W
    if x1 <= 0 or x0 >= W or y1 <= 0 or y0 >= H or w * s < 0.3:
        return
    X0, X1, Y0, Y1 = max(x0, 0), min(x1, W), max(y0, 0), min(y1, H)
    rows, cols = slice(Y0, Y1), slice(X0, X1)
    # local metric coordinates: lx (metres from the centre), ly (metres above the ground)
    lx = ((np.arange(X0, X1, dtype=np.float32) + 0.5) - xc)[None, :] / s
    ly = (yb - (np.arange(Y0, Y1, dtype=np.float32) + 0.5))[:, None] / s
    lx, ly = np.broadcast_arrays(lx, ly)
    var = ob["variant"]
    vrng = np.random.default_rng(var)
    def new_id():
        i = next_id[0]
        next_id[0] += 1
        return i

    if kind in ("car", "truck", "bus", "train"):
        body_col = np.asarray(pal["cars"][var % len(pal["cars"])], np.float32)
        if kind == "bus":
            body_col = np.asarray(pal["buildings"][var % len(pal["buildings"])], np.float32) * 0.9
        if kind == "train":
            body_col = np.asarray((0.85, 0.85, 0.8) if var % 2 else (0.8, 0.2, 0.15), np.float32)
        hw = w / 2
        if kind == "car":
            body = (np.abs(lx) < hw) & (ly > 0.15) & (ly < 0.55 * h)
            taper = hw * (0.8 - 0.25 * (ly - 0.55 * h) / (0.45 * h))
            cabin = (np.abs(lx) < taper) & (ly >= 0.55 * h) & (ly < h)
            mask = body | cabin
            wheels = (np.abs(np.abs(lx) - hw * 0.75) < 0.22 * hw) & (ly < 0.35) & (ly >= 0)
            mask = mask | wheels
            col = np.empty(mask.shape + (3,), np.float32)
            col[:] = body_col
            glass = cabin & (np.abs(lx) < taper - 0.08) & (ly < h - 0.08)
            col[glass] = np.asarray(pal["glass"], np.float32) * 0.7
            col[wheels & ~body] = 0.05
            col[body & (ly < 0.3)] *= 0.5     # bumper / shadow
            lamp = body & (np.abs(np.abs(lx) - hw * 0.8) < 0.15) & (np.abs(ly - 0.45 * h) < 0.08)
        else:
            mask = (np.abs(lx) < hw) & (ly > 0.25) & (ly < h)
            wheels = (np.abs(np.abs(lx) - hw * 0.75) < 0.2 * hw) & (ly < 0.5) & (ly >= 0)
            mask = mask | wheels
            col = np.empty(mask.shape + (3,), np.float32)
            col[:] = body_col
            if kind == "truck":
                glass = (np.abs(lx) < hw * 0.85) & (ly > 0.62 * h) & (ly < 0.85 * h) & (var % 2 == 0)
            elif kind == "bus":
                glass = (np.abs(lx) < hw * 0.9) & (ly > 0.45 * h) & (ly < 0.85 * h)
            else:
                glass = (np.mod(lx, 2.5) < 1.5) & (ly > 0.5 * h) & (ly < 0.8 * h)
            col[glass] = np.asarray(pal["glass"], np.float32) * 0.7
            col[wheels & (ly < 0.25)] = 0.05
            lamp = mask & (np.abs(np.abs(lx) - hw * 0.85) < 0.15) & (np.abs(ly - 0.6) < 0.1)
        shade = (0.75 + 0.35 * np.clip(ly / h, 0, 1))[..., None]
        col *= shade
        m = cv.paint(rows, cols, mask, z, _L[kind], col, inst=new_id())
        if night > 0 and lamp.any():
            cv.add_emit(rows, cols, lamp & m, (1.0, 0.15, 0.1) if var % 2 else (1.0, 0.95, 0.8))
        if kind in ("car", "truck", "bus"):
            # contact shadow on the ground just below the vehicle
            sh = (np.abs(lx) < hw * 1.05) & (ly < 0.0) & (ly > -0.15)
            sub = cv.label[rows, cols]
            shm = sh & ((sub == _L["road"]) | (sub == _L["sidewalk"]))
            cv.color[rows, cols][shm] *= 0.4
        return

    if kind in ("person", "bicyclist", "motorcyclist"):
        cl = pal["clothes"]
        top_c = np.asarray(cl[var % len(cl)], np.float32)
        bot_c = np.asarray(cl[(var // 7) % len(cl)], np.float32) * 0.7
        skin = np.asarray(pal["person"], np.float32)
        if kind == "person":
            hh = h
            head_r = 0.11 * hh / 1.75
            head = (lx ** 2 + (ly - (hh - head_r)) ** 2) < head_r ** 2
            torso = (np.abs(lx) < 0.2 * hh / 1.75) & (ly >= 0.82 * hh / 1.75 * 1.0) & (ly < hh - 2 * head_r)
            stride = 0.06 + 0.1 * ((var % 5) / 4)
            legs = (ly >= 0) & (ly < 0.85 * hh / 1.75) & \
                   (np.abs(np.abs(lx) - stride * (1 - ly / hh)) < 0.07)
            arms = (np.abs(np.abs(lx) - 0.24 * hh / 1.75) < 0.05) & (ly > 0.75) & (ly < hh - 2.2 * head_r)
            mask = head | torso | legs | arms
            col = np.empty(mask.shape + (3,), np.float32)
            col[:] = top_c
            col[legs] = bot_c
            col[head] = skin
            cv.paint(rows, cols, mask, z, _L["person"], col, inst=new_id())
            return
        # a rider on a bicycle / motorcycle, seen from the side (vehicle across the view)
        bike_kind = "bicycle" if kind == "bicyclist" else "motorcycle"
        wr = 0.33 if bike_kind == "bicycle" else 0.32
        half = 0.55 if bike_kind == "bicycle" else 0.7
        wheel_d = np.minimum((lx - half) ** 2 + (ly - wr) ** 2, (lx + half) ** 2 + (ly - wr) ** 2)
        if bike_kind == "bicycle":
            wheels = (wheel_d < wr ** 2) & (wheel_d > (wr - 0.06) ** 2)
            frame = (np.abs(ly - wr - 0.25 * (1 - np.abs(lx) / half)) < 0.05) & (np.abs(lx) < half)
        else:
            wheels = wheel_d < wr ** 2
            frame = (np.abs(lx) < half * 0.9) & (ly > wr * 0.8) & (ly < wr + 0.45)
        bike = wheels | frame
        seat = 0.85 if bike_kind == "bicycle" else 0.8
        torso = (np.abs(lx + 0.05) < 0.18) & (ly > seat) & (ly < seat + 0.6)
        head = ((lx - 0.02) ** 2 + (ly - seat - 0.72) ** 2) < 0.12 ** 2
        leg = (np.abs(lx - 0.1 * np.sin(var)) < 0.08) & (ly > wr) & (ly <= seat)
        arm = (np.abs(ly - (seat + 0.45) + 0.3 * (lx - 0.1)) < 0.05) & (lx > 0.0) & (lx < half * 0.8)
        rider = torso | head | leg | arm
        col_r = np.empty(rider.shape + (3,), np.float32)
        col_r[:] = top_c
        col_r[leg] = bot_c
        col_r[head] = skin if bike_kind == "bicycle" else np.asarray((0.1, 0.1, 0.1), np.float32)
        bike_c = np.asarray(pal["cars"][(var // 3) % len(pal["cars"])], np.float32) * 0.6 + 0.05
        # the bike slightly behind the rider so the rider's legs stay in front
        cv.paint(rows, cols, rider, z - 0.05, _L["rider"], col_r, inst=new_id())
        cv.paint(rows, cols, bike, z, _L[bike_kind], np.broadcast_to(bike_c, bike.shape + (3,)),
                 inst=new_id())
        return

    if kind == "bicycle":
        wr, half = 0.33, 0.55
        wheel_d = np.minimum((lx - half) ** 2 + (ly - wr) ** 2, (lx + half) ** 2 + (ly - wr) ** 2)
        wheels = (wheel_d < wr ** 2) & (wheel_d > (wr - 0.06) ** 2)
        frame = ((np.abs(ly - wr - 0.25 * (1 - np.abs(lx) / half)) < 0.05) & (np.abs(lx) < half)) | \
                ((np.abs(lx - 0.3) < 0.04) & (ly > wr) & (ly < 0.95))
        c = np.asarray(pal["cars"][var % len(pal["cars"])], np.float32) * 0.5 + 0.05
        cv.paint(rows, cols, wheels | frame, z, _L["bicycle"], c, inst=new_id())
        return

    if kind in ("traffic_light_pole", "lamp_pole", "sign_pole"):
        side = ob.get("side", 1)
        pw = 0.09
        pole = (np.abs(lx) < pw) & (ly >= 0) & (ly < h)
        pc = np.asarray(pal["pole"], np.float32)
        arm_len = 1.2 + (var % 3) * 0.4
        if kind == "lamp_pole":
            arm = (np.abs(ly - h) < 0.07) & ((lx * -side) > 0) & ((lx * -side) < arm_len)
            lamp = (np.abs(ly - h + 0.1) < 0.12) & (np.abs(lx * -side - arm_len) < 0.25)
            cv.paint(rows, cols, pole | arm | lamp, z, _L["pole"], pc)
            if night > 0:
                glow = ((lx + side * arm_len) ** 2 + (ly - h + 0.3) ** 2) < 0.3 ** 2
                cv.add_emit(rows, cols, glow, (1.0, 0.85, 0.55))
        elif kind == "traffic_light_pole":
            arm = (np.abs(ly - h) < 0.07) & ((lx * -side) > 0) & ((lx * -side) < arm_len)
            cv.paint(rows, cols, pole | arm, z, _L["pole"], pc)
            xl = -side * arm_len
            box = (np.abs(lx - xl) < 0.2) & (ly < h - 0.05) & (ly > h - 1.0)
            box2 = (np.abs(lx) < 0.2) & (ly < 0.6 * h + 0.9) & (ly > 0.6 * h)
            lights = box | box2
            col = np.empty(lights.shape + (3,), np.float32)
            col[:] = 0.08
            state = var % 3
            ly_l = np.where(box, ly - (h - 1.0), ly - 0.6 * h)
            bulb = lights & (np.abs(ly_l - (0.75 - 0.3 * state)) < 0.1)
            col[bulb] = ((0.9, 0.1, 0.1), (0.9, 0.7, 0.1), (0.1, 0.9, 0.3))[state]
            cv.paint(rows, cols, lights, z - 0.1, _L["traffic_light"], col)
            if night > 0:
                cv.add_emit(rows, cols, bulb, col[bulb].mean(0) if bulb.any() else (1, 1, 1))
        else:
            cv.paint(rows, cols, pole & (ly < h - 0.3), z, _L["pole"], pc)
            shape = var % 3
            cy = h - 0.35
            if shape == 0:
                sign = (lx ** 2 + (ly - cy) ** 2) < 0.35 ** 2
                c = (0.85, 0.1, 0.1)
            elif shape == 1:
                sign = (np.abs(lx) < 0.35) & (np.abs(ly - cy) < 0.3)
                c = (0.1, 0.3, 0.8)
            else:
                sign = (ly > cy - 0.3) & (ly < cy + 0.3) & (np.abs(lx) < 0.35 * (cy + 0.3 - ly) / 0.6)
                c = (0.9, 0.75, 0.1)
            col = np.empty(sign.shape + (3,), np.float32)
            col[:] = c
            inner = sign & (lx ** 2 + (ly - cy) ** 2 < 0.15 ** 2)
            col[inner] = 0.95
            cv.paint(rows, cols, sign, z - 0.05, _L["traffic_sign"], col)
        return

    if kind in ("tree", "palm"):
        vc = np.asarray(pal["vegetation"], np.float32)
        trunk_c = vc * 0.4 + 0.08
        if kind == "tree":
            r = w / 2
            cy = h - r
            ang = np.arctan2(ly - cy, lx)
            rr = r * (1 + 0.12 * np.sin(5 * ang + var) + 0.08 * np.sin(11 * ang + 2 * var))
            crown = (lx ** 2 + ((ly - cy) * 1.15) ** 2) < rr ** 2
            trunk = (np.abs(lx) < 0.15) & (ly >= 0) & (ly < cy)
        else:
            cy = h
            ang = np.arctan2(ly - cy, lx)
            rr = 2.0 * (0.35 + 0.65 * np.abs(np.cos(3.5 * ang + var)))
            crown = ((lx ** 2 + (ly - cy) ** 2) < rr ** 2) & (ly > cy - 1.8)
            trunk = (np.abs(lx - 0.1 * (ly / h) ** 2) < 0.14) & (ly >= 0) & (ly < cy)
        col = np.empty(crown.shape + (3,), np.float32)
        col[:] = trunk_c
        col[crown] = vc
        # lighter on top
        col[crown] *= (0.8 + 0.4 * np.clip((ly - (cy - w / 2)) / max(w, 1e-3), 0, 1))[crown][:, None]
        cv.paint(rows, cols, crown | trunk, z, _L["vegetation"], col)
        return
    raise ValueError(f"unknown object kind {kind!r}")


def _label_lut(style):
    """Per-label-id texture amplitude lookup table [256] float32."""
    lut = np.full(256, 0.1, np.float32)
    for k, v in style["texture"].items():
        lut[_L[k]] = v
    return lut


def _shade(cv, style, rng, H, W, ys, yh):
    """Texture, lighting, weather and sensor effects -> uint8 image [H, W, 3]."""
    img = cv.color
    lab = cv.label
    scale = H / 256.0
    cell = max(style["texture_cell"] * H, 1.0)
    n1 = _fractal_noise(rng, H, W, cell * 4, 3)
    n2 = rng.standard_normal((H, W)).astype(np.float32) * 0.5
    amp = _label_lut(style)[lab]
    tex = 1.0 + amp * (0.7 * n1 + 0.3 * n2)
    img *= tex[..., None]
    # clouds on the sky
    if style.get("clouds", 0) > 0:
        cl = _fractal_noise(rng, H, W, max(H / 6.0, 2.0), 3)
        skym = lab == _L["sky"]
        img[skym] += (style["clouds"] * np.clip(cl[skym] + 0.2, 0, None))[:, None]
    # sun: the facades facing the sun brighter, the others darker
    if style.get("shadow", 0) > 0:
        s = style["sun_side"]
        lit = 1 if s > 0 else 2   # the left facade faces right: lit by a sun on the right
        k = style["shadow"]
        img[cv.surface == lit] *= 1.0 + 0.25 * k
        img[cv.surface == (3 - lit)] *= 1.0 - 0.45 * k
    # global colour
    img *= style["brightness"]
    img *= np.asarray(style["tint"], np.float32)
    gray = img.mean(-1, keepdims=True)
    img = gray + style["saturation"] * (img - gray)
    m = img.mean()
    img = m + style["contrast"] * (img - m)
    img = np.clip(img, 0, None) ** style["gamma"]
    night = style.get("night", 0.0)
    if night > 0:
        img *= (1.0 - night)
        img[lab == _L["sky"]] = img[lab == _L["sky"]] * 0.3 + np.asarray((0.02, 0.03, 0.07), np.float32)
        if cv.emit is not None:
            glow = ndimage.gaussian_filter(cv.emit, sigma=(2 * scale + 0.5, 2 * scale + 0.5, 0))
            img += cv.emit * 0.8 + glow * 1.5
        # headlight pool on the road
        rr = np.clip((ys - yh) / max(H - yh, 1), 0, 1)
        xx = (np.arange(W, dtype=np.float32) + 0.5) / W - 0.5
        pool = np.exp(-(xx[None, :] / 0.25) ** 2) * rr ** 2 * 0.25
        img += pool[..., None] * np.asarray((1.0, 0.95, 0.8), np.float32) * \
            ((lab == _L["road"]) | (lab == _L["sidewalk"]))[..., None]
    fog = style.get("fog", 0.0)
    if fog > 0:
        t = np.exp(-fog * np.minimum(cv.depth, SKY_DEPTH))[..., None]
        fc = np.asarray(style["fog_color"], np.float32) * (0.25 if night > 0 else 1.0)
        img = img * t + fc * (1 - t)
    rain = style.get("rain", 0.0)
    if rain > 0:
        img *= 1.0 - 0.25 * rain
        drops = (rng.random((H, W)) < 0.01 * rain).astype(np.float32)
        L = max(int(8 * scale * 2), 3)
        streaks = ndimage.uniform_filter1d(drops, L, axis=0) * L
        streaks = np.roll(streaks, 0, axis=1)
        img += 0.25 * streaks[..., None]
    if style.get("glare", 0) > 0:
        g = np.clip(1 - ys / H * 2, 0, 1)[..., None] * style["glare"]
        img = img * (1 - g) + g * 0.9
    if style.get("vignette", 0) > 0:
        yy = (ys / H - 0.5) * 2
        xx = ((np.arange(W, dtype=np.float32) + 0.5) / W - 0.5)[None, :] * 2
        img *= (1 - style["vignette"] * 0.5 * (xx ** 2 + yy ** 2))[..., None]
    if style.get("blur", 0) > 0:
        sg = style["blur"] * scale * 2 / 2.0
        img = ndimage.gaussian_filter(img, sigma=(sg, sg, 0))
    if style.get("noise", 0) > 0:
        img += rng.standard_normal(img.shape).astype(np.float32) * style["noise"]
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if style.get("jpeg"):
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(style["jpeg"]))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB")).copy()
    return out


def render_sample(seed, domain: str | None = "gta", size=(128, 256), broad_style=False) -> dict:
    """Convenience: layout, style and render from one integer seed (or SeedSequence).

    ``domain=None`` with ``broad_style=True`` gives the broad pretraining distribution.
    Returns ``render``'s dict plus ``layout`` and ``style``.
    """
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng, domain=domain)
    style = random_style(rng) if (broad_style or domain is None) else domain_style(domain, rng)
    out = render(layout, style, size=size, rng=rng)
    out["layout"], out["style"] = layout, style
    return out
