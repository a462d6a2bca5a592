"""Your own data as a folder of pairs: ``images/`` and ``labels/`` matched by file stem.

    my_data/
        classes.json          ["background", "crack", "rust"]   (optional: or data.classes)
        train/images/0001.jpg   train/labels/0001.png   (class ids 0..K-1, 255 = ignore)
        val/images/...          val/labels/...

``data.kind=pairs data.root=my_data`` trains on ``my_data/train`` (``data.source_split``; a
root that holds images/ itself is used as it is) and evaluates each target: a sub-folder
(``"val"``), ``"PATH:SPLIT"`` or a folder path. Labels are single-channel images (PNG, BMP or
TIFF: lossless; a JPEG label is refused) whose pixel values are class ids. Bad input fails
naming the file: an image without a label, a label id outside 0..K-1 (255 excepted), an image
and label of different sizes. Items are ``(float image [3, H, W] in [0, 1], int64 label
[H, W])`` like the other folder datasets; ``ds.load(i)`` gives the raw uint8 arrays.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from reinlite.data.classes import IGNORE_INDEX
from reinlite.data.datasets import IMAGE_EXTS, SegmentationFolder, read_image, read_label

__all__ = ["PairsDataset", "pairs_dataset", "pairs_classes", "read_classes_file", "check_label",
           "LABEL_EXTS"]

LABEL_EXTS = (".png", ".bmp", ".tif", ".tiff")
LAYOUT = ("  ROOT/images/NAME.jpg|.png ...\n  ROOT/labels/NAME.png ... (class ids 0..K-1, 255 = "
          "ignore; same stem as the image)\n  ROOT/classes.json (optional: the class names)")


def check_label(label: np.ndarray, image_hw: Sequence[int], num_classes: Optional[int],
                where: str) -> np.ndarray:
    """A label map [H, W] checked against its image and the class count -> uint8 [H, W].

    Raises ValueError naming ``where`` for a size mismatch (both sizes, W x H) and for ids
    outside 0..K-1 other than 255 (the values and K)."""
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(f"{where}: the label has shape {label.shape}; expected one channel of class "
                         "ids [H, W] (a colour visualisation is not a label)")
    if tuple(label.shape) != tuple(image_hw[:2]):
        raise ValueError(f"{where}: the image is {image_hw[1]}x{image_hw[0]} but its label is "
                         f"{label.shape[1]}x{label.shape[0]} (W x H); they must be the same size")
    if num_classes is not None:
        bad = ((label < 0) | (label >= num_classes)) & (label != IGNORE_INDEX)
        if bad.any():
            values = np.unique(label[bad])
            shown = ", ".join(str(int(v)) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            raise ValueError(f"{where}: label id(s) {shown} outside 0..{num_classes - 1}: there are "
                             f"K = {num_classes} classes (255 = ignore); fix the label or data.classes")
    return label.astype(np.uint8)


def read_classes_file(path) -> list:
    """Class names from a JSON file: a list of names, {"classes": [...]} or {"0": name, ...}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read class names from {path}: {err}") from None
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if isinstance(data, dict):  # id2label
        try:
            ids = sorted(int(k) for k in data)
        except ValueError:
            ids = None
        if ids is None or ids != list(range(len(ids))):
            raise ValueError(f"{path}: an id -> name object must have the keys 0..K-1, got {list(data)[:6]}")
        data = [data[str(i)] if str(i) in data else data[i] for i in ids]
    if not isinstance(data, list) or not data or not all(isinstance(n, str) for n in data):
        raise ValueError(f"{path}: expected a JSON list of class names, e.g. [\"background\", \"crack\"]")
    return data


def pairs_classes(root) -> Optional[list]:
    """The names in ``root/classes.json`` (or its parent's, for ROOT/train/images), or None."""
    from reinlite.data.pipeline import resolve_path

    root = resolve_path(root)
    for folder in (root, root.parent):
        if (folder / "classes.json").is_file():
            return read_classes_file(folder / "classes.json")
    return None


