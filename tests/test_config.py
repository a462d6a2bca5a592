import dataclasses
import inspect
from pathlib import Path

import pytest

from reinlite.errors import InputError

from reinlite import Rein, config, config_checks
from reinlite.config import (Config, ConfigError, HeadConfig, LossConfig, OptimConfig, ReinConfig, VptConfig,
                             backbone_lr_mult, changed_keys, load_config, method_options, num_queries)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"'optim.lrr'.*did you mean 'optim.lr'"):
        load_config({"optim": {"lrr": 1.0}})
    with pytest.raises(ConfigError, match=r"'optim.iterz'"):
        load_config({}, ["optim.iterz=3"])
    with pytest.raises(ConfigError, match=r"'model.rein.rnak'.*did you mean 'model.rein.rank'"):
        load_config({"model": {"rein": {"rnak": 4}}})
    with pytest.raises(ConfigError, match="key=value"):
        load_config({}, ["optim.iters"])
    with pytest.raises(FileNotFoundError, match="course"):
        load_config("no_such_config")
    with pytest.raises(ConfigError, match="model.method must be one of"):
        load_config({}, ["model.method=loar"])
    assert issubclass(ConfigError, InputError)


def test_overrides_and_free_form_keys():
    cfg = load_config({}, ["optim.iters=7", "model.head.pixel_decoder=fpn", "model.method=frozen",
                           "model.rein=null", "eval.resize=[64,128]", "data.roots.gta=/data/gta"])
    assert cfg.optim.iters == 7 and cfg.model.head.pixel_decoder == "fpn"
    assert cfg.model.rein is None and cfg.eval.resize == [64, 128]
    assert cfg.data.roots == {"gta": "/data/gta"}
    # a partial rein object keeps Rein's other defaults
    assert load_config({"model": {"rein": {"num_tokens": 10}}}).model.rein.query_dim == 256


def test_rein_defaults_are_reins_own_signature():
    # one home: ReinConfig; Rein's public keyword defaults are read from it
    params = inspect.signature(Rein.__init__).parameters
    rein = ReinConfig()
    for f in dataclasses.fields(rein):
        assert getattr(rein, f.name) == params[f.name].default, f.name
    assert {f.name for f in dataclasses.fields(rein)} == set(params) - {"self", "num_layers", "embed_dim", "patch_size"}
    assert params["patch_size"].default == ReinConfig.patch_size == 16  # not a config key: the ViT's
    assert (rein.num_tokens, rein.rank, rein.query_dim, rein.scale_init) == (100, None, 256, 1e-3)


def test_config_imports_no_model_code():
    import ast

    for module in (config, config_checks):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in imported if m.startswith("reinlite")}
        # the class list is read from the dataset (reinlite.data.kinds); no model, engine or course code
        assert ours <= {"reinlite.errors", "reinlite.config", "reinlite.config_checks", "reinlite.data.kinds"}, module


def test_module_defaults_come_from_the_config():
    from reinlite.models.baselines import ADAPTERS, METHODS, VisualPrompts
    from reinlite.models.head import PIXEL_DECODERS, Mask2FormerHead
    from reinlite.models.losses import Mask2FormerLoss

    head = inspect.signature(Mask2FormerHead.__init__).parameters
    for f in dataclasses.fields(HeadConfig):
        if f.name != "num_queries":
            assert head[f.name].default == getattr(HeadConfig(), f.name), f.name
    assert head["num_queries"].default == ReinConfig.num_tokens  # the head's m is Rein's m
    loss = inspect.signature(Mask2FormerLoss.__init__).parameters
    for f in dataclasses.fields(LossConfig):
        assert loss[f.name].default == getattr(LossConfig(), f.name), f.name
    assert inspect.signature(VisualPrompts.__init__).parameters["num_prompts"].default == VptConfig.num_prompts
    # the registries build exactly the names the config accepts
    assert tuple(METHODS) == config.METHODS and set(ADAPTERS) == set(config.METHODS) - {"rein"}
    assert tuple(PIXEL_DECODERS) == config.PIXEL_DECODERS


def test_method_options_are_typed_and_old_method_kwargs_fold_in():
    cfg = load_config("course", ["model.method=lora", "model.lora.rank=4"])
    assert cfg.model.lora.rank == 4 and method_options(cfg.model) == {"rank": 4, "alpha": None, "targets": ["qkv"]}
    old = load_config("course", ["model.method=lora", 'model.method_kwargs={"rank": 2}'])
    assert old.model.lora.rank == 2 and old.model.method_kwargs == {}
    assert load_config("course", ["model.method=vpt", "model.method_kwargs.num_prompts=7"]).model.vpt.num_prompts == 7
    assert method_options(load_config("course", ["model.method=full"]).model) == {}
    with pytest.raises(ConfigError, match=r"'model.lora.rnak'.*did you mean 'model.lora.rank'"):
        load_config("course", ["model.method=lora", 'model.method_kwargs={"rnak": 2}'])
    with pytest.raises(ConfigError, match="model.method=frozen takes no options"):
        load_config("course", ["model.method=frozen", 'model.method_kwargs={"rank": 2}'])
    # a stored config of an older version (no typed options) reads the same
    stored = load_config("course", ["model.method=lora", "model.lora.rank=2"]).to_dict()
    for key in ("lora", "vpt", "adaptformer"):
        del stored["model"][key]
    stored["model"]["method_kwargs"] = {"rank": 2}
    assert changed_keys(stored, load_config("course", ["model.method=lora", "model.lora.rank=2"]).to_dict()) == []


