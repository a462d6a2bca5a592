"""Converters on tiny fixtures built in the official download layouts."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import png
import pytest
from PIL import Image

from reinlite.data import classes as C
from reinlite.data import convert as V
from reinlite.data import datasets as D

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def _img(path, h, w, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def _ids(path, arr, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8))
    if palette:
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    im.save(path)


CS_IDS = np.array([[7, 8, 11, 26], [33, 0, 1, 34]], np.uint8)          # 2 x 4
CS_TRAIN = [[0, 1, 2, 13], [18, 255, 255, 255]]


def test_gta5(tmp_path):
    r = tmp_path / "gta5"
    for i in (1, 2, 3):
        _img(r / "images" / f"{i:05d}.png", 2, 4)
    _ids(r / "labels" / "00001.png", CS_IDS, palette=True)           # palette PNG, as released
    _ids(r / "labels" / "00002.png", np.kron(CS_IDS, np.ones((2, 2), np.uint8)), palette=True)  # 4x8 mismatch
    # 00003 has no label
    with pytest.raises(FileNotFoundError, match="00003.png"):
        D.GTA5(r)
    with pytest.raises(ValueError, match="00002.png"):
        D.GTA5(r, missing="skip")[1]
    rep = V.convert_gta5(r)
    assert rep.converted == 2 and len(rep.resized) == 1 and "00002.png" in rep.resized[0][0]
    assert not rep.ok and "1 image(s) without a label" in rep.summary()
    ds = D.GTA5(r, missing="skip")
    assert ds.skipped == 1 and ds.pairs[0][1].endswith("00001_labelTrainIds.png")
    assert ds[0][1].tolist() == CS_TRAIN
    assert ds[1][1].shape == (2, 4)                                    # fixed


def test_gta5_split_mat(tmp_path):
    from scipy.io import savemat

    r = tmp_path / "gta5"
    for i in (1, 2, 3):
        _img(r / "images" / f"{i:05d}.png", 2, 4)
        _ids(r / "labels" / f"{i:05d}.png", CS_IDS)
    savemat(r / "split.mat", {"trainIds": np.array([[1], [3]]), "valIds": np.array([[2]]),
                              "testIds": np.zeros((0, 1))})
    assert [Path(p[0]).name for p in D.GTA5(r, split="train").pairs] == ["00001.png", "00003.png"]
    assert len(D.GTA5(r, split="val")) == 1


def _png16(path, cls, inst):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = cls.shape
    rows = np.stack([cls, inst, np.zeros_like(cls)], -1).reshape(h, w * 3).astype(np.uint16)
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=False, bitdepth=16).write(f, rows.tolist())


def test_synthia_16bit(tmp_path):
    r = tmp_path / "RAND_CITYSCAPES"
    _img(r / "RGB" / "0000000.png", 2, 4)
    cls = np.array([[3, 4, 2, 21], [22, 0, 10, 17]])
    _png16(r / "GT" / "LABELS" / "0000000.png", cls, np.full_like(cls, 1000))
    want = [[0, 1, 2, 3], [255, 255, 11, 12]]
    assert D.SYNTHIA(r)[0][1].tolist() == want                         # raw 16-bit read directly
    rep = V.convert_synthia(r)
    assert rep.ok and rep.converted == 1
    out = r / "GT" / "LABELS" / "0000000_labelTrainIds.png"
    assert Image.open(out).mode == "L"
    assert D.SYNTHIA(r)[0][1].tolist() == want


def test_cityscapes(tmp_path):
    r = tmp_path / "cityscapes"
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        _img(r / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 2, 4)
        g = r / "gtFine" / split / city
        _ids(g / f"{stem}_gtFine_labelIds.png", CS_IDS)
        _img(g / f"{stem}_gtFine_color.png", 2, 4)                      # distractors of the release
        _ids(g / f"{stem}_gtFine_instanceIds.png", CS_IDS)
        (g / f"{stem}_gtFine_polygons.json").write_text("{}")
    assert D.Cityscapes(r, "val")[0][1].tolist() == CS_TRAIN
    rep = V.convert_cityscapes(r)
    assert rep.ok and rep.converted == 2
    ds = D.Cityscapes(r, "train")
    assert ds.pairs[0][1].endswith("_gtFine_labelTrainIds.png") and ds[0][1].tolist() == CS_TRAIN


def test_bdd100k_old_layout_to_new(tmp_path):
    r, out = tmp_path / "bdd100k", tmp_path / "bdd_out"
    _img(r / "seg" / "images" / "val" / "7d2f7975-e0c1c5a7.jpg", 2, 4, fmt="JPEG")
    _ids(r / "seg" / "labels" / "val" / "7d2f7975-e0c1c5a7_train_id.png",
         np.array([[0, 18, 19, 255], [13, 2, 40, 10]]))
    assert D.BDD100K(r, "val")[0][1].tolist() == [[0, 18, 255, 255], [13, 2, 255, 10]]
    rep = V.convert_bdd100k(r, out=out)
    assert rep.ok and rep.converted == 1 and rep.unknown_ids == 2
    ds = D.BDD100K(out, "val")
    assert (out / "images" / "10k" / "val" / "7d2f7975-e0c1c5a7.jpg").is_file()
    assert ds[0][1].tolist() == [[0, 18, 255, 255], [13, 2, 255, 10]]


def _vistas(r, split, stem, h, w):
    """A smooth JPEG (so its JPEG error is small) and a v1.2 palette label with road, sky and a
    sign strip; returns the expected train ids [h, w]."""
    names = [n for n, _ in C.MAPILLARY_V12]
    lab = np.full((h, w), names.index("construction--flat--road"), np.uint8)
    lab[: h // 4] = names.index("nature--sky")
    lab[:, :8] = names.index("object--traffic-sign--back")
    lab[h // 2:, w // 2:] = names.index("object--vehicle--car")
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy * 200 // h, xx * 200 // w, (yy + xx) * 100 // (h + w) + 50], -1).astype(np.uint8)
    (r / split / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(r / split / "images" / f"{stem}.jpg", quality=95)
    _ids(r / split / "v1.2" / "labels" / f"{stem}.png", lab, palette=True)
    want = np.full((h, w), 0, np.uint8)
    want[: h // 4] = 10
    want[h // 2:, w // 2:] = 13
    want[:, :8] = 7                                      # sign *back* is a traffic sign (release)
    return want


def test_mapillary_validation_halved_as_the_release(tmp_path):
    r, out = tmp_path / "vistas", tmp_path / "vistas_out"
    want = _vistas(r, "validation", "abc", 48, 64)
    _vistas(r, "validation", "odd", 49, 67)
    want_train = _vistas(r, "training", "trn", 30, 40)
    cfg = {"labels": [{"name": n, "color": list(c)} for n, c in C.MAPILLARY_V12]}
    (r / "config_v1.2.json").write_text(json.dumps(cfg))
    raw = D.Mapillary(r)[0][1]
    assert raw.tolist() == want.tolist()
    rep = V.convert_mapillary(r, out)
    assert rep.ok and rep.converted == 3 and (out / "config_v1.2.json").is_file()
    val = D.Mapillary(out)
    (img, mask), (img_odd, mask_odd) = val[0], val[1]
    assert img.shape == (3, 24, 32) and mask.shape == (24, 32)          # W // 2 x H // 2
    assert img_odd.shape == (3, 24, 33) and mask_odd.shape == (24, 33)
    assert mask.tolist() == want[1::2, 1::2].tolist()                   # nearest (PIL: 2i + 1)
    src = Image.open(r / "validation" / "images" / "abc.jpg").convert("RGB")
    ref = np.asarray(src.resize((32, 24), Image.BICUBIC), np.float32)   # bicubic, as the release
    got = np.asarray(Image.open(out / "validation" / "images" / "abc.jpg"), np.float32)
    assert np.abs(got - ref).mean() < 3                                 # up to the JPEG error
    # the training split keeps its native size (the image copied byte for byte)
    trn = D.Mapillary(out, split="training")
    assert trn[0][1].tolist() == want_train.tolist()
    jpg = Path("training") / "images" / "trn.jpg"
    assert (out / jpg).read_bytes() == (r / jpg).read_bytes()
    # short_side: every split to that short side instead
    out2 = tmp_path / "small"
    assert V.convert_mapillary(r, out2, short_side=12).ok
    assert D.Mapillary(out2)[0][0].shape == (3, 12, 16) and D.Mapillary(out2, "training")[0][1].shape == (12, 16)
    with pytest.raises(ValueError, match="out must not be"):
        V.convert_mapillary(r, r)
    # the script: same defaults
    p = subprocess.run([sys.executable, str(ROOT / "data_scripts" / "convert_mapillary.py"), str(r),
                        "--out", str(tmp_path / "cli"), "--halve", "validation", "training"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "converted 3" in p.stdout, p.stderr
    assert D.Mapillary(tmp_path / "cli", "training")[0][1].shape == (15, 20)


def test_corrupt_file_is_reported_not_silent(tmp_path):
    r = tmp_path / "gta5"
    for i in (1, 2):
        _img(r / "images" / f"{i:05d}.png", 2, 4)
        _ids(r / "labels" / f"{i:05d}.png", CS_IDS)
    (r / "labels" / "00002.png").write_bytes(b"\x89PNG broken")
    rep = V.convert_gta5(r)
    assert rep.converted == 1 and not rep.ok and "00002" in rep.summary()


@pytest.mark.slow
def test_scripts_run(tmp_path):
    r = tmp_path / "cs"
    _img(r / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png", 2, 4)
    _ids(r / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png", CS_IDS)
    p = subprocess.run([sys.executable, str(ROOT / "data_scripts" / "convert_cityscapes.py"), str(r)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "converted 1" in p.stdout, p.stderr
    p = subprocess.run([sys.executable, str(ROOT / "data_scripts" / "convert_bdd100k.py"),
                        str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "expected layout" in p.stderr
