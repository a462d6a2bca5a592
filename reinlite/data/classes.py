"""The 19 Cityscapes train classes, their palette, and every dataset's id -> train id mapping.

Train ids are 0..18 in the order of ``CLASSES``; ``IGNORE_INDEX`` (255) marks pixels that are
not evaluated. Each source of labels gets a lookup table ``lut`` (uint8 [256]) so that
``lut[ids]`` turns a label image of that dataset into train ids; every id a table does not
name maps to 255.

- GTA5 and Cityscapes (and ACDC) label ids: 7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
  26, 27, 28, 31, 32, 33 -> 0..18 (``CITYSCAPES_LUT``).
- SYNTHIA (RAND-CITYSCAPES) class ids (``SYNTHIA_LUT``).
- Mapillary Vistas v1.2 by class *name* (``MAPILLARY_V12_TO_TRAIN``, ``mapillary_lut``).
- BDD100K 10k masks are already train ids (``TRAIN_ID_LUT`` keeps 0..18, the rest -> 255).
"""
from __future__ import annotations

import numpy as np

__all__ = ["CLASSES", "NUM_CLASSES", "IGNORE_INDEX", "PALETTE", "CITYSCAPES_LABEL_IDS",
           "CITYSCAPES_LUT", "TRAIN_ID_LUT", "SYNTHIA_TO_TRAIN", "SYNTHIA_LUT",
           "MAPILLARY_V12", "MAPILLARY_V12_TO_TRAIN", "mapillary_lut", "make_lut", "map_ids",
           "colorize", "palette", "TRAIN_TO_LABEL_ID"]

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
           "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
           "bus", "train", "motorcycle", "bicycle")
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255

#: Cityscapes colours (RGB) per train id, uint8 [19, 3].
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)

#: Cityscapes / GTA5 label id of each train id.
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
TRAIN_TO_LABEL_ID = np.array(CITYSCAPES_LABEL_IDS, np.uint8)