def test_backbone_lr_mult_depends_on_the_method_in_one_place():
    assert load_config("course").optim.backbone_lr_mult == 1.0
    assert load_config("course", ["model.method=full"]).optim.backbone_lr_mult == config.FULL_BACKBONE_LR_MULT
    assert load_config("course", ["model.method=full", "optim.backbone_lr_mult=1.0"]).optim.backbone_lr_mult == 1.0
    assert backbone_lr_mult(OptimConfig(), "full") == 0.1 and backbone_lr_mult(OptimConfig(), "lora") == 1.0
    # the value is stored explicitly, so a checkpoint of an older version (1.0 stored) compares equal
    old = load_config("course").to_dict()
    assert changed_keys(old, load_config("course").to_dict()) == []


@pytest.mark.parametrize("override, message", [
    ("optim.iters=-5", "optim.iters must be >= 1, got -5"),
    ("optim.iters=0", "optim.iters must be >= 1, got 0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0"),
    ("optim.batch_size=2.5e-1", "optim.batch_size must be >= 1"),
    ("optim.iters=many", "optim.iters must be a number, got 'many'"),
    ("optim.grad_clip=-1", "optim.grad_clip must be > 0"),
    ("model.rein.num_tokens=1", "model.rein.num_tokens must be >= 2"),
    ("model.rein.rank=0", "model.rein.rank must be >= 1"),
    ("loss.importance_ratio=1.5", "loss.importance_ratio must be >= 0 and <= 1"),
    ("model.vpt.num_prompts=-1", "model.vpt.num_prompts must be >= 0"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("model.method=lorra", "model.method must be one of .* got 'lorra' \\(did you mean 'lora'\\?\\)"),
    ("model.head.pixel_decoder=fnp", "pixel_decoder must be one of msdeform, fpn, got 'fnp' \\(did you mean 'fpn'"),
    ("model.head.num_heads=3", "hidden_dim=128 is not divisible by model.head.num_heads=3"),
    ("model.backbone=course_vti", "did you mean 'course_vit'"),
    ("model.backbone=vit_nonexistent_patch16", "model.backbone 'vit_nonexistent_patch16' is neither a course "
                                               "backbone .* nor a timm model"),
])
def test_what_a_user_can_mistype_is_a_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("course", [override])


def test_timm_and_course_backbones_pass():
    for name in ("course_vit", "course_vit_mae", "vit_small_patch14_dinov2", "vit_base_patch16_224.augreg_in21k"):
        assert load_config("course", [f"model.backbone={name}"]).model.backbone == name


def test_query_count_is_derived_and_conflicts_are_errors():
    cfg = load_config("course")
    assert cfg.model.head.num_queries is None and num_queries(cfg.model) == cfg.model.rein.num_tokens
    with pytest.raises(ConfigError, match=r"num_queries=5 conflicts with model.rein.num_tokens=32"):
        load_config("course", ["model.head.num_queries=5"])
    lora = load_config("course", ["model.method=lora"])
    assert num_queries(lora.model) == 32  # the baselines predict as many masks as Rein
    with pytest.raises(ConfigError, match="Rein's options go in model.rein"):
        load_config("course", ["model.method_kwargs.num_tokens=8"])


def test_shipped_configs_load():
    for name in ("course", "gta2cs_dinov2_large"):
        assert load_config(name).name == name
    big = load_config("gta2cs_dinov2_large")
    assert big.optim.iters == 40000 and big.optim.batch_size == 4
    assert big.model.head.num_layers == 9 and big.model.head.pixel_decoder == "msdeform"
    assert big.eval.crop == [512, 512] and big.eval.stride == [341, 341] and big.eval.keep_ratio
    assert big.data.short_sides == [int(512 * x * 0.1) for x in range(5, 21)]
    assert big.model.rein.num_tokens == 100 and big.model.rein.rank == 16


def test_round_trip_and_changed_keys():
    cfg = load_config("course")
    again = load_config(cfg.to_dict())
    assert again == cfg and isinstance(again, Config)
    other = load_config(cfg, ["optim.lr=0.5", "optim.iters=9", "train.log_every=3"])
    assert changed_keys(cfg.to_dict(), other.to_dict()) == ["optim.lr"]
    with pytest.raises(ConfigError, match="short_sides"):
        load_config("course", ["data.short_sides=[64]"])


# --------------------------------------------------------------------------- the command line
@pytest.mark.parametrize("override, message", [
    ("optim.iters=-5", "optim.iters must be >= 1, got -5"),
    ("model.backbone=vit_nonexistent_patch16", "model.backbone 'vit_nonexistent_patch16' is neither"),
    ("model.method=lorra", "did you mean 'lora'"),
    ("model.head.pixel_decoder=fnp", "did you mean 'fpn'"),
])
def test_cli_turns_config_errors_into_one_line(override, message, tmp_path, capsys):
    from reinlite import cli

    assert cli.main(["train", "--config", "course", override, f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reinlite train: error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()  # nothing was built


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch):
    from reinlite import cli
    from reinlite.engine import train

    def shape_bug(args):
        raise ValueError("a shape bug deep in training")

    monkeypatch.setattr(train, "run_train_cli", shape_bug)
    with pytest.raises(ValueError, match="shape bug"):
        cli.main(["train", "--config", "course"])
    monkeypatch.setattr(train, "run_train_cli", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        cli.main(["train", "--config", "course"])


def test_cli_is_one_table():
    from reinlite import cli

    names = [c.name for c in cli.COMMANDS]
    assert len(names) == len(set(names))
    assert {"train", "eval", "predict", "data", "info", "demo", "costs", "sweep"} <= set(names)
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(names) | {"bench"}
