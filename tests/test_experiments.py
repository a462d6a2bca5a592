"""The probe and the domain-shift measurement as package code (reinlite.experiments), on a tiny benchmark."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reinlite.cli import build_parser, main as cli_main
from reinlite.data import NUM_CLASSES
from reinlite.data.benchmark import write_benchmark
from reinlite.data.transforms import normalize
from reinlite.engine.evaluate import confusion_matrix, mean_iou
from reinlite.experiments import command_of, domain_shift, probe

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_benchmark(root, seed=3, source=6, target=3, size=(32, 64), workers=1, progress=False)
    return root


def test_probe_miou_is_evaluates(bench):
    """One mIoU for the project: the probe's equals reinlite.engine.evaluate's on the same predictions."""
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(3, NUM_CLASSES, 4, 8, generator=g)
    masks = torch.randint(0, NUM_CLASSES, (3, 32, 64), generator=g)
    masks[:, :4] = 255
    m, conf = probe.miou(lambda f: f, feat, masks, NUM_CLASSES, batch=2)
    logits = torch.nn.functional.interpolate(feat, size=(32, 64), mode="bilinear", align_corners=False)
    assert m == pytest.approx(mean_iou(confusion_matrix(logits.argmax(1), masks, NUM_CLASSES)))
    assert int(conf.sum()) == 3 * 28 * 64


@pytest.mark.slow
def test_probe_runs_through_the_cli_and_writes_json(bench, tmp_path, capsys):
    out = tmp_path / "probe.json"
    rc = cli_main(["probe", "--bench", str(bench), "--source", "4", "--target", "2", "--size", "32", "64",
                   "--epochs", "1", "--threads", "1", "--json", str(out), "--no-pca"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| course_vit |" in text and "| random ViT |" in text and "| course / random |" in text
    rec = json.loads(out.read_text())
    assert set(rec["results"]["course_vit"]) == {"gta_val", "cityscapes", "bdd100k", "mapillary", "acdc"}
    assert set(rec["ratio"]) == {"cityscapes", "bdd100k", "mapillary", "acdc"} and "ok" in rec
    assert all(0 <= v <= 100 for r in rec["results"].values() for v in r.values())


def test_probe_rejects_an_unknown_backbone():
    with pytest.raises(ValueError, match="course_vit_mae"):
        probe.build("dinov3", (32, 64))


@pytest.mark.slow
def test_domain_shift_runs_and_uses_evaluates_miou(bench, capsys):
    assert cli_main(["domain-shift", "--root", str(bench), "--steps", "2", "--batch", "2",
                     "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "| gta_val | held-out source |" in text and "| targets (mean) |" in text
    model = domain_shift.SmallFCN(width=4)
    xs = torch.randint(0, 256, (2, 3, 16, 32), dtype=torch.uint8)
    ys = torch.randint(0, NUM_CLASSES, (2, 16, 32), dtype=torch.uint8)
    m, iou = domain_shift.miou(model, xs, ys)
    with torch.no_grad():
        pred = model(normalize(xs)).argmax(1)
    assert m == pytest.approx(mean_iou(confusion_matrix(pred, ys, NUM_CLASSES)))
    assert iou.shape == (NUM_CLASSES,)


def test_subcommands_exist_and_commands_are_recorded():
    parser = build_parser()
    for cmd in ("probe", "pretrain", "pretrain-mae", "domain-shift"):
        assert parser.parse_args([cmd]).func is not None
    from reinlite.experiments import pretrain_mae

    args = parser.parse_args(["pretrain-mae", "--out", "/tmp/x", "--steps", "7", "--resume"])
    assert command_of("reinlite pretrain-mae", args, pretrain_mae.add_arguments) == \
        "reinlite pretrain-mae --out /tmp/x --steps 7 --resume"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["probe_backbone.py", "domain_shift.py", "pretrain_course_vit.py"])
def test_data_scripts_are_thin_wrappers(script):
    path = ROOT / "data_scripts" / script
    assert "sys.path" not in path.read_text() and len(path.read_text().splitlines()) < 15
    out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, check=True)
    assert "usage: python data_scripts/" + script in out.stdout