def make_lut(mapping: dict) -> np.ndarray:
    """A uint8 [256] table: ``mapping`` {source id: train id}, every other id -> 255."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for k, v in mapping.items():
        lut[int(k)] = int(v)
    return lut


CITYSCAPES_LUT = make_lut({lid: t for t, lid in enumerate(CITYSCAPES_LABEL_IDS)})
TRAIN_ID_LUT = make_lut({t: t for t in range(NUM_CLASSES)})

#: SYNTHIA RAND-CITYSCAPES class ids: 1 sky, 2 building, 3 road, 4 sidewalk, 5 fence,
#: 6 vegetation, 7 pole, 8 car, 9 traffic sign, 10 pedestrian, 11 bicycle, 12 motorcycle,
#: 13 parking slot, 14 road work, 15 traffic light, 16 terrain, 17 rider, 18 truck, 19 bus,
#: 20 train, 21 wall, 22 lane marking (0 void). Parking, road work, lane marking -> ignore.
SYNTHIA_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
                    10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
SYNTHIA_LUT = make_lut(SYNTHIA_TO_TRAIN)

#: Mapillary Vistas v1.2: (name, RGB colour) per label id 0..65 (as in its config_v1.2.json).
MAPILLARY_V12 = (
    ("animal--bird", (165, 42, 42)), ("animal--ground-animal", (0, 192, 0)),
    ("construction--barrier--curb", (196, 196, 196)),
    ("construction--barrier--fence", (190, 153, 153)),
    ("construction--barrier--guard-rail", (180, 165, 180)),
    ("construction--barrier--other-barrier", (90, 120, 150)),
    ("construction--barrier--wall", (102, 102, 156)),
    ("construction--flat--bike-lane", (128, 64, 255)),
    ("construction--flat--crosswalk-plain", (140, 140, 200)),
    ("construction--flat--curb-cut", (170, 170, 170)),
    ("construction--flat--parking", (250, 170, 160)),
    ("construction--flat--pedestrian-area", (96, 96, 96)),
    ("construction--flat--rail-track", (230, 150, 140)),
    ("construction--flat--road", (128, 64, 128)),
    ("construction--flat--service-lane", (110, 110, 110)),
    ("construction--flat--sidewalk", (244, 35, 232)),
    ("construction--structure--bridge", (150, 100, 100)),
    ("construction--structure--building", (70, 70, 70)),
    ("construction--structure--tunnel", (150, 120, 90)),
    ("human--person", (220, 20, 60)), ("human--rider--bicyclist", (255, 0, 0)),
    ("human--rider--motorcyclist", (255, 0, 100)), ("human--rider--other-rider", (255, 0, 200)),
    ("marking--crosswalk-zebra", (200, 128, 128)), ("marking--general", (255, 255, 255)),
    ("nature--mountain", (64, 170, 64)), ("nature--sand", (230, 160, 50)),
    ("nature--sky", (70, 130, 180)), ("nature--snow", (190, 255, 255)),
    ("nature--terrain", (152, 251, 152)), ("nature--vegetation", (107, 142, 35)),
    ("nature--water", (0, 170, 30)), ("object--banner", (255, 255, 128)),
    ("object--bench", (250, 0, 30)), ("object--bike-rack", (100, 140, 180)),
    ("object--billboard", (220, 220, 220)), ("object--catch-basin", (220, 128, 128)),
    ("object--cctv-camera", (222, 40, 40)), ("object--fire-hydrant", (100, 170, 30)),
    ("object--junction-box", (40, 40, 40)), ("object--mailbox", (33, 33, 33)),
    ("object--manhole", (100, 128, 160)), ("object--phone-booth", (142, 0, 0)),
    ("object--pothole", (70, 100, 150)), ("object--street-light", (210, 170, 100)),
    ("object--support--pole", (153, 153, 153)),
    ("object--support--traffic-sign-frame", (128, 128, 128)),
    ("object--support--utility-pole", (0, 0, 80)), ("object--traffic-light", (250, 170, 30)),
    ("object--traffic-sign--back", (192, 192, 192)),
    ("object--traffic-sign--front", (220, 220, 0)), ("object--trash-can", (140, 140, 20)),
    ("object--vehicle--bicycle", (119, 11, 32)), ("object--vehicle--boat", (150, 0, 255)),
    ("object--vehicle--bus", (0, 60, 100)), ("object--vehicle--car", (0, 0, 142)),
    ("object--vehicle--caravan", (0, 0, 90)), ("object--vehicle--motorcycle", (0, 0, 230)),
    ("object--vehicle--on-rails", (0, 80, 100)), ("object--vehicle--other-vehicle", (128, 64, 64)),
    ("object--vehicle--trailer", (0, 0, 110)), ("object--vehicle--truck", (0, 0, 70)),
    ("object--vehicle--wheeled-slow", (0, 0, 192)), ("void--car-mount", (32, 32, 32)),
    ("void--ego-vehicle", (120, 10, 10)), ("void--unlabeled", (0, 0, 0)),
)

#: Mapillary v1.2 class name -> train id (every other name -> 255), as the release's converter
#: (tools/convert_datasets/mapillary2cityscape.py) maps the readable names: lanes, markings,
#: crosswalks and parking are road (manholes and potholes are ignored); curbs and pedestrian
#: areas sidewalk; poles and street lights pole; traffic-sign fronts, backs and frames are
#: traffic sign; terrain only (sand is ignored); all riders are rider; rail vehicles train.
MAPILLARY_V12_TO_TRAIN = {
    "construction--flat--road": 0, "construction--flat--bike-lane": 0,
    "construction--flat--service-lane": 0, "construction--flat--crosswalk-plain": 0,
    "marking--crosswalk-zebra": 0, "marking--general": 0, "construction--flat--parking": 0,
    "construction--flat--sidewalk": 1, "construction--barrier--curb": 1,
    "construction--flat--curb-cut": 1, "construction--flat--pedestrian-area": 1,
    "construction--structure--building": 2,
    "construction--barrier--wall": 3,
    "construction--barrier--fence": 4,
    "object--support--pole": 5, "object--support--utility-pole": 5,
    "object--street-light": 5,
    "object--traffic-light": 6,
    "object--traffic-sign--front": 7, "object--traffic-sign--back": 7,
    "object--support--traffic-sign-frame": 7,
    "nature--vegetation": 8,
    "nature--terrain": 9,
    "nature--sky": 10,
    "human--person": 11,
    "human--rider--bicyclist": 12, "human--rider--motorcyclist": 12,
    "human--rider--other-rider": 12,
    "object--vehicle--car": 13,
    "object--vehicle--truck": 14,
    "object--vehicle--bus": 15,
    "object--vehicle--on-rails": 16,
    "object--vehicle--motorcycle": 17,
    "object--vehicle--bicycle": 18,
}


def mapillary_lut(names=None) -> np.ndarray:
    """A uint8 [256] table from Mapillary label ids to train ids, mapped by class name.

    ``names``: the class name of each label id (e.g. from the download's config_v1.2.json,
    ``[c["name"] for c in config["labels"]]``); default: the v1.2 list ``MAPILLARY_V12``.
    """
    if names is None:
        names = [n for n, _ in MAPILLARY_V12]
    return make_lut({i: MAPILLARY_V12_TO_TRAIN[n] for i, n in enumerate(names)
                     if n in MAPILLARY_V12_TO_TRAIN})


#: train id -> a Mapillary v1.2 label id (used to write the benchmark in Mapillary's format).
TRAIN_TO_MAPILLARY = np.array([
    [i for i, (n, _) in enumerate(MAPILLARY_V12) if n == name][0] for name in (
        "construction--flat--road", "construction--flat--sidewalk",
        "construction--structure--building", "construction--barrier--wall",
        "construction--barrier--fence", "object--support--pole", "object--traffic-light",
        "object--traffic-sign--front", "nature--vegetation", "nature--terrain", "nature--sky",
        "human--person", "human--rider--bicyclist", "object--vehicle--car",
        "object--vehicle--truck", "object--vehicle--bus", "object--vehicle--on-rails",
        "object--vehicle--motorcycle", "object--vehicle--bicycle")], np.uint8)


def map_ids(ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a [256] lookup table to an integer label array [H, W] -> uint8 train ids [H, W].

    Ids outside 0..255 (16-bit sources) map to 255.
    """
    ids = np.asarray(ids)
    if ids.dtype == np.uint8:
        return lut[ids]
    out = np.full(ids.shape, IGNORE_INDEX, np.uint8)
    ok = (ids >= 0) & (ids < 256)
    out[ok] = lut[ids[ok].astype(np.int64)]
    return out


