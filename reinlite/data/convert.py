"""Convert official dataset downloads into what ``reinlite.data.datasets`` reads fastest.

Each ``convert_*`` writes train-id label PNGs (uint8, 0..18, 255 = ignore) next to, or instead
of, the original labels, fixes what the raw downloads get wrong for training (GTA5's few
image/label size mismatches, SYNTHIA's 16-bit labels), halves Mapillary's validation set as the
Rein release does, and returns a ``Report`` (counts, and every file it skipped or changed, by
name). Nothing is skipped silently: ``Report.summary()`` lists the counts and ``Report.ok`` is
False when a file had to be skipped. The command-line wrappers live in ``data_scripts/convert_*.py``.

These datasets need registration, so nothing is downloaded automatically; each function's
docstring says where to get the data.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from reinlite.data import classes as C
from reinlite.data.datasets import ACDC, BDD100K, GTA5, SYNTHIA, Cityscapes, Mapillary, read_image, read_label  # noqa: F401

__all__ = ["Report", "convert_gta5", "convert_synthia", "convert_cityscapes", "convert_bdd100k",
           "convert_mapillary"]


@dataclass
class Report:
    """What a conversion did: ``converted`` count; lists of (file, reason) for the rest."""
    name: str
    converted: int = 0
    resized: list = field(default_factory=list)      # labels / images resized to fix a size mismatch
    skipped: list = field(default_factory=list)      # (file, reason): missing label, corrupt file
    unknown_ids: int = 0                             # pixels whose id is not in the table -> 255

    @property
    def ok(self) -> bool:
        return not self.skipped

    def summary(self) -> str:
        lines = [f"{self.name}: converted {self.converted}, resized {len(self.resized)}, "
                 f"skipped {len(self.skipped)}, pixels with unknown ids set to 255: {self.unknown_ids}"]
        lines += [f"  resized {f}: {why}" for f, why in self.resized[:20]]
        lines += [f"  skipped {f}: {why}" for f, why in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more skipped")
        return "\n".join(lines)


def _save_ids(arr, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr, np.uint8)).save(path)


def _to_train(ids, lut, rep):
    """ids [H, W] -> uint8 train ids; ids beyond 0..255 (16-bit sources) are counted."""
    rep.unknown_ids += int(((ids < 0) | (ids > 255)).sum())
    return C.map_ids(ids, lut)


def _convert_pairs(pairs, out_label_path, rep, fix_size="label", image_out=None):
    """pairs: [(image, label, lut)]; writes train ids to out_label_path(image, label)."""
    for img_p, lab_p, lut in pairs:
        try:
            ids = read_label(lab_p)
            with Image.open(img_p) as im:
                im.verify()
            with Image.open(img_p) as im:
                w, h = im.size
        except (ValueError, OSError, SyntaxError) as err:
            rep.skipped.append((str(img_p), f"unreadable ({err})"))
            continue
        train = _to_train(ids, lut, rep)
        if train.shape != (h, w):
            rep.resized.append((str(lab_p), f"label {train.shape[1]}x{train.shape[0]} -> image {w}x{h}"))
            train = np.array(Image.fromarray(train).resize((w, h), Image.NEAREST))
        _save_ids(train, out_label_path(Path(img_p), Path(lab_p)))
        if image_out is not None:
            image_out(Path(img_p))
        rep.converted += 1
    return rep


def convert_gta5(root) -> Report:
    """GTA5 -> labels/{stem}_labelTrainIds.png next to labels/{stem}.png.

    Get it from https://download.visinf.tu-darmstadt.de/data/from_games/ (images and labels
    parts, unzipped into ROOT/images and ROOT/labels; split.mat from the same page). A few
    GTA5 labels do not have their image's size: they are resized (nearest) to the image and
    listed in the report.
    """
    rep = Report("GTA5")
    ds = GTA5(root, missing="skip")
    _note_missing(ds, rep)
    pairs = [(i, str(Path(lab).with_name(Path(i).stem + ".png")), C.CITYSCAPES_LUT) for i, lab, _ in ds.pairs]
    return _convert_pairs(pairs, lambda i, l: l.with_name(f"{i.stem}_labelTrainIds.png"), rep)


def convert_synthia(root) -> Report:
    """SYNTHIA-RAND-CITYSCAPES -> GT/LABELS/{stem}_labelTrainIds.png (8-bit train ids).

    Get SYNTHIA-RAND-CITYSCAPES (CVPR16) from https://synthia-dataset.net/downloads/ and unzip
    it (ROOT/RGB, ROOT/GT/LABELS). Its labels are 16-bit PNGs with the class in the first
    channel; the converted 8-bit files load much faster.
    """
    rep = Report("SYNTHIA")
    ds = SYNTHIA(root, missing="skip")
    _note_missing(ds, rep)
    pairs = [(i, str(Path(lab).with_name(Path(i).stem + ".png")), C.SYNTHIA_LUT) for i, lab, _ in ds.pairs]
    return _convert_pairs(pairs, lambda i, l: l.with_name(f"{i.stem}_labelTrainIds.png"), rep)


def convert_cityscapes(root, splits=("train", "val")) -> Report:
    """Cityscapes -> gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png.

    Get leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from
    https://www.cityscapes-dataset.com/downloads/ and unzip both into ROOT.
    """
    rep = Report("Cityscapes")
    for split in splits:
        if not (Path(root) / "leftImg8bit" / split).is_dir():
            continue
        ds = Cityscapes(root, split=split, missing="skip")
        _note_missing(ds, rep)
        pairs = []
        for i, lab, _ in ds.pairs:
            raw = Path(lab).with_name(Path(lab).name.replace("_labelTrainIds.png", "_labelIds.png"))
            pairs.append((i, str(raw), C.CITYSCAPES_LUT))
        _convert_pairs(pairs, lambda i, l: l.with_name(l.name.replace("_labelIds.png", "_labelTrainIds.png")), rep)
    if rep.converted == 0 and not rep.skipped:
        Cityscapes(root, split=splits[0])  # raises with the expected layout
    return rep


def convert_bdd100k(root, out=None, splits=("train", "val")) -> Report:
    """BDD100K 10k segmentation -> ``out`` in the current layout with sanitised train-id masks.

    Get "10K Images" and "Segmentation" (sem_seg masks) from https://bdd-data.berkeley.edu
    (the older bdd100k_seg.zip with seg/images + seg/labels/*_train_id.png works too). Masks
    already hold train ids; values outside 0..18 become 255 (counted). Writes
    out/images/10k/{split}/*.jpg and out/labels/sem_seg/masks/{split}/*.png (default out=root).
    """
    root = Path(root)
    out = root if out is None else Path(out)
    rep = Report("BDD100K")
    found = False
    for split in splits:
        if not ((root / "images" / "10k" / split).is_dir() or (root / "seg" / "images" / split).is_dir()):
            continue
        found = True
        ds = BDD100K(root, split=split, missing="skip")
        _note_missing(ds, rep)

        def copy_image(i, split=split):
            dst = out / "images" / "10k" / split / i.name
            if dst.resolve() != i.resolve():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(i, dst)

        for img, lab, lut in ds.pairs:   # masks hold train ids: count values outside 0..18, 255
            ids = read_label(lab)
            rep.unknown_ids += int(((ids > 18) & (ids != 255)).sum())
        _convert_pairs(ds.pairs, lambda i, l, split=split: out / "labels" / "sem_seg" / "masks" / split / f"{i.stem}.png",
                       rep, image_out=copy_image)
    if not found:
        BDD100K(root, split=splits[-1])  # raises with the expected layout
    return rep


def convert_mapillary(root, out, short_side: int | None = None, splits=("training", "validation"),
                      halve=("validation",)) -> Report:
    """Mapillary Vistas v1.2 -> ``out``: train-id labels {stem}_labelTrainIds.png mapped by
    class name, and the images, sized as the Rein release does.

    The release evaluates on a validation set *halved* by its converter: every image and its
    label to (W // 2, H // 2), the image bicubic (saved as JPEG with Pillow's default quality),
    the train-id label nearest; at test time the halved image is resized to fit 1024 x 512
    keeping its aspect ratio and compared with the halved label. Its training split keeps the
    native size. By default this does the same: the splits in ``halve`` are halved, the others
    keep their native size (the image is copied byte for byte). ``short_side=N`` instead
    resizes every split so that its short side is N (bicubic / nearest; JPEG quality 95), e.g.
    for a small course copy.

    Get "Mapillary Vistas Dataset (research edition)" from
    https://www.mapillary.com/dataset/vistas and unzip it into ROOT (ROOT/training,
    ROOT/validation, ROOT/config_v1.2.json).
    """
    root, out = Path(root), Path(out)
    if short_side is not None and int(short_side) <= 0:
        raise ValueError(f"short_side must be a positive int or None, got {short_side!r}")
    if out.resolve() == root.resolve():
        raise ValueError(f"convert_mapillary writes resized images: out must not be the download "
                         f"itself ({root}); pass another folder")
    rep = Report("Mapillary")
    found = False
    for split in splits:
        if not (root / split / "images").is_dir():
            continue
        found = True
        ds = Mapillary(root, split=split, missing="skip")
        _note_missing(ds, rep)
        lut = C.mapillary_lut(Mapillary.class_names(root))
        for img_p, lab_p, _ in ds.pairs:
            img_p = Path(img_p)
            raw = Path(lab_p).with_name(img_p.stem + ".png")
            try:
                ids = read_label(raw)
                img = read_image(img_p)
            except ValueError as err:
                rep.skipped.append((str(img_p), str(err)))
                continue
            train = _to_train(ids, lut, rep)
            h, w = img.shape[:2]
            if train.shape != (h, w):
                rep.resized.append((str(raw), f"label {train.shape[1]}x{train.shape[0]} -> image {w}x{h}"))
                train = np.array(Image.fromarray(train).resize((w, h), Image.NEAREST))
            dst_img = out / split / "images" / f"{img_p.stem}.jpg"
            dst_img.parent.mkdir(parents=True, exist_ok=True)
            if short_side is not None:
                s = int(short_side) / min(h, w)
                size, quality = (max(int(round(w * s)), 1), max(int(round(h * s)), 1)), 95
            elif split in halve:
                size, quality = (max(w // 2, 1), max(h // 2, 1)), None   # the release's resize_half
            else:
                size, quality = None, None
            if size is None:
                if img_p.suffix.lower() in (".jpg", ".jpeg"):
                    shutil.copyfile(img_p, dst_img)
                else:
                    Image.fromarray(img).save(dst_img, quality=95)
            else:
                kw = {} if quality is None else {"quality": quality}
                Image.fromarray(img).resize(size, Image.BICUBIC).save(dst_img, **kw)
                train = np.array(Image.fromarray(train).resize(size, Image.NEAREST))
            _save_ids(train, out / split / "v1.2" / "labels" / f"{img_p.stem}_labelTrainIds.png")
            rep.converted += 1
    if not found:
        Mapillary(root, split=splits[-1])  # raises with the expected layout
    if (root / "config_v1.2.json").is_file() and out != root:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / "config_v1.2.json", out / "config_v1.2.json")
    return rep


def _note_missing(ds, rep):
    if ds.skipped:
        rep.skipped.append((ds.name, f"{ds.skipped} image(s) without a label"))


def run_cli(convert, argv=None, description="", needs_out=False, extra=None):
    """Shared argparse main for data_scripts/convert_*.py; exit status 1 when files were skipped."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="the unzipped official download")
    if needs_out:
        ap.add_argument("--out", required=needs_out == "required", default=None,
                        help="output folder" + ("" if needs_out == "required" else " (default: in place)"))
    for args, kw in (extra or []):
        ap.add_argument(*args, **kw)
    a = vars(ap.parse_args(argv))
    root = a.pop("root")
    try:
        rep = convert(root, **{k: v for k, v in a.items()})
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(rep.summary())
    return 0 if rep.ok else 1
