"""Hugging Face ``datasets`` round trip: convert any reinlite dataset once, reload it offline.

    to_hf_dataset(ds, "data/hf/cityscapes_val")          # -> datasets.Dataset, saved to disk
    hf = load_hf_dataset("data/hf/cityscapes_val")
    image, mask = hf[0]                                   # same as ds[0]

Rows hold the original image file's bytes (PNG / JPEG, not re-encoded), the train-id mask as
a PNG (uint8 [H, W], 255 = ignore) and the image's source path. Loading needs no network
(``load_from_disk``).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["to_hf_dataset", "load_hf_dataset", "HFSegmentation"]


def _features():
    import datasets

    return datasets.Features({"image": datasets.Image(), "label": datasets.Image(),
                              "path": datasets.Value("string")})


def to_hf_dataset(ds, path=None, progress: bool = False):
    """A ``SegmentationFolder`` -> ``datasets.Dataset`` (saved to ``path`` when given).

    Every pair is read and checked (sizes, corrupt files) as the loader would.
    """
    import datasets

    def rows():
        from tqdm.auto import tqdm

        for i in tqdm(range(len(ds)), disable=not progress, desc="to_hf_dataset"):
            img_path = ds.pairs[i][0]
            _, mask = ds.load(i)
            buf = io.BytesIO()
            Image.fromarray(mask).save(buf, format="PNG")
            yield {"image": {"bytes": Path(img_path).read_bytes(), "path": None},
                   "label": {"bytes": buf.getvalue(), "path": None}, "path": str(img_path)}

    hf = datasets.Dataset.from_list(list(rows()), features=_features())
    if path is not None:
        hf.save_to_disk(str(path))
    return hf


class HFSegmentation(torch.utils.data.Dataset):
    """A saved ``datasets.Dataset`` as (image, mask) pairs, exactly like the folder loaders."""

    def __init__(self, hf, transform=None):
        self.hf, self.transform = hf, transform

    def __len__(self):
        return len(self.hf)

    def load(self, i):
        row = self.hf[int(i)]
        return np.array(row["image"].convert("RGB")), np.array(row["label"])

    def __getitem__(self, i):
        img, mask = self.load(i)
        if self.transform is not None:
            return self.transform(img, mask)
        return (torch.from_numpy(img).permute(2, 0, 1).float().div_(255),
                torch.from_numpy(mask.astype(np.int64)))


def load_hf_dataset(path, transform=None) -> HFSegmentation:
    """Reload what ``to_hf_dataset`` saved (offline) as a torch dataset of (image, mask)."""
    import datasets

    if not Path(path).is_dir():
        raise FileNotFoundError(f"no saved Hugging Face dataset at {str(path)!r}; "
                                "create it with reinlite.data.to_hf_dataset(ds, path)")
    return HFSegmentation(datasets.load_from_disk(str(path)), transform)
