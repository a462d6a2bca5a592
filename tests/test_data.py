"""reinlite.data: class tables, the benchmark through the real loaders, bad input, HF.

The training augmentation is tested in tests/test_transforms.py."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reinlite.data import classes as C
from reinlite.data import datasets as D
from reinlite.data.benchmark import benchmark_datasets, write_benchmark


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, seed=3, source=6, target=3, size=(32, 64), workers=1, progress=False)
    return root


# ------------------------------------------------------------------------- classes
def test_class_table():
    assert len(C.CLASSES) == 19 and C.PALETTE.shape == (19, 3)
    ids = np.array([[7, 8, 26, 33], [0, 1, 34, 255]], np.uint8)
    assert C.map_ids(ids, C.CITYSCAPES_LUT).tolist() == [[0, 1, 13, 18], [255] * 4]
    assert C.map_ids(np.array([3, 21, 22, 0, 300], np.uint16), C.SYNTHIA_LUT).tolist() == [0, 3, 255, 255, 255]
    assert C.map_ids(np.array([0, 18, 19, 255], np.uint8), C.TRAIN_ID_LUT).tolist() == [0, 18, 255, 255]
    lut = C.mapillary_lut()
    names = [n for n, _ in C.MAPILLARY_V12]
    assert len(names) == 66
    assert lut[names.index("construction--flat--road")] == 0
    assert lut[names.index("human--rider--motorcyclist")] == 12
    assert lut[names.index("object--traffic-sign--back")] == 7  # the release maps sign backs to traffic sign
    assert lut[names.index("object--manhole")] == 255 and lut[names.index("construction--flat--parking")] == 0
    assert lut[names.index("void--unlabeled")] == 255
    # by name: a config listing the classes in another order maps accordingly
    lut2 = C.mapillary_lut(["nature--sky", "something--new", "object--vehicle--car"])
    assert lut2[:4].tolist() == [10, 255, 13, 255]
    assert C.colorize(torch.tensor([[0, 255]])).shape == (1, 2, 3)


# ------------------------------------------------------------------------- benchmark
@pytest.mark.parametrize("workers", [2, 3, None])
def test_benchmark_is_deterministic(tmp_path, bench, workers):
    # the fixture rendered in this process; here 2 / 3 / one-per-processor workers split the
    # 27 images into chunks of 2-3: the same bytes (and the same manifest), any worker count
    m = write_benchmark(tmp_path / "b", seed=3, source=6, target=3, size=(32, 64), workers=workers,
                        progress=False)
    assert tree_digest(tmp_path / "b") == tree_digest(bench)
    assert m == json.loads((bench / "benchmark.json").read_text())
    if workers == 2:
        write_benchmark(tmp_path / "c", seed=4, source=6, target=3, size=(32, 64), workers=1,
                        progress=False)
        assert tree_digest(tmp_path / "c") != tree_digest(bench)


def test_benchmark_workers_are_checked(tmp_path):
    from reinlite.data.benchmark import default_workers

    assert default_workers() >= 1
    with pytest.raises(ValueError, match="workers must be at least 1"):
        write_benchmark(tmp_path / "b", source=1, target=1, size=(16, 32), workers=-1, progress=False)


def test_benchmark_through_real_loaders(bench):
    assert (bench / "gta" / "images" / "00001.png").is_file()
    assert (bench / "cityscapes" / "gtFine" / "val" / "frankfurt" /
            "frankfurt_000000_000019_gtFine_labelIds.png").is_file()
    ds = benchmark_datasets(bench)
    assert {k: len(v) for k, v in ds.items()} == dict(gta=6, gta_val=3, cityscapes=3, bdd100k=3,
                                                      mapillary=3, acdc=3)
    for name, d in ds.items():
        img, mask = d[0]
        assert img.shape == (3, 32, 64) and img.dtype == torch.float32, name
        assert mask.shape == (32, 64) and mask.dtype == torch.int64, name
        vals = set(mask.unique().tolist())
        assert vals <= set(range(19)) | {255}, (name, vals)
    # the GTA5 labels are palette PNGs of label ids, as in the real download
    assert Image.open(bench / "gta" / "labels" / "00001.png").mode == "P"


# ------------------------------------------------------------------------- bad input
def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _gta(root, n=2, size=(8, 12)):
    for i in range(n):
        _png(root / "images" / f"{i + 1:05d}.png", np.zeros(size + (3,), np.uint8))
        _png(root / "labels" / f"{i + 1:05d}.png", np.full(size, 7, np.uint8))


def test_missing_root_names_layout(tmp_path):
    for cls in (D.GTA5, D.SYNTHIA, D.Cityscapes, D.BDD100K, D.Mapillary, D.ACDC):
        with pytest.raises(FileNotFoundError, match="expected layout"):
            cls(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="images/00001.png"):
        D.GTA5(tmp_path)  # exists but empty


def test_image_without_label(tmp_path):
    _gta(tmp_path, 3)
    (tmp_path / "labels" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png"):
        D.GTA5(tmp_path)
    ds = D.GTA5(tmp_path, missing="skip")
    assert len(ds) == 2 and ds.skipped == 1


def test_corrupt_and_mismatched_files_are_named(tmp_path):
    _gta(tmp_path, 3)
    (tmp_path / "images" / "00001.png").write_bytes(b"not a png")
    _png(tmp_path / "labels" / "00002.png", np.full((9, 12), 7, np.uint8))
    _png(tmp_path / "labels" / "00003.png", np.zeros((8, 12, 3), np.uint8))
    ds = D.GTA5(tmp_path)
    with pytest.raises(ValueError, match="00001.png"):
        ds[0]
    with pytest.raises(ValueError, match=r"00002.png.*12x9"):
        ds[1]
    with pytest.raises(ValueError, match="00003.png.*single-channel"):
        ds[2]


def test_unknown_ids_become_ignore(tmp_path):
    _gta(tmp_path, 1)
    _png(tmp_path / "labels" / "00001.png", np.array([[7, 5, 200, 33]] * 2, np.uint8))
    _png(tmp_path / "images" / "00001.png", np.zeros((2, 4, 3), np.uint8))
    _, mask = D.GTA5(tmp_path)[0]
    assert mask[0].tolist() == [0, 255, 255, 18]


def test_prepared_train_ids_take_precedence(tmp_path):
    _gta(tmp_path, 1)
    _png(tmp_path / "labels" / "00001_labelTrainIds.png", np.full((8, 12), 5, np.uint8))
    assert D.GTA5(tmp_path)[0][1].unique().tolist() == [5]


# ------------------------------------------------------------------------- Hugging Face
def test_hf_round_trip(tmp_path, bench):
    from reinlite.data.hf import load_hf_dataset, to_hf_dataset

    ds = benchmark_datasets(bench)["mapillary"]
    to_hf_dataset(ds, tmp_path / "hf")
    back = load_hf_dataset(tmp_path / "hf")
    assert len(back) == len(ds)
    for i in range(len(ds)):
        a, b = ds[i], back[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(FileNotFoundError, match="no saved"):
        load_hf_dataset(tmp_path / "missing")


# ------------------------------------------------------------------------- CLI
def test_cli_data_benchmark(tmp_path, capsys):
    from reinlite.cli import main

    rc = main(["data", "benchmark", "--out", str(tmp_path / "b"), "--source", "2", "--target", "1",
               "--size", "16", "32", "--workers", "1"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    assert len(benchmark_datasets(tmp_path / "b")["gta"]) == 2


# ------------------------------------------------------------------------- kinds, palettes
def test_kinds_are_a_registry_and_targets_parse():
    from reinlite.config import ConfigError, load_config
    from reinlite.data.kinds import DATA_KINDS, split_target

    assert {"benchmark", "folders", "hf", "pairs", "random"} <= set(DATA_KINDS)
    with pytest.raises(ConfigError, match="data.kind must be one of .*hf.* got 'hff' \\(did you mean 'hf'"):
        load_config({}, ["data.kind=hff"])
    assert split_target("validation") == (None, "validation")
    assert split_target("data/other:test") == ("data/other", "test")
    assert split_target("user/scenes:validation") == ("user/scenes", "validation")
    assert split_target("C:\\data\\set") == (None, "C:\\data\\set")


def test_palette_for_k_classes():
    assert np.array_equal(C.palette(C.CLASSES), C.PALETTE)
    pal = C.palette(["background", "crack", "rust"])
    assert pal.shape == (3, 3) and len({tuple(c) for c in pal}) == 3
    many = C.palette(40)
    assert many.shape == (40, 3) and len({tuple(c) for c in many}) == 40
    rgb = C.colorize(np.array([[0, 2, 255, 7]]), colors=pal)
    assert rgb[0, 1].tolist() == pal[2].tolist() and rgb[0, 2].tolist() == [0, 0, 0]
    assert rgb[0, 3].tolist() == [0, 0, 0]  # an id >= K is drawn as ignored
