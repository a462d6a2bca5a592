import json
import math

import numpy as np
import pytest
import torch

from reinlite import cli
from reinlite.engine.evaluate import (confusion_matrix, evaluate, format_table, infer,
                               iou_from_confusion, mean_iou, predict_files, slide_inference)
from reinlite.config import load_config
from reinlite.engine.evaluate import load_run
from reinlite.engine.train import train
from reinlite.viz import normalize_confusion, overlay

pytestmark = pytest.mark.usefixtures("one_thread")


def test_confusion_and_iou_by_hand():
    # K = 3; 255 is ignored
    target = torch.tensor([0, 0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    cm = confusion_matrix(pred, target, 3)
    expected = np.array([[2, 1, 0],   # class 0: 2 right, 1 as class 1
                         [0, 1, 1],   # class 1: 1 right, 1 as class 2
                         [0, 0, 1]])  # class 2: 1 right
    assert cm.tolist() == expected.tolist()
    iou = iou_from_confusion(cm)
    # IoU_0 = 2 / (3 + 2 - 2) = 2/3; IoU_1 = 1 / (2 + 2 - 1) = 1/3; IoU_2 = 1 / (1 + 2 - 1) = 1/2
    np.testing.assert_allclose(iou, [2 / 3, 1 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx(100 * (2 / 3 + 1 / 3 + 1 / 2) / 3)


def test_absent_class_is_not_counted_but_false_positive_is():
    cm = np.array([[5, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert np.isnan(iou_from_confusion(cm)[1:]).all()
    assert mean_iou(cm) == pytest.approx(100.0)
    cm_fp = np.array([[4, 0, 1], [0, 0, 0], [0, 0, 0]])  # class 2 predicted, never true: IoU 0
    assert mean_iou(cm_fp) == pytest.approx(100 * (0.8 + 0.0) / 2)
    assert normalize_confusion(cm_fp)[0].tolist() == [0.8, 0.0, 0.2]


class EchoModel(torch.nn.Module):
    """predict(x) = x: the 'scores' of a window are its own pixels, so any correct
    slide-window average reproduces the image."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def predict(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        return x


@pytest.mark.parametrize("size,crop,stride", [((20, 30), (8, 12), (5, 7)), ((16, 16), (32, 32), (8, 8)),
                                              ((24, 40), (8, 8), (8, 8))])
def test_slide_inference_covers_and_averages(size, crop, stride):
    model = EchoModel()
    img = torch.randn(1, 3, *size)
    out = slide_inference(model, img, crop, stride, num_classes=3, multiple=1)
    torch.testing.assert_close(out, img)
    h, w = size
    ch, cw = min(crop[0], h), min(crop[1], w)
    rows = max(math.ceil((h - ch) / stride[0]), 0) + 1
    cols = max(math.ceil((w - cw) / stride[1]), 0) + 1
    assert len(model.calls) == rows * cols and set(model.calls) == {(ch, cw)}


def test_slide_pads_to_patch_multiple():
    model = EchoModel()
    img = torch.randn(1, 3, 20, 30)
    out = slide_inference(model, img, (12, 12), (8, 8), num_classes=3, multiple=8)
    torch.testing.assert_close(out, img)
    assert set(model.calls) == {(16, 16)}


def test_overlay_keeps_ignored_pixels():
    img = np.full((2, 2, 3), 100, np.uint8)
    ids = np.array([[0, 255], [10, 255]])
    out = overlay(img, ids, alpha=1.0)
    assert out[0, 1].tolist() == [100, 100, 100]
    assert out[0, 0].tolist() == [128, 64, 128]  # road colour


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_config):
    tmp = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(tmp, seed=1, optim={"iters": 2},
                      data={"random_size": [40, 56], "random_count": 3, "targets": ["cityscapes", "bdd100k"]},
                      eval={"mode": "slide", "crop": [32, 32], "stride": [24, 24]})
    train(load_config(cfg))
    return tmp


def test_evaluate_writes_table_and_figures(tiny_run):
    model, cfg = load_run(tiny_run / "run")
    res = evaluate(model, cfg, ["gta", "cityscapes", "bdd100k"], tiny_run / "ev", progress=False)
    assert set(res["domains"]) == {"gta", "cityscapes", "bdd100k"}
    assert res["targets"] == ["cityscapes", "bdd100k"]
    assert res["mean"] == pytest.approx(np.mean([res["domains"][d]["miou"] for d in res["targets"]]))
    for f in ("metrics.json", "results.md", "confusion.png", "miou.png"):
        assert (tiny_run / "ev" / f).is_file()
    table = format_table(res)
    assert table.splitlines()[0].startswith("| | gta | cityscapes | bdd100k | mean (targets) |")
    assert "| road |" in table
    assert json.loads((tiny_run / "ev" / "metrics.json").read_text())["domains"]["gta"]["images"] == 3
    img = torch.randint(0, 255, (3, 40, 56), dtype=torch.uint8)
    pred = infer(model, img, "whole", resize=(32, 48))
    assert pred.shape == (40, 56) and pred.max() < 19
    batch = infer(model, torch.stack([img, img.flip(-1)]), "whole", resize=(32, 48))
    assert batch.shape == (2, 40, 56) and torch.equal(batch[0], pred)
    # batched evaluation gives the same confusion matrix
    from reinlite.engine.evaluate import evaluate_dataset
    from reinlite.data.pipeline import build_dataset
    ds = build_dataset(cfg, "cityscapes", "val")
    one = evaluate_dataset(model, ds, cfg, progress=False)
    cfg2 = load_config(cfg, ["eval.batch_size=2"])
    two = evaluate_dataset(model, ds, cfg2, progress=False)
    assert two.sum() == one.sum() and (two - one).abs().sum() <= 8  # equal up to float ties


def test_cli_eval_and_predict(tiny_run, capsys, tmp_path):
    from PIL import Image

    assert cli.main(["eval", "--checkpoint", str(tiny_run / "run"), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "| mIoU |" in out and "mean mIoU over cityscapes, bdd100k" in out
    img = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(img)
    assert cli.main(["predict", str(img), "--checkpoint", str(tiny_run / "run")]) == 0
    assert (tmp_path / "street_pred.png").is_file()
    assert Image.open(tmp_path / "street_pred.png").size == (60, 40)
    # error messages
    assert cli.main(["predict", str(tmp_path / "nope.png"), "--checkpoint", str(tiny_run / "run")]) == 2
    assert "image not found" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert cli.main(["predict", str(bad), "--checkpoint", str(tiny_run / "run")]) == 2
    assert "not an image" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(tiny_run / "run"), "eval.mdoe=slide"]) == 2
    assert "unknown config key 'eval.mdoe'" in capsys.readouterr().err


@pytest.mark.slow  # the demo end to end
def test_run_demo_prints_the_table(tiny_run, capsys):
    from reinlite.engine.demo import run_demo
    lc = load_config

    cfg = json.loads((tiny_run / "run" / "config.json").read_text())
    res = run_demo(lc(cfg))  # the run is finished: resume is a no-op, then evaluation
    out = capsys.readouterr().out
    assert "| mIoU |" in out and "mean mIoU over the unseen target domains" in out
    assert set(res["domains"]) == {"gta", "cityscapes", "bdd100k"}
    assert (tiny_run / "run" / "eval" / "confusion.png").is_file()


def test_keep_ratio_resize_is_mmsegs():
    from reinlite.config import EvalConfig
    from reinlite.engine.evaluate import domain_resize, keep_ratio_size

    assert keep_ratio_size(1024, 2048, (512, 1024)) == (512, 1024)    # Cityscapes
    assert keep_ratio_size(720, 1280, (720, 1280)) == (720, 1280)     # BDD100K
    assert keep_ratio_size(750, 1000, (512, 1024)) == (512, 683)      # a 4:3 Mapillary image, halved
    e = EvalConfig(resize={"mapillary": [512, 1024]}, keep_ratio=True)
    assert domain_resize(e, "mapillary", (1500, 2000)) == (512, 683)
    assert domain_resize(e, "cityscapes", (1500, 2000)) is None
    assert domain_resize(EvalConfig(resize=[64, 128]), "x", (10, 10)) == (64, 128)


def test_overlay_uses_the_runs_classes():
    from reinlite.data.classes import palette

    img = np.zeros((2, 3, 3), np.uint8)
    ids = np.array([[0, 1, 2], [3, 255, 1]])
    out = overlay(img, ids, alpha=1.0, classes=["bg", "crack", "rust"])
    pal = palette(["bg", "crack", "rust"])
    assert out[0, 2].tolist() == pal[2].tolist()
    assert out[1, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [0, 0, 0]  # id 3 >= K, 255: image
    with pytest.raises(ValueError, match="label map is 2x1 but the image is 3x2"):
        overlay(img, np.zeros((1, 2)), classes=3)
