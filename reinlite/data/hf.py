"""Hugging Face ``datasets`` as a data source (``data.kind=hf``), and the round trip to it.

    ds = open_hf_split("data/my_hf", "train")          # a save_to_disk folder (offline) ...
    ds = open_hf_split("user/street-scenes", "validation", label_column="mask")  # ... or the Hub
    image, label = ds.load(0)                           # uint8 [H, W, 3], uint8 [H, W]
    to_hf_dataset(folder_ds, "data/hf/cityscapes_val")  # any reinlite folder dataset -> HF
    benchmark_to_hf("data/benchmark", "data/benchmark_hf")   # `reinlite data benchmark --format hf`

Rows are decoded one at a time from the memory-mapped Arrow files (``ds[i]`` reads row i
only), so a dataset larger than RAM trains; the dataset pickles by file reference, so
DataLoader workers (``data.num_workers``) each read their own rows. The label column holds an
image (or array) of class ids, 255 = ignore. Class names: ``data.classes``, else a
``classes.json`` saved beside the dataset (``to_hf_dataset(..., class_names=...)`` writes
one), else a ``ClassLabel`` feature of the label column, else ``id2label.json`` in the Hub
repository.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from reinlite.data.pairs import check_label, read_classes_file

__all__ = ["to_hf_dataset", "benchmark_to_hf", "load_hf_dataset", "open_hf", "open_hf_split",
           "hf_for_domain", "hf_classes", "HFSegmentation"]


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError("data.kind=hf needs the `datasets` package: pip install 'reinlite[datasets]' "
                          "(or use data.kind=pairs: a folder of images/ and labels/)") from None
    return datasets


def _features():
    datasets = _datasets()
    return datasets.Features({"image": datasets.Image(), "label": datasets.Image(),
                              "path": datasets.Value("string")})


def _rows(ds, progress: bool, desc: str):
    from tqdm.auto import tqdm

    for i in tqdm(range(len(ds)), disable=not progress, desc=desc):
        img_path = ds.pairs[i][0]
        _, mask = ds.load(i)
        buf = io.BytesIO()
        Image.fromarray(mask).save(buf, format="PNG")
        yield {"image": {"bytes": Path(img_path).read_bytes(), "path": None},
               "label": {"bytes": buf.getvalue(), "path": None}, "path": str(img_path)}


def _write_classes(path, class_names) -> None:
    if class_names:
        import json

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "classes.json").write_text(json.dumps(list(class_names), indent=1) + "\n")


def to_hf_dataset(ds, path=None, progress: bool = False, class_names=None):
    """A reinlite folder dataset -> ``datasets.Dataset`` (saved to ``path`` when given, with
    ``classes.json`` beside it when ``class_names`` or ``ds.class_names`` are known).

    Rows: the image file's bytes (not re-encoded), the class-id label as a PNG, the source path.
    Every pair is read and checked (sizes, corrupt files) as the loader would.
    """
    datasets = _datasets()
    if path is None:
        return datasets.Dataset.from_list(list(_rows(ds, progress, "to_hf_dataset")), features=_features())
    _save(datasets.Dataset, path, dict(ds=ds, progress=progress, desc="to_hf_dataset"))
    _write_classes(path, class_names or getattr(ds, "label_names", None))
    return datasets.load_from_disk(str(path))


def _save(cls, path, gen_kwargs: dict) -> None:
    """Stream rows into Arrow files (no full copy in memory) in a scratch cache, then
    ``save_to_disk(path)``; ``gen_kwargs`` of several splits: {split: kwargs}."""
    datasets = _datasets()
    quiet = not any(kw.get("progress") for kw in ([gen_kwargs] if cls is datasets.Dataset
                                                  else gen_kwargs.values()))
    was_on = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        _save_rows(cls, path, gen_kwargs, datasets)
    finally:
        if quiet and was_on:
            datasets.enable_progress_bars()


def _save_rows(cls, path, gen_kwargs, datasets) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="reinlite-hf-") as tmp:
        def one(kw):
            return datasets.Dataset.from_generator(_rows, features=_features(), gen_kwargs=kw,
                                                   cache_dir=tmp, keep_in_memory=False)
        if cls is datasets.Dataset:
            one(gen_kwargs).save_to_disk(str(path))
        else:
            datasets.DatasetDict({k: one(kw) for k, kw in gen_kwargs.items()}).save_to_disk(str(path))


def benchmark_to_hf(root, out, progress: bool = True):
    """The embedded benchmark as one ``DatasetDict`` saved to ``out``: splits ``train`` (the
    source), ``validation`` (held-out source) and one per target domain (``cityscapes``, ...),
    with the 19 class names in ``out/classes.json``. Train on it with ``data.kind=hf
    data.root=OUT data.targets='["cityscapes", "bdd100k", "mapillary"]'``."""
    from reinlite.data.benchmark import benchmark_datasets
    from reinlite.data.classes import CLASSES

    datasets = _datasets()
    names = {"gta": "train", "gta_val": "validation"}
    kwargs = {names.get(k, k): dict(ds=v, progress=progress, desc=k)
              for k, v in benchmark_datasets(root).items()}
    _save(datasets.DatasetDict, out, kwargs)
    _write_classes(out, CLASSES)
    return datasets.load_from_disk(str(out))


def _is_saved(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def open_hf(root, split: Optional[str] = None):
    """A saved folder (``load_from_disk``, offline; every split) or a Hub name / folder of
    data files (``load_dataset``, that split)."""
    from reinlite.data.pipeline import resolve_path

    datasets = _datasets()
    path = resolve_path(root)
    if path.is_dir() and _is_saved(path):
        return datasets.load_from_disk(str(path))
    if path.exists() or not str(root).strip():
        raise FileNotFoundError(f"no saved Hugging Face dataset at {str(root)!r} (no dataset_dict.json "
                                "or state.json); save one with dataset.save_to_disk(path)")
    try:
        return datasets.load_dataset(str(root), split=split)
    except Exception as err:  # offline, unknown name, no such split: one clear line
        raise FileNotFoundError(f"cannot load the Hugging Face dataset {str(root)!r} (split {split!r}): "
                                f"{type(err).__name__}: {err}. A local folder must be a save_to_disk "
                                "folder; a Hub name needs the network (HF_DATASETS_OFFLINE unset)") from None


def _pick_split(hf, root, split: Optional[str], whole_ok: bool):
    if hasattr(hf, "keys"):  # DatasetDict
        if split not in hf:
            raise FileNotFoundError(f"the Hugging Face dataset {str(root)!r} has no split {split!r}; "
                                    f"its splits: {', '.join(hf.keys())}")
        return hf[split]
    own = str(hf.split) if getattr(hf, "split", None) is not None else None
    if whole_ok or split is None or split == own:
        return hf
    raise FileNotFoundError(f"{str(root)!r} is a single Hugging Face dataset (no splits), asked for "
                            f"split {split!r}; give a target as 'PATH:SPLIT' of a DatasetDict, or "
                            "the path of another saved dataset")


def open_hf_split(root, split: Optional[str] = None, image_column: str = "image",
                  label_column: str = "label", class_names=None, name: str = "",
                  whole_ok: bool = True, transform=None) -> "HFSegmentation":
    """The ``split`` of the dataset at ``root`` as (image, label) pairs (see the module doc)."""
    hf = _pick_split(open_hf(root, split), root, split, whole_ok)
    where = f"{root}" + (f":{split}" if split else "")
    return HFSegmentation(hf, transform, image_column, label_column, class_names, name or where)


def hf_for_domain(cfg, domain: str, split: str) -> "HFSegmentation":
    """The dataset of a domain of ``data.kind=hf`` (see reinlite.data.kinds)."""
    from reinlite.data.kinds import domain_source, split_target
    from reinlite.data.pipeline import resolve_path

    d = cfg.data
    whole_ok = domain == d.source or bool(d.roots and domain in d.roots)
    where, part = domain_source(cfg, domain, split)
    path, _ = split_target(domain)
    if (path is None and not whole_ok and resolve_path(domain).is_dir()
            and _is_saved(resolve_path(domain))):  # a target that is a saved dataset of its own
        where, part, whole_ok = domain, None, True
    from reinlite.data.kinds import check_same_classes

    ds = open_hf_split(where, part, d.image_column, d.label_column, d.classes, domain, whole_ok)
    check_same_classes(hf_classes(where, d.label_column), d.classes, f"the Hugging Face dataset {where}")
    return ds


def _classlabel_names(feature) -> Optional[list]:
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel)
    return _classlabel_names(inner) if inner is not None else None


def hf_classes(root, label_column: str = "label") -> Optional[list]:
    """The class names a dataset carries (classes.json beside it, a ClassLabel feature,
    id2label.json on the Hub), or None."""
    from reinlite.data.pairs import pairs_classes
    from reinlite.data.pipeline import resolve_path

    path = resolve_path(root)
    if path.is_dir():
        names = pairs_classes(path)
        if names:
            return names
        if _is_saved(path):
            hf = open_hf(path)
            part = next(iter(hf.values())) if hasattr(hf, "values") else hf
            return _classlabel_names(part.features.get(label_column))
        return None
    try:  # the Hub (online only): the label feature, else the repository's id2label.json
        datasets = _datasets()
        feats = datasets.load_dataset_builder(str(root)).info.features or {}
        names = _classlabel_names(feats.get(label_column))
        if names:
            return names
        from huggingface_hub import hf_hub_download

        return read_classes_file(hf_hub_download(str(root), "id2label.json", repo_type="dataset"))
    except Exception:
        return None


def _label_array(value, where: str) -> np.ndarray:
    if isinstance(value, Image.Image):
        if value.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB"):
            raise ValueError(f"{where}: the label is a {value.mode} image; expected one channel of "
                             "class ids (a colour visualisation is not a label)")
        arr = np.asarray(value)
        return arr.astype(np.int32) if value.mode == "I" else arr
    return np.asarray(value)


class HFSegmentation(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` as (image, label) pairs, like the folder loaders.

    ``load(i)`` -> (uint8 [H, W, 3], uint8 [H, W] class ids), checked: the label's size is the
    image's, its ids are in 0..K-1 or 255 (K = len(class_names) when given). ``ds[i]`` ->
    (float32 [3, H, W] in [0, 1], int64 [H, W]) or ``transform(image, label)``.
    """

    def __init__(self, hf, transform=None, image_column: str = "image", label_column: str = "label",
                 class_names=None, name: str = "hf"):
        cols = list(hf.column_names)
        missing = [c for c in (image_column, label_column) if c not in cols]
        if missing:
            raise KeyError(f"{name}: no column {', '.join(map(repr, missing))} in the Hugging Face "
                           f"dataset; its columns: {', '.join(cols)} (set data.image_column / "
                           f"data.label_column)")
        self.hf = hf.select_columns([image_column, label_column]) if len(cols) > 2 else hf
        self.transform, self.name = transform, name
        self.image_column, self.label_column = image_column, label_column
        self.label_names = tuple(class_names) if class_names else None
        self.num_classes = len(self.label_names) if self.label_names else None

    def __len__(self):
        return len(self.hf)

    def load(self, i):
        row = self.hf[int(i)]
        where = f"{self.name} row {int(i)}"
        image = row[self.image_column]
        image = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image, np.uint8)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{where}: the image has shape {image.shape}; expected [H, W, 3]")
        label = check_label(_label_array(row[self.label_column], where), image.shape,
                            self.num_classes, where)
        return image, label

    def __getitem__(self, i):
        img, mask = self.load(i)
        if self.transform is not None:
            return self.transform(img, mask)
        return (torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255),
                torch.from_numpy(mask.astype(np.int64)))

    def __repr__(self):
        return f"HFSegmentation(name={self.name!r}, n={len(self)}, classes={self.num_classes})"


def load_hf_dataset(path, transform=None) -> HFSegmentation:
    """Reload what ``to_hf_dataset`` saved (offline) as a torch dataset of (image, mask)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"no saved Hugging Face dataset at {str(path)!r}; "
                                "create it with reinlite.data.to_hf_dataset(ds, path)")
    return open_hf_split(path, None, transform=transform, name=str(path))
