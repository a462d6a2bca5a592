"""Object painters: one small function per object kind, looked up in ``PAINTERS``.

Every object of a layout is a camera-facing billboard at depth ``z``. ``paint_object`` finds its
pixel window and hands the painter a :class:`Window`: the canvas, the window's rows and columns
and its metric coordinates: ``lx`` per column (metres right of the object's centre) and ``ly``
per row (metres above the ground). A painter draws masks in those coordinates (they broadcast
to the window) and paints them through the canvas's z-buffer, so any image size gives the same
object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from reinlite.data.synthetic.canvas import filled as _fill
from reinlite.data.synthetic.canvas import masked_scale as _scale
from reinlite.data.synthetic.canvas import masked_set as _set
from reinlite.data.synthetic.layout import LABEL_IDS as _L

__all__ = ["PAINTERS", "paint_object", "Window"]

_POLES = ("traffic_light_pole", "lamp_pole", "sign_pole")
_POLE_BOX_WIDTH = 3.0   # metres of window around a pole (its arm and lamp / light / sign)


@dataclass
class Window:
    """One object's pixel window on the canvas and its metric coordinates there."""

    cv: object              # the renderer's canvas (``paint``, ``add_emit``, ``label``, ``color``)
    rows: slice
    cols: slice
    lx: np.ndarray          # float32 [1, w] metres right of the object's centre
    ax: np.ndarray          # float32 [1, w] |lx| (most masks are symmetric: computed once)
    ly: np.ndarray          # float32 [h, 1] metres above the ground
    ob: dict                # the layout's object: kind, x, z, w, h, variant (, side)
    pal: dict               # the style's palette
    night: float
    next_id: list           # a 1-element list: the next instance id

    @property
    def shape(self) -> tuple:
        """(h, w): the window's size, the shape of the masks (lx and ly broadcast to it)."""
        return self.ly.shape[0], self.lx.shape[1]

    def new_id(self) -> int:
        i = self.next_id[0]
        self.next_id[0] += 1
        return i

    def paint(self, mask, depth, label, color, inst=0):
        return self.cv.paint(self.rows, self.cols, mask, depth, label, color, inst=inst)

    def add_emit(self, mask, rgb):
        self.cv.add_emit(self.rows, self.cols, mask, rgb)


def paint_object(cv, ob, pal, f, yh, hc, cx, next_id, night):
    """Paint one camera-facing object; ``next_id`` is a 1-element list (instance counter)."""
    kind = ob["kind"]
    painter = PAINTERS.get(kind)
    if painter is None:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {sorted(PAINTERS)}")
    z = ob["z"]
    if z < 1.5:
        return
    s = f / z                                         # pixels per metre at this depth
    w, h = ob["w"], ob["h"]
    w_box = _POLE_BOX_WIDTH if kind in _POLES else w
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
    # local metric coordinates: lx (metres from the centre), ly (metres above the ground)
    # (kept as a row and a column: every mask broadcasts them to [h, w], per pixel the same values)
    lx = ((cv.px[X0:X1] - xc) / s)[None, :]          # [1, w]
    ly = ((yb - cv.py[Y0:Y1]) / s)[:, None]          # [h, 1]
    painter(Window(cv, slice(Y0, Y1), slice(X0, X1), lx, np.abs(lx), ly, ob, pal, night, next_id))


# ----------------------------------------------------------------------------------------
# Vehicles: car, truck, bus, train (a tram crossing the street)
# ----------------------------------------------------------------------------------------
def _car_body(shape, ax, ly, hw, h, body_col, pal):
    """(mask, colour [h, w, 3], lamp) of a car seen from behind."""
    body = (ax < hw) & (ly > 0.15) & (ly < 0.55 * h)
    taper = hw * (0.8 - 0.25 * (ly - 0.55 * h) / (0.45 * h))
    cabin = (ax < taper) & (ly >= 0.55 * h) & (ly < h)
    mask = body | cabin
    wheels = (np.abs(ax - hw * 0.75) < 0.22 * hw) & (ly < 0.35) & (ly >= 0)
    mask = mask | wheels
    col = _fill(shape, body_col)
    glass = cabin & (ax < taper - 0.08) & (ly < h - 0.08)
    _set(col, glass, np.asarray(pal["glass"], np.float32) * 0.7)
    _set(col, wheels & ~body, 0.05)
    _scale(col, body & (ly < 0.3), 0.5)     # bumper / shadow
    lamp = body & (np.abs(ax - hw * 0.8) < 0.15) & (np.abs(ly - 0.45 * h) < 0.08)
    return mask, col, lamp


