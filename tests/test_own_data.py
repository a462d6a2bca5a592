"""Your own data, end to end and offline: a tiny 3-class dataset as a folder of pairs and as a
saved Hugging Face dataset -> train a few steps -> evaluate -> predict; its classes travel in
the checkpoint; bad input gets errors that name the value, the file / row and the sizes."""
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import reinlite
from reinlite import cli
from reinlite.config import ConfigError, load_config
from reinlite.data.pipeline import build_dataset
from reinlite.engine.train import train
from tiny import make_tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["background", "crack", "rust"]
COLORS = np.array([[40, 40, 40], [230, 230, 230], [200, 90, 20]], np.uint8)
SIZE = (36, 52)  # 36 is not a multiple of the patch size 8: padded, never a shape error


def scene(seed, size=SIZE):
    """(image uint8 [H, W, 3], label uint8 [H, W]): rectangles of classes 1-2 on class 0."""
    rng = np.random.default_rng(seed)
    h, w = size
    label = np.zeros((h, w), np.uint8)
    for c in (1, 2):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        label[y:y + rng.integers(6, h // 2), x:x + rng.integers(6, w // 2)] = c
    label[0, :3] = 255  # an ignored strip
    image = np.clip(COLORS[label.clip(0, 2)] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    return image, label


def write_pairs(root, split, n, start=0):
    for i in range(n):
        img, lab = scene(start + i)
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / split / "images" / f"{i:03d}.png")
        Image.fromarray(lab).save(root / split / "labels" / f"{i:03d}.png")


def write_hf(root, pairs_root):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Image(),
                               "note": datasets.Value("string")})
    parts = {}
    for split in ("train", "val"):
        folder = pairs_root / split
        rows = [{"image": str(p), "label": str(folder / "labels" / p.name), "note": p.stem}
                for p in sorted((folder / "images").iterdir())]
        parts[split] = datasets.Dataset.from_list(rows, features=feats)
    datasets.DatasetDict(parts).save_to_disk(str(root))
    (root / "classes.json").write_text(json.dumps(CLASSES))


def tiny(tmp, kind, root, **data):
    """The tests' tiny run (tests/configs/tiny.json) on a dataset of ``kind`` at ``root``."""
    cfg = make_tiny_config(name=f"own_{kind}", out_dir=str(tmp / f"run_{kind}"), seed=1,
                           optim={"iters": 2}, eval={"mode": "slide", "crop": [32, 32], "stride": [24, 24]})
    cfg["data"] = {"kind": kind, "root": str(root), "source": "mine", "targets": ["val"],
                   "crop_size": [32, 32], "short_sides": None, "num_workers": 0, **data}
    return cfg


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    pairs = tmp / "pairs"
    write_pairs(pairs, "train", 4)
    write_pairs(pairs, "val", 2, start=100)
    (pairs / "classes.json").write_text(json.dumps(CLASSES))
    write_hf(tmp / "hf", pairs)
    # the hf run reads its batches in a DataLoader worker process (data.num_workers): it pickles
    runs = {kind: train(load_config(tiny(tmp, kind, tmp / kind, num_workers=int(kind == "hf"))))["out_dir"]
            for kind in ("pairs", "hf")}
    return tmp, runs


def test_classes_are_read_from_the_dataset_and_size_the_head(own):
    tmp, _ = own
    for kind in ("pairs", "hf"):
        cfg = load_config(tiny(tmp, kind, tmp / kind))
        assert cfg.data.classes == CLASSES and cfg.model.head.num_classes == 3
    with pytest.raises(ConfigError, match=r"num_classes=19 conflicts with data.classes \(3 classes"):
        load_config(tiny(tmp, "pairs", tmp / "pairs"), ["model.head.num_classes=19"])
    bare = tmp / "bare"
    write_pairs(bare, "train", 1)
    with pytest.raises(ConfigError, match="does not name its classes: give data.classes"):
        load_config(tiny(tmp, "pairs", bare))
    assert load_config(tiny(tmp, "pairs", bare, classes=["a", "b", "c"])).model.head.num_classes == 3