class PairsDataset(SegmentationFolder):
    """Image / label pairs of class ids (no lookup table): ``load(i)`` checks sizes and ids."""

    def __init__(self, pairs, num_classes: Optional[int] = None, class_names=None, name="pairs",
                 transform=None):
        super().__init__(pairs, transform, name)
        self.num_classes = num_classes
        self.label_names = tuple(class_names) if class_names else None

    def load(self, i):
        img_path, lab_path = self.pairs[i][:2]
        img = read_image(img_path)
        label = check_label(read_label(lab_path), img.shape, self.num_classes,
                            f"{self.name}: {lab_path} (label of {img_path})")
        return img, label


def _folder(root: Path, split: Optional[str], flat_ok: bool) -> Path:
    if split and (root / split / "images").is_dir():
        return root / split
    if (root / "images").is_dir() and (flat_ok or not split):
        return root
    tried = [str(root / split / "images")] if split else []
    raise FileNotFoundError(f"pairs: no images/ folder at {' or '.join(tried + [str(root / 'images')])}; "
                            f"expected layout:\n{LAYOUT.replace('ROOT', str(root))}")


def pairs_dataset(root, split: Optional[str] = None, class_names=None, name: str = "pairs",
                  transform=None, flat_ok: bool = True) -> PairsDataset:
    """The pairs of ``root/split`` (or of ``root`` when it holds images/ itself and
    ``flat_ok``: the source may be a flat folder, a target split must exist)."""
    from reinlite.data.pipeline import resolve_path

    base = resolve_path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"pairs: folder {str(root)!r} not found; expected layout:\n"
                                f"{LAYOUT.replace('ROOT', str(root))}")
    folder = _folder(base, split, flat_ok)
    images = sorted(p for p in (folder / "images").iterdir()
                    if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not images:
        raise FileNotFoundError(f"pairs: no images (.png, .jpg) in {folder / 'images'}")
    labels: dict = {}
    if (folder / "labels").is_dir():
        for p in (folder / "labels").iterdir():
            labels.setdefault(p.stem, []).append(p)
    pairs, lost = [], []
    for img in images:
        found = [p for p in labels.get(img.stem, []) if p.suffix.lower() in LABEL_EXTS]
        if not found:
            lossy = labels.get(img.stem)
            if lossy:
                raise ValueError(f"pairs: the label of {img} is {lossy[0]}: labels must be lossless "
                                 f"({', '.join(LABEL_EXTS)}); JPEG changes the class ids at edges")
            lost.append(img)
        else:
            pairs.append((str(img), str(sorted(found)[0]), None))
    if lost:
        first = "\n".join(f"  {p} (expected {folder / 'labels' / (p.stem + '.png')})" for p in lost[:5])
        raise FileNotFoundError(f"pairs: {len(lost)} image(s) without a label:\n{first}")
    k = len(class_names) if class_names else None
    return PairsDataset(pairs, k, class_names, f"{name} ({folder})", transform)


def pairs_for_domain(cfg, domain: str, split: str) -> PairsDataset:
    """The dataset of a domain of ``data.kind=pairs`` (see reinlite.data.kinds)."""
    from reinlite.data.kinds import split_target
    from reinlite.data.pipeline import resolve_path

    d = cfg.data
    where, name, flat_ok = d.root, split, False
    if d.roots and domain in d.roots:
        where, name = split_target(d.roots[domain])
        where, name, flat_ok = (where, name, False) if where else (d.roots[domain], split, True)
    elif domain == d.source:
        where, name, flat_ok = d.root, d.source_split, True
    else:
        path, part = split_target(domain)
        if path is None and (resolve_path(domain) / "images").is_dir():
            where, name, flat_ok = domain, None, True
        else:
            where, name = (path or d.root), part
    from reinlite.data.kinds import check_same_classes

    ds = pairs_dataset(where, name, d.classes, domain, flat_ok=flat_ok)
    check_same_classes(pairs_classes(Path(ds.pairs[0][0]).parent.parent), d.classes,
                       f"the pairs dataset {where} (classes.json)")
    return ds
