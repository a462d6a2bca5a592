"""The renderer: a small numpy z-buffer that turns a layout and a style into pixels and labels.

``render(layout, style, size=(H, W), rng=rng)`` paints a ground plane (road, sidewalks, curbs,
markings, verges), vertical street-side planes (facades, walls, fences, hedges), a distant
skyline and camera-facing billboards (the objects, ``painters.py``), each pixel keeping the
nearest surface; then ``_shade`` applies the style's texture, lighting, weather and sensor
effects. Geometry is in world units, so any output size gives the same scene: a ground point at
depth Z is seen at image row ``horizon*H + f*cam_height/Z`` with ``f = focal*W`` pixels.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

from reinlite.data.synthetic.canvas import Canvas, filled
from reinlite.data.synthetic.canvas import masked_scale as _scale
from reinlite.data.synthetic.canvas import masked_set as _set
from reinlite.data.synthetic.layout import _SKYLINE_DEPTH, _ZMAX, SKY_DEPTH, sample_layout
from reinlite.data.synthetic.layout import LABEL_IDS as _L
from reinlite.data.synthetic.painters import paint_object
from reinlite.data.synthetic.style import domain_style, random_style

__all__ = ["render", "render_sample"]


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
    ys = (np.arange(H, dtype=np.float32) + 0.5)[:, None]       # [H, 1] row centres
    us = ((np.arange(W, dtype=np.float32) + 0.5 - cx) / f)[None, :]  # [1, W] ray slope X/Z

    # --- sky (the background: every pixel starts as sky) ---
    t = np.clip((yh - ys) / max(yh, 1.0), 0, 1)                  # 0 at horizon, 1 at top
    sky = (np.asarray(pal["horizon"], np.float32) * (1 - t[..., None]) +
           np.asarray(pal["sky"], np.float32) * t[..., None])    # [H, 1, 3]
    cv = Canvas(H, W, SKY_DEPTH, _L["sky"], sky)

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
        paint_object(cv, ob, pal, f, yh, hc, cx, next_id, night)

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
    """Paint at one depth with per-pixel labels (labels [H, W] uint8, colors [H, W, 3])."""
    d = np.float32(depth)
    m = mask & (cv.depth > d)
    cv.depth[m] = d
    np.copyto(cv.label, labels, where=m)
    cv.inst[m] = 0
    _set(cv.color, m, colors)
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
    col = filled(X.shape, pal["sidewalk"])
    _set(col, is_road, pal["road"])
    # verges beyond the sidewalks
    for sd, sel in ((left_side, xr < -left - sw_l), (right_side, xr > right + sw_r)):
        if sd["verge"] == "terrain":
            labels[sel] = _L["terrain"]
            _set(col, sel, pal["terrain"])
    # curbs (sidewalk label, lighter)
    curb = ~is_road & ((np.abs(xr + left) < 0.2) | (np.abs(xr - right) < 0.2))
    _set(col, curb, np.asarray(pal["sidewalk"], np.float32) * 1.2)
    # sidewalk paving slabs
    slab = is_walk & ((np.mod(z, 1.2) < 0.06) | (np.mod(xr, 1.2) < 0.06))
    _scale(col, slab, 0.85)
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
        _set(col, mk, pal["marking"])
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
            _scale(col, sh, 1.0 - style["shadow"])
    rows = slice(r0, r0 + h)
    _paint_labels_window(cv, rows, labels, z, col, surface=3)


def _paint_labels_window(cv, rows, labels, depth, col, surface=0):
    """Paint full-width rows where nearer (labels [h, W], depth broadcastable to it, col [h, W, 3])."""
    zb = cv.depth[rows]
    m = zb > depth
    np.copyto(zb, depth, where=m)
    np.copyto(cv.label[rows], labels, where=m)
    cv.inst[rows][m] = 0
    _set(cv.color[rows], m, col)
    cv.surface[rows][m] = surface


def _side_plane(cv, sd, segments, x0, yaw, style, ys, us, f, yh, hc, surface):
    """A vertical plane X = x0 + yaw * Z parallel to the road, covered by ``segments``."""
    if not segments:
        return
    pal = style["palette"]
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
    cols = np.nonzero(inside)[0]
    if not len(cols):
        return
    # from here on only the columns the plane covers (cs): every value is per pixel or per column
    cs = slice(cols[0], cols[-1] + 1)
    inside, i, zc = inside[cs], i[cs], zc[cs]
    hgt = np.array([g["height"] for g in segments], np.float32)[i]
    kind_lab = np.array([_L[g["kind"]] for g in segments], np.uint8)[i]
    zc = np.where(inside, zc, 1.0).astype(np.float32)
    # height above ground of each pixel on the plane: v = hc - (y - yh) * z / f   [H, w]
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
    col = np.asarray(seg_cols, np.float32)[i][None, :, :].repeat(m.shape[0], 0)   # [h, w, 3]
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
    _set(col, win, glass)
    _set(col, shop, glass * 0.8 + 0.1)
    # fences: vertical bars
    is_f = np.broadcast_to((kind_lab == _L["fence"])[None, :], m.shape)
    bars = is_f & (np.mod(zc[None, :] * 4.0, 1.0) < 0.5)
    _scale(col, bars, 0.6)
    _scale(col, is_f & (np.abs(v - 0.9 * hgt[None, :]) < 0.08), 0.6)
    # roof edge
    _scale(col, is_b & (v > hgt[None, :] - 0.4), 0.8)
    labels = np.broadcast_to(kind_lab[None, :], m.shape)
    zmap = np.broadcast_to(zc[None, :], m.shape)
    zb = cv.depth[rs, cs]
    mm = m & (zb > zmap)
    np.copyto(zb, zmap, where=mm)
    np.copyto(cv.label[rs, cs], labels, where=mm)
    cv.inst[rs, cs][mm] = 0
    _set(cv.color[rs, cs], mm, col)
    cv.surface[rs, cs][mm] = surface
    if style.get("night", 0) > 0:
        lit = win & mm & (np.mod(np.floor(zc[None, :] / wx) * 7 + np.floor(v / wy) * 13
                                 + (segments[0]["variant"] % 5), 5) < 2)
        if lit.any():
            cv.add_emit(rs, cs, lit, np.asarray((1.0, 0.8, 0.45), np.float32) * 0.8)


def _label_lut(style):
    """Per-label-id texture amplitude lookup table [256] float32."""
    lut = np.full(256, 0.1, np.float32)
    for k, v in style["texture"].items():
        lut[_L[k]] = v
    return lut


def _rgb(a):
    """A per-pixel [H, W] (or [H, W, 1]) factor repeated over the 3 colour channels.

    ``img * _rgb(a)`` is ``img * a[..., None]`` value for value, but one contiguous loop instead
    of numpy's loop of length 3 per pixel for an operand broadcast over the channel axis.
    """
    a = a if a.ndim == 3 else a[..., None]
    return np.repeat(a, 3, -1)


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
    img *= _rgb(tex)
    # clouds on the sky
    if style.get("clouds", 0) > 0:
        cl = _fractal_noise(rng, H, W, max(H / 6.0, 2.0), 3)
        skym = lab == _L["sky"]
        np.add(img, (style["clouds"] * np.clip(cl + 0.2, 0, None))[..., None], out=img,
               where=_rgb(skym))
    # sun: the facades facing the sun brighter, the others darker
    if style.get("shadow", 0) > 0:
        s = style["sun_side"]
        lit = 1 if s > 0 else 2   # the left facade faces right: lit by a sun on the right
        k = style["shadow"]
        _scale(img, cv.surface == lit, 1.0 + 0.25 * k)
        _scale(img, cv.surface == (3 - lit), 1.0 - 0.45 * k)
    # global colour
    img *= style["brightness"]
    for c, gain in enumerate(np.asarray(style["tint"], np.float32)):   # (per channel: faster)
        img[..., c] *= gain
    # the channel mean, summed in the order img.mean(-1) sums (bit-identical, without the
    # slow reduction over a length-3 axis)
    gray = _rgb(((img[..., 0] + img[..., 1]) + img[..., 2]) / 3)
    img -= gray
    img *= style["saturation"]
    img += gray
    m = img.mean()
    img -= m
    img *= style["contrast"]
    img += m
    np.clip(img, 0, None, out=img)
    img **= style["gamma"]
    night = style.get("night", 0.0)
    if night > 0:
        img *= (1.0 - night)
        _set(img, lab == _L["sky"], img * 0.3 + np.asarray((0.02, 0.03, 0.07), np.float32))
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
        img += 0.25 * _rgb(streaks)
    if style.get("glare", 0) > 0:
        g = np.clip(1 - ys / H * 2, 0, 1)[..., None] * style["glare"]
        img = img * (1 - g) + g * 0.9
    if style.get("vignette", 0) > 0:
        yy = (ys / H - 0.5) * 2
        xx = ((np.arange(W, dtype=np.float32) + 0.5) / W - 0.5)[None, :] * 2
        img *= _rgb(1 - style["vignette"] * 0.5 * (xx ** 2 + yy ** 2))
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
