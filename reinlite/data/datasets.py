"""Segmentation datasets in the real folder layouts (the embedded benchmark uses the same ones).

Every dataset is a ``torch.utils.data.Dataset`` of pairs; ``ds[i]`` returns
``(image, mask)``: by default ``image`` float32 [3, H, W] in [0, 1] and ``mask`` int64
[H, W] train ids (0..18, 255 = ignore). A ``transform(image, mask)`` receives the raw arrays
(uint8 [H, W, 3] and uint8 [H, W] train ids) and returns what ``__getitem__`` returns; ``ds.load(i)``
gives those raw arrays. The training augmentation is ``reinlite.data.transforms.TrainAugment``,
called with a per-sample generator on ``ds.load(i)`` (not a dataset transform).

Layouts (``root`` is the folder you downloaded / converted):

=============  ==========================================================================
GTA5           images/00001.png, labels/00001.png (label ids; or 00001_labelTrainIds.png)
               split: all, or train/val/test from split.mat, or NAME from NAME.txt
SYNTHIA        RGB/0000000.png, GT/LABELS/0000000.png (16-bit, class in the first channel;
               or GT/LABELS/0000000_labelTrainIds.png)
Cityscapes     leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png,
               gtFine/{split}/{city}/{stem}_gtFine_labelIds.png (or _labelTrainIds.png)
BDD100K        images/10k/{split}/{stem}.jpg, labels/sem_seg/masks/{split}/{stem}.png
               (train ids; the older seg/images/{split}, seg/labels/{split}/{stem}_train_id.png
               layout is read too)
Mapillary      {training,validation}/images/{stem}.jpg,
               {training,validation}/v1.2/labels/{stem}.png (v1.2 ids, mapped by name through
               root/config_v1.2.json when present; or {stem}_labelTrainIds.png)
ACDC           rgb_anon/{condition}/{split}/{seq}/{stem}_rgb_anon.png,
               gt/{condition}/{split}/{seq}/{stem}_gt_labelIds.png (or _gt_labelTrainIds.png)
=============  ==========================================================================

Bad input fails loudly: a missing root or an empty layout names the expected layout, an image
without its label names the image (``missing="skip"`` skips them instead, with the count
logged and kept in ``ds.skipped``), a corrupt file or an image/label size mismatch names the
file. Ids that a table does not know become 255.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from reinlite.data import classes as C

__all__ = ["SegmentationFolder", "GTA5", "SYNTHIA", "Cityscapes", "BDD100K", "Mapillary",
           "ACDC", "read_image", "read_label", "build_dataset", "DATASETS"]

log = logging.getLogger(__name__)
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def read_image(path) -> np.ndarray:
    """An RGB image file -> uint8 [H, W, 3]; a corrupt / unreadable file raises naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def read_label(path) -> np.ndarray:
    """A single-channel label file -> integer ids [H, W] (uint8, or uint16/int32 for 16-bit).

    Palette PNGs give their indices (GTA5, Mapillary). A 16-bit RGB PNG (SYNTHIA) gives its
    first channel, read at full depth with pypng. RGB colour images are refused (they are
    colour visualisations, not ids).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode, bits = im.mode, im.info.get("bits")
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                arr = np.asarray(im)
                if mode == "I":
                    arr = arr.astype(np.int32)
                return arr
            is_png16 = (im.format == "PNG" and mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16)
        if is_png16:
            return _read_png16_first_channel(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read label {path}: {err}") from None
    raise ValueError(f"label {path} is a {mode} image; expected single-channel ids "
                     "(did you pass a colour visualisation instead of the id image?)")


def _png_bit_depth(path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) >= 25 and head[:8] == b"\x89PNG\r\n\x1a\n" else 8


def _read_png16_first_channel(path) -> np.ndarray:
    import png  # pypng: Pillow truncates 16-bit RGB to 8 bits

    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = info["planes"]
    arr = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, planes)
    return arr[..., 0]


class SegmentationFolder(torch.utils.data.Dataset):
    """Image / label file pairs with a lookup table to train ids.

    Args:
        pairs: [(image_path, label_path, lut)] where ``lut`` (uint8 [256]) maps the label
            file's ids to train ids.
        transform: ``f(image uint8 [H, W, 3], mask uint8 [H, W]) -> anything``; default
            gives (float32 [3, H, W] in [0, 1], int64 [H, W]).
        name: shown in messages.
    """

    #: the names of the label ids it returns (the real layouts map to the 19 Cityscapes train ids)
    label_names = C.CLASSES

    def __init__(self, pairs, transform: Optional[Callable] = None, name: str = "dataset",
                 skipped: int = 0):
        self.pairs = list(pairs)
        self.transform = transform
        self.name = name
        self.skipped = skipped

    def __len__(self):
        return len(self.pairs)

    def load(self, i):
        """The i-th pair as arrays: (uint8 [H, W, 3], uint8 [H, W] train ids)."""
        img_path, lab_path, lut = self.pairs[i]
        img = read_image(img_path)
        ids = read_label(lab_path)
        if img.shape[:2] != ids.shape[:2]:
            raise ValueError(f"{self.name}: image {img_path} is {img.shape[1]}x{img.shape[0]} "
                             f"but its label {lab_path} is {ids.shape[1]}x{ids.shape[0]} (WxH); "
                             "convert the dataset first (data_scripts/convert_*.py) to fix sizes")
        return img, C.map_ids(ids, lut)

    def __getitem__(self, i):
        img, mask = self.load(i)
        if self.transform is not None:
            return self.transform(img, mask)
        return (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255),
                torch.from_numpy(mask.astype(np.int64)))

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, skipped={self.skipped})"


def _check_root(root, name, layout):
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name} root {str(root)!r} not found; expected layout:\n{layout}")
    return root


def _pairs_or_fail(cands, name, layout, root, missing):
    """cands: [(image, [label candidates...], lut per candidate)] -> pairs; handles missing."""
    if not cands:
        raise FileNotFoundError(f"{name}: no images found under {str(root)!r}; expected layout:\n{layout}")
    pairs, lost = [], []
    for img, labs in cands:
        for lab, lut in labs:
            if Path(lab).is_file():
                pairs.append((str(img), str(lab), lut))
                break
        else:
            lost.append((img, labs[-1][0]))
    if lost:
        if missing == "skip":
            log.warning("%s: skipped %d image(s) without a label (first: %s)", name, len(lost), lost[0][0])
        else:
            first = "\n".join(f"  {i} (expected {l})" for i, l in lost[:5])
            raise FileNotFoundError(f"{name}: {len(lost)} image(s) without a label:\n{first}\n"
                                    "pass missing='skip' to skip them (the count is reported)")
    return pairs, len(lost)


def _images(folder: Path, suffix: str = "", recursive=False):
    it = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTS and p.name.endswith(suffix)
                  and p.is_file())


class GTA5(SegmentationFolder):
    """GTA5 (Richter et al. 2016), https://download.visinf.tu-darmstadt.de/data/from_games/.

    ``split``: "all" (default), "train" / "val" / "test" (from the official split.mat), or any
    NAME with a NAME.txt in root listing image stems one per line (the benchmark writes
    train.txt and val.txt).
    """
    LAYOUT = ("  ROOT/images/00001.png ...\n  ROOT/labels/00001.png ... (label ids, palette PNG;"
              " or labels/00001_labelTrainIds.png from convert_gta5.py)\n"
              "  ROOT/split.mat or ROOT/NAME.txt (optional splits)")

    def __init__(self, root, split="all", transform=None, missing="error"):
        root = _check_root(root, "GTA5", self.LAYOUT.replace("ROOT", str(root)))
        imgs = _images(root / "images") if (root / "images").is_dir() else []
        if split != "all":
            stems = set(self.split_stems(root, split))
            imgs = [p for p in imgs if p.stem in stems]
        cands = [(p, [(root / "labels" / f"{p.stem}_labelTrainIds.png", C.TRAIN_ID_LUT),
                      (root / "labels" / f"{p.stem}.png", C.CITYSCAPES_LUT)]) for p in imgs]
        pairs, lost = _pairs_or_fail(cands, "GTA5", self.LAYOUT.replace("ROOT", str(root)), root, missing)
        super().__init__(pairs, transform, f"GTA5[{split}]", lost)

    @staticmethod
    def split_stems(root, split) -> list:
        root = Path(root)
        txt = root / f"{split}.txt"
        if txt.is_file():
            return [s.strip() for s in txt.read_text().splitlines() if s.strip()]
        mat = root / "split.mat"
        if mat.is_file() and split in ("train", "val", "test"):
            from scipy.io import loadmat

            ids = np.asarray(loadmat(mat)[f"{split}Ids"]).ravel()
            return [f"{int(i):05d}" for i in ids]
        raise FileNotFoundError(f"GTA5: split {split!r} needs {txt} or {mat} (keys trainIds/valIds/testIds)")


class SYNTHIA(SegmentationFolder):
    """SYNTHIA-RAND-CITYSCAPES (Ros et al. 2016), https://synthia-dataset.net/downloads/."""
    LAYOUT = ("  ROOT/RGB/0000000.png ...\n  ROOT/GT/LABELS/0000000.png ... (16-bit, class id in"
              " the first channel; or GT/LABELS/0000000_labelTrainIds.png from convert_synthia.py)")

    def __init__(self, root, transform=None, missing="error"):
        layout = self.LAYOUT.replace("ROOT", str(root))
        root = _check_root(root, "SYNTHIA", layout)
        imgs = _images(root / "RGB") if (root / "RGB").is_dir() else []
        lab = root / "GT" / "LABELS"
        cands = [(p, [(lab / f"{p.stem}_labelTrainIds.png", C.TRAIN_ID_LUT),
                      (lab / f"{p.stem}.png", C.SYNTHIA_LUT)]) for p in imgs]
        pairs, lost = _pairs_or_fail(cands, "SYNTHIA", layout, root, missing)
        super().__init__(pairs, transform, "SYNTHIA", lost)