def test_pairs_and_hf_give_the_same_items(own):
    tmp, _ = own
    for split in ("mine", "val"):
        a = build_dataset(load_config(tiny(tmp, "pairs", tmp / "pairs")), split, "val")
        b = build_dataset(load_config(tiny(tmp, "hf", tmp / "hf")), split, "val")
        assert len(a) == len(b) == (4 if split == "mine" else 2)
        for i in range(len(a)):
            (ia, la), (ib, lb) = a.load(i), b.load(i)
            assert np.array_equal(ia, ib) and np.array_equal(la, lb)
            assert set(np.unique(la)) <= {0, 1, 2, 255}
        # DataLoader workers (data.num_workers) get the datasets by pickling
        for ds in (a, b):
            back = pickle.loads(pickle.dumps(ds))
            assert np.array_equal(back.load(0)[1], ds.load(0)[1])
    loader = torch.utils.data.DataLoader(b, batch_size=2, num_workers=1)
    assert next(iter(loader))[0].shape == (2, 3, *SIZE)


def test_trained_run_evaluates_and_predicts_from_its_checkpoint(own, capsys, tmp_path):
    tmp, runs = own
    for kind, run in runs.items():
        assert cli.main(["eval", "--checkpoint", str(run), "--out", str(tmp_path / kind)]) == 0
        out = capsys.readouterr().out
        assert "| crack |" in out and "| rust |" in out and "| road |" not in out, kind
        metrics = json.loads((tmp_path / kind / "metrics.json").read_text())
        assert list(metrics["domains"]["val"]["iou"]) == CLASSES
        # predict on a new image, no classes repeated
        img, _ = scene(999, (45, 61))
        path = tmp_path / f"new_{kind}.png"
        Image.fromarray(img).save(path)
        assert cli.main(["predict", str(path), "--checkpoint", str(run)]) == 0
        assert Image.open(tmp_path / f"new_{kind}_pred.png").size == (61, 45)
        # the Python API
        model = reinlite.load_model(run)
        assert model.classes == tuple(CLASSES)
        labels = model.predict(Image.fromarray(img))
        assert isinstance(labels, np.ndarray) and labels.shape == (45, 61) and labels.max() < 3
        assert np.array_equal(model.predict(img), labels)
        t = model.predict(torch.from_numpy(img).permute(2, 0, 1))
        assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), labels)
        assert model.overlay(img).shape == (45, 61, 3)
        assert np.array_equal(model.predict(str(path)), labels)
        seg, cfg = model  # the older (model, cfg) unpacking still works
        assert cfg.data.classes == CLASSES and seg is model.model


def test_bad_labels_name_value_file_and_k(own, tmp_path):
    tmp, _ = own
    root = tmp_path / "bad"
    write_pairs(root, "train", 2)
    lab = np.array(Image.open(root / "train" / "labels" / "001.png"))
    lab[5, 5] = 7
    Image.fromarray(lab).save(root / "train" / "labels" / "001.png")
    cfg = load_config(tiny(tmp_path, "pairs", root, classes=CLASSES))
    ds = build_dataset(cfg, "mine", "train")
    ds.load(0)
    with pytest.raises(ValueError, match=r"001.png.*label id\(s\) 7 outside 0..2.*K = 3"):
        ds.load(1)
    # image / label size mismatch names both sizes
    Image.fromarray(np.zeros((30, 52), np.uint8)).save(root / "train" / "labels" / "000.png")
    with pytest.raises(ValueError, match=r"000.png.*image is 52x36 but its label is 52x30"):
        ds.load(0)
    # an image without a label, a JPEG label
    (root / "train" / "labels" / "000.png").unlink()
    with pytest.raises(FileNotFoundError, match="(?s)1 image.*without a label.*000.png"):
        build_dataset(cfg, "mine", "train")
    Image.fromarray(np.zeros((36, 52), np.uint8)).save(root / "train" / "labels" / "000.jpg")
    with pytest.raises(ValueError, match="lossless"):
        build_dataset(cfg, "mine", "train")
    # a target split that does not exist is not silently the training folder
    with pytest.raises(FileNotFoundError, match="no images/ folder"):
        build_dataset(load_config(tiny(tmp_path, "pairs", tmp / "pairs")), "test", "val")