def palette(classes=CLASSES) -> np.ndarray:
    """uint8 [K, 3] colours for a class list (or a class count K): the Cityscapes palette for
    the 19 Cityscapes classes, else K distinct colours (hues spaced by the golden angle,
    alternating brightness; class 0 dark grey, as a background usually is)."""
    import colorsys

    names = list(classes) if not isinstance(classes, int) else None
    k = len(names) if names is not None else int(classes)
    if names == list(CLASSES) or (names is None and k == NUM_CLASSES):
        return PALETTE.copy()
    out = np.zeros((k, 3), np.uint8)
    for i in range(k):
        if i == 0:
            out[i] = (64, 64, 64)
            continue
        h = ((i - 1) * 0.618033988749895) % 1.0
        v = 0.95 if i % 2 else 0.7
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, 0.85, v)) * 255)
    return out


def colorize(train_ids, ignore_color=(0, 0, 0), colors: np.ndarray | None = None) -> np.ndarray:
    """Class ids [H, W] (numpy or torch) -> uint8 RGB [H, W, 3]; ``colors`` [K, 3] (default the
    Cityscapes palette, see :func:`palette`); ids >= K (and 255) get ``ignore_color``."""
    t = np.asarray(train_ids.cpu() if hasattr(train_ids, "cpu") else train_ids).astype(np.int64)
    colors = PALETTE if colors is None else np.asarray(colors, np.uint8)
    pal = np.concatenate([colors, np.tile(np.asarray(ignore_color, np.uint8), (256 - len(colors), 1))])
    return pal[np.clip(t, 0, 255)]