class Cityscapes(SegmentationFolder):
    """Cityscapes (Cordts et al. 2016), https://www.cityscapes-dataset.com (leftImg8bit + gtFine)."""
    LAYOUT = ("  ROOT/leftImg8bit/SPLIT/CITY/CITY_000000_000019_leftImg8bit.png ...\n"
              "  ROOT/gtFine/SPLIT/CITY/CITY_000000_000019_gtFine_labelIds.png ... "
              "(or _gtFine_labelTrainIds.png)")

    def __init__(self, root, split="val", transform=None, missing="error"):
        layout = self.LAYOUT.replace("ROOT", str(root)).replace("SPLIT", split)
        root = _check_root(root, "Cityscapes", layout)
        d = root / "leftImg8bit" / split
        imgs = _images(d, "_leftImg8bit.png", recursive=True) if d.is_dir() else []
        cands = []
        for p in imgs:
            stem = p.name[: -len("_leftImg8bit.png")]
            g = root / "gtFine" / split / p.parent.name
            cands.append((p, [(g / f"{stem}_gtFine_labelTrainIds.png", C.TRAIN_ID_LUT),
                              (g / f"{stem}_gtFine_labelIds.png", C.CITYSCAPES_LUT)]))
        pairs, lost = _pairs_or_fail(cands, "Cityscapes", layout, root, missing)
        super().__init__(pairs, transform, f"Cityscapes[{split}]", lost)