def _box_body(shape, lx, ax, ly, hw, h, body_col, pal, kind, var):
    """(mask, colour, lamp) of a box-shaped vehicle: truck, bus or train."""
    mask = (ax < hw) & (ly > 0.25) & (ly < h)
    wheels = (np.abs(ax - hw * 0.75) < 0.2 * hw) & (ly < 0.5) & (ly >= 0)
    mask = mask | wheels
    col = _fill(shape, body_col)
    if kind == "truck":
        glass = (ax < hw * 0.85) & (ly > 0.62 * h) & (ly < 0.85 * h) & (var % 2 == 0)
    elif kind == "bus":
        glass = (ax < hw * 0.9) & (ly > 0.45 * h) & (ly < 0.85 * h)
    else:
        glass = (np.mod(lx, 2.5) < 1.5) & (ly > 0.5 * h) & (ly < 0.8 * h)
    _set(col, glass, np.asarray(pal["glass"], np.float32) * 0.7)
    _set(col, wheels & (ly < 0.25), 0.05)
    lamp = mask & (np.abs(ax - hw * 0.85) < 0.15) & (np.abs(ly - 0.6) < 0.1)
    return mask, col, lamp


def _vehicle(win: Window):
    kind, var, pal, lx, ax, ly = win.ob["kind"], win.ob["variant"], win.pal, win.lx, win.ax, win.ly
    w, h, z = win.ob["w"], win.ob["h"], win.ob["z"]
    if kind == "bus":
        body_col = np.asarray(pal["buildings"][var % len(pal["buildings"])], np.float32) * 0.9
    elif kind == "train":
        body_col = np.asarray((0.85, 0.85, 0.8) if var % 2 else (0.8, 0.2, 0.15), np.float32)
    else:
        body_col = np.asarray(pal["cars"][var % len(pal["cars"])], np.float32)
    hw = w / 2
    if kind == "car":
        mask, col, lamp = _car_body(win.shape, ax, ly, hw, h, body_col, pal)
    else:
        mask, col, lamp = _box_body(win.shape, lx, ax, ly, hw, h, body_col, pal, kind, var)
    shade = (0.75 + 0.35 * np.clip(ly / h, 0, 1))[..., None]
    col *= shade
    m = win.paint(mask, z, _L[kind], col, inst=win.new_id())
    if win.night > 0 and lamp.any():
        win.add_emit(lamp & m, (1.0, 0.15, 0.1) if var % 2 else (1.0, 0.95, 0.8))
    if kind != "train":
        # contact shadow on the ground just below the vehicle
        sh = (ax < hw * 1.05) & (ly < 0.0) & (ly > -0.15)
        cv = win.cv
        sub = cv.label[win.rows, win.cols]
        shm = sh & ((sub == _L["road"]) | (sub == _L["sidewalk"]))
        _scale(cv.color[win.rows, win.cols], shm, 0.4)


