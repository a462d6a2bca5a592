"""Dataset kinds: ``data.kind`` -> how to build a domain's dataset and where its classes are.

    DATA_KINDS["hf"].build(cfg, "validation", "val")    # a torch Dataset of (image, label)
    DATA_KINDS["pairs"].classes(cfg.data)               # class names, or None if it has none

Adding a kind is one entry in :data:`DATA_KINDS`: a :class:`DataKind` with ``build(cfg,
domain, split)`` (items: dict(image, label[, name]) or (image, label); labels are class ids,
255 = ignore) and ``classes(data_cfg)`` (the dataset's own class names, or None).

=========  =====================================================================================
benchmark  the embedded benchmark (``reinlite data benchmark``), the 19 Cityscapes classes
folders    the real GTA5 / SYNTHIA / Cityscapes / BDD100K / Mapillary layouts (``data.roots``)
hf         a Hugging Face dataset: a ``save_to_disk`` folder or a Hub name (reinlite.data.hf)
pairs      a folder with images/ and labels/ matched by file stem (reinlite.data.pairs)
random     tiny coloured rectangles (tests)
=========  =====================================================================================

Domains of the ``hf`` and ``pairs`` kinds: the source (``data.source``, any name) is
``data.root`` at ``data.source_split``; a target is a split of ``data.root`` (``"validation"``)
or ``"PATH_OR_NAME:SPLIT"`` (another dataset), or a name in ``data.roots``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from reinlite.data.classes import CLASSES

__all__ = ["DataKind", "DATA_KINDS", "dataset_classes", "split_target", "domain_source",
           "check_same_classes"]


@dataclass(frozen=True)
class DataKind:
    """How one ``data.kind`` builds datasets (``build``) and names its classes (``classes``)."""
    build: Callable                              # (cfg, domain, split) -> Dataset
    classes: Callable = lambda d: list(CLASSES)  # (data_cfg) -> [names] or None
    doc: str = ""


def split_target(text: str) -> tuple[Optional[str], str]:
    """``"PATH_OR_NAME:SPLIT"`` -> (PATH_OR_NAME, SPLIT); ``"SPLIT"`` -> (None, SPLIT).
    A colon inside a path (``C:\\data``) is not a separator: the split has no slashes."""
    head, sep, tail = str(text).rpartition(":")
    if sep and head and tail and "/" not in tail and "\\" not in tail:
        return head, tail
    return None, str(text)


def domain_source(cfg, domain: str, split: str) -> tuple[str, str]:
    """(dataset root or Hub name, split) of a domain of the hf / pairs kinds."""
    d = cfg.data
    if d.roots and domain in d.roots:
        where, name = split_target(d.roots[domain])
        return (where, name) if where else (d.roots[domain], split)
    if domain == d.source:
        return d.root, d.source_split
    where, name = split_target(domain)
    return (where if where is not None else d.root), name


# ----------------------------------------------------------------------------------- builders
def _benchmark(cfg, domain, split):
    from reinlite.config import ConfigError
    from reinlite.data.benchmark import benchmark_datasets
    from reinlite.data.pipeline import resolve_path

    d = cfg.data
    root = resolve_path(d.roots.get(domain, d.root) if d.roots else d.root)
    sets = benchmark_datasets(root)
    key = domain if not (domain == "gta" and split == "val") else "gta_val"
    if key not in sets:
        raise ConfigError(f"domain {domain!r} is not in the benchmark at {root} "
                          f"(it has {', '.join(sorted(sets))})")
    return sets[key]


def _folders(cfg, domain, split):
    from reinlite.config import ConfigError
    from reinlite.data.datasets import build_dataset as folder_dataset

    d = cfg.data
    root = d.roots.get(domain) if d.roots else None
    if root is None:
        raise ConfigError(f"data.roots has no folder for domain {domain!r}")
    name = {"gta": "gta5"}.get(domain, domain)
    if name == "synthia":
        return folder_dataset(name, root)
    if name == "mapillary" and split == "val":
        split = "validation"
    return folder_dataset(name, root, split=split)


def _random(cfg, domain, split):
    from reinlite.data.pipeline import RandomShapesDataset, mix_seed

    d = cfg.data
    seed = mix_seed(cfg.seed, domain, split) % 100000
    return RandomShapesDataset(d.random_count, d.random_size, cfg.model.head.num_classes, seed=seed)


def _hf(cfg, domain, split):
    from reinlite.data.hf import hf_for_domain

    return hf_for_domain(cfg, domain, split)


def _hf_classes(d):
    from reinlite.data.hf import hf_classes

    return hf_classes(d.root, d.label_column)


def _pairs(cfg, domain, split):
    from reinlite.data.pairs import pairs_for_domain

    return pairs_for_domain(cfg, domain, split)


def _pairs_classes(d):
    from reinlite.data.pairs import pairs_classes

    return pairs_classes(d.root)


DATA_KINDS: dict[str, DataKind] = {
    "benchmark": DataKind(_benchmark, doc="the embedded benchmark (19 Cityscapes classes)"),
    "folders": DataKind(_folders, doc="the real datasets' layouts, one root per domain"),
    "hf": DataKind(_hf, _hf_classes, doc="a Hugging Face dataset (save_to_disk folder or Hub name)"),
    "pairs": DataKind(_pairs, _pairs_classes, doc="a folder of images/ and labels/ matched by stem"),
    "random": DataKind(_random, doc="tiny coloured rectangles (tests)"),
}


def dataset_classes(d) -> list:
    """The class names of ``data`` (a DataConfig): ``d.classes`` if given, else the dataset's
    own; a dataset without any is an error that says how to give them."""
    from reinlite.config import ConfigError

    if d.classes:
        return list(d.classes)
    kind = DATA_KINDS.get(d.kind)
    if kind is None:
        raise ConfigError(f"unknown data.kind {d.kind!r}: use one of {', '.join(DATA_KINDS)}")
    names = kind.classes(d)
    if not names:
        raise ConfigError(
            f"the {d.kind} dataset at {str(d.root)!r} does not name its classes: give "
            f"data.classes='[\"background\", \"crack\", ...]' (label id i is class i) or save a "
            f"classes.json (a JSON list of names) in {Path(str(d.root))}")
    return list(names)


def check_same_classes(own, wanted, where: str) -> None:
    """Refuse a dataset whose own class list (``own``; None: it names none) is not ``wanted``
    (the run's ``data.classes``, e.g. a checkpoint's), naming both."""
    from reinlite.config import ConfigError

    if own is None or wanted is None or list(own) == list(wanted):
        return
    raise ConfigError(f"{where} has the classes [{', '.join(own)}] ({len(own)}), but the model / "
                      f"data.classes has [{', '.join(wanted)}] ({len(wanted)}): a model trained on "
                      f"some classes cannot be evaluated on others")