class BDD100K(SegmentationFolder):
    """BDD100K 10k semantic segmentation (Yu et al. 2020), https://bdd-data.berkeley.edu."""
    LAYOUT = ("  ROOT/images/10k/SPLIT/STEM.jpg ...\n  ROOT/labels/sem_seg/masks/SPLIT/STEM.png ..."
              " (train ids)\n  or the older ROOT/seg/images/SPLIT/STEM.jpg + "
              "ROOT/seg/labels/SPLIT/STEM_train_id.png")

    def __init__(self, root, split="val", transform=None, missing="error"):
        layout = self.LAYOUT.replace("ROOT", str(root)).replace("SPLIT", split)
        root = _check_root(root, "BDD100K", layout)
        new, old = root / "images" / "10k" / split, root / "seg" / "images" / split
        cands = []
        if new.is_dir():
            m = root / "labels" / "sem_seg" / "masks" / split
            cands = [(p, [(m / f"{p.stem}.png", C.TRAIN_ID_LUT)]) for p in _images(new)]
        elif old.is_dir():
            m = root / "seg" / "labels" / split
            cands = [(p, [(m / f"{p.stem}_train_id.png", C.TRAIN_ID_LUT)]) for p in _images(old)]
        pairs, lost = _pairs_or_fail(cands, "BDD100K", layout, root, missing)
        super().__init__(pairs, transform, f"BDD100K[{split}]", lost)


