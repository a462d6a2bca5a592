"""Scene layouts: *what* is in a picture, in metres in a camera-centred world.

``sample_layout(rng, domain)`` draws the camera (height, horizon, focal length, roll), the road
(lanes, sidewalks, yaw, markings, crosswalk), the two street sides (facades, walls, fences,
hedges with their heights and extents), a distant skyline and the objects (cars, trucks, buses,
a tram, persons, riders on bicycles / motorcycles, parked bicycles, poles with street lamps,
traffic lights and signs, trees), each domain with its own statistics (``_LAYOUT``).

World coordinates: X to the right, Y up (0 on the ground), Z forward from the camera (metres).
This module also holds the constants the style and the renderer share (label ids, domains,
depths).
"""
from __future__ import annotations

import numpy as np

__all__ = ["DOMAINS", "SOURCE_DOMAIN", "TARGET_DOMAINS", "LABEL_IDS", "SKY_DEPTH", "sample_layout"]

#: Cityscapes label ids the renderer writes (``unlabeled`` and ``ego_vehicle`` map to ignore).
LABEL_IDS = dict(unlabeled=0, ego_vehicle=1, road=7, sidewalk=8, building=11, wall=12, fence=13,
                 pole=17, traffic_light=19, traffic_sign=20, vegetation=21, terrain=22, sky=23,
                 person=24, rider=25, car=26, truck=27, bus=28, train=31, motorcycle=32,
                 bicycle=33)
_L = LABEL_IDS

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