# ----------------------------------------------------------------------------------------
# People: pedestrians and riders on bicycles / motorcycles
# ----------------------------------------------------------------------------------------
def _person(win: Window):
    var, pal, lx, ax, ly = win.ob["variant"], win.pal, win.lx, win.ax, win.ly
    cl = pal["clothes"]
    top_c = np.asarray(cl[var % len(cl)], np.float32)
    bot_c = np.asarray(cl[(var // 7) % len(cl)], np.float32) * 0.7
    skin = np.asarray(pal["person"], np.float32)
    hh = win.ob["h"]
    head_r = 0.11 * hh / 1.75
    head = (lx ** 2 + (ly - (hh - head_r)) ** 2) < head_r ** 2
    torso = (ax < 0.2 * hh / 1.75) & (ly >= 0.82 * hh / 1.75 * 1.0) & (ly < hh - 2 * head_r)
    stride = 0.06 + 0.1 * ((var % 5) / 4)
    legs = (ly >= 0) & (ly < 0.85 * hh / 1.75) & \
           (np.abs(ax - stride * (1 - ly / hh)) < 0.07)
    arms = (np.abs(ax - 0.24 * hh / 1.75) < 0.05) & (ly > 0.75) & (ly < hh - 2.2 * head_r)
    mask = head | torso | legs | arms
    col = _fill(win.shape, top_c)
    _set(col, legs, bot_c)
    _set(col, head, skin)
    win.paint(mask, win.ob["z"], _L["person"], col, inst=win.new_id())


def _rider(win: Window):
    """A rider on a bicycle / motorcycle, seen from the side (vehicle across the view)."""
    var, pal, lx, ax, ly = win.ob["variant"], win.pal, win.lx, win.ax, win.ly
    cl = pal["clothes"]
    top_c = np.asarray(cl[var % len(cl)], np.float32)
    bot_c = np.asarray(cl[(var // 7) % len(cl)], np.float32) * 0.7
    skin = np.asarray(pal["person"], np.float32)
    bike_kind = "bicycle" if win.ob["kind"] == "bicyclist" else "motorcycle"
    wr = 0.33 if bike_kind == "bicycle" else 0.32
    half = 0.55 if bike_kind == "bicycle" else 0.7
    wheel_d = np.minimum((lx - half) ** 2 + (ly - wr) ** 2, (lx + half) ** 2 + (ly - wr) ** 2)
    if bike_kind == "bicycle":
        wheels = (wheel_d < wr ** 2) & (wheel_d > (wr - 0.06) ** 2)
        frame = (np.abs(ly - wr - 0.25 * (1 - ax / half)) < 0.05) & (ax < half)
    else:
        wheels = wheel_d < wr ** 2
        frame = (ax < half * 0.9) & (ly > wr * 0.8) & (ly < wr + 0.45)
    bike = wheels | frame
    seat = 0.85 if bike_kind == "bicycle" else 0.8
    torso = (np.abs(lx + 0.05) < 0.18) & (ly > seat) & (ly < seat + 0.6)
    head = ((lx - 0.02) ** 2 + (ly - seat - 0.72) ** 2) < 0.12 ** 2
    leg = (np.abs(lx - 0.1 * np.sin(var)) < 0.08) & (ly > wr) & (ly <= seat)
    arm = (np.abs(ly - (seat + 0.45) + 0.3 * (lx - 0.1)) < 0.05) & (lx > 0.0) & (lx < half * 0.8)
    rider = torso | head | leg | arm
    col_r = _fill(win.shape, top_c)
    _set(col_r, leg, bot_c)
    _set(col_r, head, skin if bike_kind == "bicycle" else (0.1, 0.1, 0.1))
    bike_c = np.asarray(pal["cars"][(var // 3) % len(pal["cars"])], np.float32) * 0.6 + 0.05
    # the bike slightly behind the rider so the rider's legs stay in front
    z = win.ob["z"]
    win.paint(rider, z - 0.05, _L["rider"], col_r, inst=win.new_id())
    win.paint(bike, z, _L[bike_kind], bike_c, inst=win.new_id())


def _bicycle(win: Window):
    """A parked bicycle, seen from the side."""
    var, pal, lx, ax, ly = win.ob["variant"], win.pal, win.lx, win.ax, win.ly
    wr, half = 0.33, 0.55
    wheel_d = np.minimum((lx - half) ** 2 + (ly - wr) ** 2, (lx + half) ** 2 + (ly - wr) ** 2)
    wheels = (wheel_d < wr ** 2) & (wheel_d > (wr - 0.06) ** 2)
    frame = ((np.abs(ly - wr - 0.25 * (1 - ax / half)) < 0.05) & (ax < half)) | \
            ((np.abs(lx - 0.3) < 0.04) & (ly > wr) & (ly < 0.95))
    c = np.asarray(pal["cars"][var % len(pal["cars"])], np.float32) * 0.5 + 0.05
    win.paint(wheels | frame, win.ob["z"], _L["bicycle"], c, inst=win.new_id())


# ----------------------------------------------------------------------------------------
# Poles: street lamps, traffic lights and signs (an arm reaches over the road, -side)
# ----------------------------------------------------------------------------------------
def _pole_parts(win: Window):
    """(pole mask, pole colour, arm length, side) shared by the three pole kinds."""
    ax, ly, h = win.ax, win.ly, win.ob["h"]
    pole = (ax < 0.09) & (ly >= 0) & (ly < h)
    return pole, np.asarray(win.pal["pole"], np.float32), 1.2 + (win.ob["variant"] % 3) * 0.4, \
        win.ob.get("side", 1)


def _lamp_pole(win: Window):
    lx, ly, h, z = win.lx, win.ly, win.ob["h"], win.ob["z"]
    pole, pc, arm_len, side = _pole_parts(win)
    arm = (np.abs(ly - h) < 0.07) & ((lx * -side) > 0) & ((lx * -side) < arm_len)
    lamp = (np.abs(ly - h + 0.1) < 0.12) & (np.abs(lx * -side - arm_len) < 0.25)
    win.paint(pole | arm | lamp, z, _L["pole"], pc)
    if win.night > 0:
        glow = ((lx + side * arm_len) ** 2 + (ly - h + 0.3) ** 2) < 0.3 ** 2
        win.add_emit(glow, (1.0, 0.85, 0.55))


def _traffic_light_pole(win: Window):
    lx, ax, ly, h, z = win.lx, win.ax, win.ly, win.ob["h"], win.ob["z"]
    pole, pc, arm_len, side = _pole_parts(win)
    arm = (np.abs(ly - h) < 0.07) & ((lx * -side) > 0) & ((lx * -side) < arm_len)
    win.paint(pole | arm, z, _L["pole"], pc)
    xl = -side * arm_len
    box = (np.abs(lx - xl) < 0.2) & (ly < h - 0.05) & (ly > h - 1.0)
    box2 = (ax < 0.2) & (ly < 0.6 * h + 0.9) & (ly > 0.6 * h)
    lights = box | box2
    col = _fill(win.shape, 0.08)
    state = win.ob["variant"] % 3
    ly_l = np.where(box, ly - (h - 1.0), ly - 0.6 * h)
    bulb = lights & (np.abs(ly_l - (0.75 - 0.3 * state)) < 0.1)
    _set(col, bulb, ((0.9, 0.1, 0.1), (0.9, 0.7, 0.1), (0.1, 0.9, 0.3))[state])
    win.paint(lights, z - 0.1, _L["traffic_light"], col)
    if win.night > 0:
        win.add_emit(bulb, col[bulb].mean(0) if bulb.any() else (1, 1, 1))


_SIGN_COLOURS = ((0.85, 0.1, 0.1), (0.1, 0.3, 0.8), (0.9, 0.75, 0.1))   # round, square, triangle


def _sign_pole(win: Window):
    lx, ax, ly, h, z = win.lx, win.ax, win.ly, win.ob["h"], win.ob["z"]
    pole, pc, _, _ = _pole_parts(win)
    win.paint(pole & (ly < h - 0.3), z, _L["pole"], pc)
    form = win.ob["variant"] % 3
    cy = h - 0.35
    if form == 0:
        sign = (lx ** 2 + (ly - cy) ** 2) < 0.35 ** 2
    elif form == 1:
        sign = (ax < 0.35) & (np.abs(ly - cy) < 0.3)
    else:
        sign = (ly > cy - 0.3) & (ly < cy + 0.3) & (ax < 0.35 * (cy + 0.3 - ly) / 0.6)
    col = _fill(win.shape, _SIGN_COLOURS[form])
    inner = sign & (lx ** 2 + (ly - cy) ** 2 < 0.15 ** 2)
    _set(col, inner, 0.95)
    win.paint(sign, z - 0.05, _L["traffic_sign"], col)


# ----------------------------------------------------------------------------------------
# Trees: a round crown or a palm's star of fronds on a trunk
# ----------------------------------------------------------------------------------------
def _tree_crown(lx, ax, ly, w, h, var):
    r = w / 2
    cy = h - r
    ang = np.arctan2(ly - cy, lx)
    rr = r * (1 + 0.12 * np.sin(5 * ang + var) + 0.08 * np.sin(11 * ang + 2 * var))
    crown = (lx ** 2 + ((ly - cy) * 1.15) ** 2) < rr ** 2
    trunk = (ax < 0.15) & (ly >= 0) & (ly < cy)
    return crown, trunk, cy


def _palm_crown(lx, ax, ly, w, h, var):
    cy = h
    ang = np.arctan2(ly - cy, lx)
    rr = 2.0 * (0.35 + 0.65 * np.abs(np.cos(3.5 * ang + var)))
    crown = ((lx ** 2 + (ly - cy) ** 2) < rr ** 2) & (ly > cy - 1.8)
    trunk = (np.abs(lx - 0.1 * (ly / h) ** 2) < 0.14) & (ly >= 0) & (ly < cy)
    return crown, trunk, cy


def _tree(win: Window):
    lx, ly, w, h = win.lx, win.ly, win.ob["w"], win.ob["h"]
    crown_of = _tree_crown if win.ob["kind"] == "tree" else _palm_crown
    crown, trunk, cy = crown_of(lx, win.ax, ly, w, h, win.ob["variant"])
    vc = np.asarray(win.pal["vegetation"], np.float32)
    col = _fill(win.shape, vc * 0.4 + 0.08)   # the trunk
    _set(col, crown, vc)
    # lighter on top
    _scale(col, crown, (0.8 + 0.4 * np.clip((ly - (cy - w / 2)) / max(w, 1e-3), 0, 1))[..., None])
    win.paint(crown | trunk, win.ob["z"], _L["vegetation"], col)


#: object kind (``sample_layout``'s ``objects[i]["kind"]``) -> its painter
PAINTERS: dict[str, Callable[[Window], None]] = {
    "car": _vehicle, "truck": _vehicle, "bus": _vehicle, "train": _vehicle,
    "person": _person, "bicyclist": _rider, "motorcyclist": _rider, "bicycle": _bicycle,
    "lamp_pole": _lamp_pole, "traffic_light_pole": _traffic_light_pole, "sign_pole": _sign_pole,
    "tree": _tree, "palm": _tree,
}