class Mapillary(SegmentationFolder):
    """Mapillary Vistas v1.2 (Neuhold et al. 2017), https://www.mapillary.com/dataset/vistas.

    ``split``: "validation" (default) or "training". Label ids are mapped to train ids by
    class name, using root/config_v1.2.json when present (else the built-in v1.2 list).
    """
    LAYOUT = ("  ROOT/SPLIT/images/STEM.jpg ...\n  ROOT/SPLIT/v1.2/labels/STEM.png ... (v1.2 ids,"
              " palette PNG; or STEM_labelTrainIds.png from convert_mapillary.py)\n"
              "  ROOT/config_v1.2.json (optional: class names per id)")

    def __init__(self, root, split="validation", transform=None, missing="error"):
        layout = self.LAYOUT.replace("ROOT", str(root)).replace("SPLIT", split)
        root = _check_root(root, "Mapillary", layout)
        lut = C.mapillary_lut(self.class_names(root))
        d = root / split / "images"
        lab = root / split / "v1.2" / "labels"
        cands = [(p, [(lab / f"{p.stem}_labelTrainIds.png", C.TRAIN_ID_LUT),
                      (lab / f"{p.stem}.png", lut)]) for p in (_images(d) if d.is_dir() else [])]
        pairs, lost = _pairs_or_fail(cands, "Mapillary", layout, root, missing)
        super().__init__(pairs, transform, f"Mapillary[{split}]", lost)

    @staticmethod
    def class_names(root):
        cfg = Path(root) / "config_v1.2.json"
        if not cfg.is_file():
            return None
        try:
            return [c["name"] for c in json.loads(cfg.read_text())["labels"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read class names from {cfg}: {err!r}") from None


class ACDC(SegmentationFolder):
    """ACDC (Sakaridis et al. 2021), https://acdc.vision.ee.ethz.ch (rgb_anon + gt).

    ``conditions``: subset of fog, night, rain, snow (default: all present).
    """
    LAYOUT = ("  ROOT/rgb_anon/CONDITION/SPLIT/SEQ/SEQ_frame_000000_rgb_anon.png ...\n"
              "  ROOT/gt/CONDITION/SPLIT/SEQ/SEQ_frame_000000_gt_labelIds.png ... "
              "(or _gt_labelTrainIds.png)")

    def __init__(self, root, split="val", conditions: Sequence[str] = ("fog", "night", "rain", "snow"),
                 transform=None, missing="error"):
        layout = self.LAYOUT.replace("ROOT", str(root)).replace("SPLIT", split)
        root = _check_root(root, "ACDC", layout)
        cands = []
        for cond in conditions:
            d = root / "rgb_anon" / cond / split
            for p in (_images(d, "_rgb_anon.png", recursive=True) if d.is_dir() else []):
                stem = p.name[: -len("_rgb_anon.png")]
                g = root / "gt" / cond / split / p.parent.name
                cands.append((p, [(g / f"{stem}_gt_labelTrainIds.png", C.TRAIN_ID_LUT),
                                  (g / f"{stem}_gt_labelIds.png", C.CITYSCAPES_LUT)]))
        pairs, lost = _pairs_or_fail(cands, "ACDC", layout, root, missing)
        super().__init__(pairs, transform, f"ACDC[{split}]", lost)


DATASETS = {"gta5": GTA5, "synthia": SYNTHIA, "cityscapes": Cityscapes, "bdd100k": BDD100K,
            "mapillary": Mapillary, "acdc": ACDC}


def build_dataset(name: str, root, **kwargs) -> SegmentationFolder:
    """``build_dataset("cityscapes", root, split="val", transform=...)`` by lower-case name."""
    try:
        cls = DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None
    return cls(root, **kwargs)
