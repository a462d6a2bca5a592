import dataclasses
import inspect

import pytest

from reinlite import Rein
from reinlite.config import (Config, ConfigError, ReinConfig, changed_keys, load_config,
                             num_queries)


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


def test_overrides_and_free_form_keys():
    cfg = load_config({}, ["optim.iters=7", "model.head.pixel_decoder=fpn", "model.method=frozen",
                           "model.rein=null", "eval.resize=[64,128]", "data.roots.gta=/data/gta"])
    assert cfg.optim.iters == 7 and cfg.model.head.pixel_decoder == "fpn"
    assert cfg.model.rein is None and cfg.eval.resize == [64, 128]
    assert cfg.data.roots == {"gta": "/data/gta"}
    # a partial rein object keeps Rein's other defaults
    assert load_config({"model": {"rein": {"num_tokens": 10}}}).model.rein.query_dim == 256


def test_rein_defaults_are_reins_own_signature():
    params = inspect.signature(Rein.__init__).parameters
    rein = ReinConfig()
    for f in dataclasses.fields(rein):
        assert getattr(rein, f.name) == params[f.name].default, f.name
    assert {f.name for f in dataclasses.fields(rein)} == set(params) - {"self", "num_layers", "embed_dim", "patch_size"}


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