def test_hf_errors_name_columns_rows_and_splits(own):
    tmp, _ = own
    with pytest.raises(KeyError, match=r"no column 'mask'.*its columns: image, label, note"):
        build_dataset(load_config(tiny(tmp, "hf", tmp / "hf", label_column="mask")), "mine", "train")
    with pytest.raises(FileNotFoundError, match="has no split 'test'.*train, val"):
        build_dataset(load_config(tiny(tmp, "hf", tmp / "hf")), "test", "val")
    from reinlite.data.hf import HFSegmentation
    import datasets

    rows = datasets.Dataset.from_dict({"image": [np.zeros((4, 6, 3), np.uint8)],
                                       "label": [np.full((4, 6), 9, np.uint8)]})
    with pytest.raises(ValueError, match=r"row 0: label id\(s\) 9 outside 0..2.*K = 3"):
        HFSegmentation(rows, class_names=CLASSES, name="mem").load(0)


def test_a_checkpoint_refuses_other_classes(own, tmp_path):
    from reinlite.engine.evaluate import evaluate

    tmp, runs = own
    other = tmp_path / "other"
    write_pairs(other, "val", 1)
    (other / "classes.json").write_text(json.dumps(["sky", "tree", "car"]))
    model, cfg = reinlite.load_run(runs["pairs"], overrides=[f"data.targets={json.dumps([str(other / 'val')])}"])
    with pytest.raises(ConfigError, match=r"classes \[sky, tree, car\].*\[background, crack, rust\]"):
        evaluate(model, cfg, progress=False)
    with pytest.raises(ConfigError, match=r"trained on the classes \[background, crack, rust\].*\[a, b\]"):
        reinlite.load_run(runs["pairs"], overrides=['data.classes=["a", "b"]', "model.head.num_classes=null"])
    from reinlite.data.benchmark import write_benchmark

    write_benchmark(tmp_path / "b", source=1, target=1, size=(32, 64), workers=1, progress=False,
                    domains=("gta", "cityscapes"))
    model, cfg = reinlite.load_run(runs["hf"])
    cfg = load_config(cfg, ["data.kind=benchmark", f"data.root={json.dumps(str(tmp_path / 'b'))}"])
    with pytest.raises(ConfigError, match=r"domain 'cityscapes' has the classes \[road, sidewalk.*\(19\)"):
        evaluate(model, cfg, ["cityscapes"], progress=False)


def test_benchmark_exports_itself_as_hf(tmp_path, capsys):
    from reinlite.data.benchmark import benchmark_datasets, write_benchmark

    write_benchmark(tmp_path / "b", seed=1, source=3, target=2, size=(32, 64), workers=1,
                    progress=False, domains=("gta", "cityscapes"))
    assert cli.main(["data", "benchmark", "--format", "hf", "--from", str(tmp_path / "b"),
                     "--out", str(tmp_path / "hf")]) == 0
    assert "train: 3, validation: 2, cityscapes: 2" in capsys.readouterr().out
    cfg = load_config({"data": {"kind": "hf", "root": str(tmp_path / "hf"), "targets": ["cityscapes"]}})
    assert cfg.data.classes == list(reinlite.data.classes.CLASSES)
    folders = benchmark_datasets(tmp_path / "b")
    for dom, key in (("gta", "gta"), ("cityscapes", "cityscapes")):
        hf = build_dataset(cfg, dom, "val")
        assert len(hf) == len(folders[key])
        a, b = hf.load(1), folders[key].load(1)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_stored_config_from_before_classes_resumes():
    """A checkpoint's config written before data.classes existed (head.num_classes 19, no
    data.classes / columns) is the same run as today's resolved config: no changed keys."""
    from reinlite.config import changed_keys

    new = load_config("course")
    old = new.to_dict()
    for key in ("classes", "image_column", "label_column"):
        del old["data"][key]
    assert changed_keys(old, new.to_dict()) == []
    assert changed_keys(old, load_config("course", ["optim.lr=0.5"]).to_dict()) == ["optim.lr"]
