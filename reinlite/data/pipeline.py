"""The training data pipeline: datasets by domain, the step-indexed sampler, augmentation.

    ds = build_dataset(cfg, "gta", "train")          # items: dict(image, label[, name])
    sampler = StepBatchSampler(len(ds), batch_size, iters, seed, start=k)
    loader = DataLoader(AugmentedDataset(ds, TrainAugment.from_config(cfg.data)),
                        batch_sampler=sampler, collate_fn=collate)

Exact resume: batch k depends only on (seed, k). Sample position p = (k * world + rank) *
batch_size + j walks through epoch-wise permutations seeded by (seed, epoch), and its
augmentation is drawn from a generator seeded by hash(seed, p).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from reinlite.config import Config, ConfigError
from reinlite.data.transforms import TrainAugment

__all__ = ["RandomShapesDataset", "load_sample", "AugmentedDataset", "mix_seed",
           "StepBatchSampler", "collate", "resolve_path", "build_dataset"]


class RandomShapesDataset(torch.utils.data.Dataset):
    """Tiny learnable data for tests: a background class and 1-3 rectangles, each class with
    its own colour (plus noise). Item i is a function of (seed, i).
    Returns dict(image uint8 [3, H, W], label long [H, W], name)."""

    def __init__(self, count=16, size=(64, 64), num_classes=19, seed=0, classes=(0, 2, 10, 13)):
        self.count, self.size, self.seed = count, tuple(size), seed
        self.classes = [c for c in classes if c < num_classes]
        g = torch.Generator().manual_seed(1234)
        self.colors = torch.randint(0, 256, (num_classes, 3), generator=g)

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + int(i))
        h, w = self.size
        label = torch.full((h, w), self.classes[0], dtype=torch.long)
        for _ in range(int(torch.randint(1, 4, (), generator=g))):
            c = self.classes[1 + int(torch.randint(0, len(self.classes) - 1, (), generator=g))]
            y0, x0 = (int(torch.randint(0, h // 2, (), generator=g)), int(torch.randint(0, w // 2, (), generator=g)))
            y1, x1 = (y0 + int(torch.randint(h // 8, h // 2, (), generator=g)),
                      x0 + int(torch.randint(w // 8, w // 2, (), generator=g)))
            label[y0:y1, x0:x1] = c
        image = self.colors[label].permute(2, 0, 1).float()
        image = image + 20 * torch.randn(3, h, w, generator=g)
        return dict(image=image.clamp(0, 255).to(torch.uint8), label=label, name=f"shape_{i:04d}")


def load_sample(dataset, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 image [3, H, W], long train ids [H, W]) of item ``index`` of any dataset whose
    items are dict(image, label) or (image, label) pairs; a reinlite.data folder dataset is
    read through its ``load`` (uint8 arrays, no transform)."""
    if hasattr(dataset, "load"):
        image, label = dataset.load(index)
    else:
        item = dataset[index]
        if isinstance(item, dict):
            image, label = item["image"], item["label"]
        else:
            image, label = item[0], item[1]
    image = torch.as_tensor(image)
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)
    if image.is_floating_point():  # [0, 1] floats (the folder datasets' default transform)
        image = (image * 255.0).round().clamp(0, 255)
    return image.contiguous().to(torch.uint8), torch.as_tensor(label).long()


class AugmentedDataset(torch.utils.data.Dataset):
    """Wraps a dataset; ``ds[(index, aug_seed)]`` -> (float image [3, h, w] normalised,
    long label [h, w]) augmented with a generator seeded by ``aug_seed`` (so a batch depends
    only on the step)."""

    def __init__(self, dataset, augment: TrainAugment):
        self.dataset, self.augment = dataset, augment

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        image, label = load_sample(self.dataset, index)
        g = torch.Generator().manual_seed(int(seed))
        return self.augment(image, label, g)


def mix_seed(*values: int) -> int:
    """A 62-bit seed that is a hash of ``values`` (stable across runs and machines)."""
    h = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 62) - 1)


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for steps start..iters-1, this rank's batch: [(index, aug_seed)] * batch_size.

    Global sample position p = (step * world + rank) * batch_size + j walks through
    epoch-wise permutations seeded by (seed, epoch); aug_seed = hash(seed, p).
    """

    def __init__(self, n: int, batch_size: int, iters: int, seed: int, start: int = 0,
                 rank: int = 0, world: int = 1):
        if n == 0:
            raise ValueError("the training dataset is empty")
        self.n, self.bs, self.iters, self.seed = n, batch_size, iters, seed
        self.start, self.rank, self.world = start, rank, world
        self._perm_epoch, self._perm = -1, None

    def _index(self, p: int) -> int:
        epoch = p // self.n
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))
            self._perm_epoch = epoch
        return int(self._perm[p % self.n])

    def __len__(self):
        return max(0, self.iters - self.start)

    def __iter__(self):
        for step in range(self.start, self.iters):
            base = (step * self.world + self.rank) * self.bs
            yield [(self._index(base + j), mix_seed(self.seed, base + j)) for j in range(self.bs)]


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.stack([b[1] for b in batch])
    return images, labels


def resolve_path(path, root=None) -> Path:
    """Where a data path points: a relative path is taken from ``root`` when one is given,
    else from the current directory, and, when it does not exist there, from the current
    directory's parent (notebooks run in ``notebooks/`` and so find the checkout's
    ``data/benchmark``). Never from where the package is installed."""
    p = Path(path)
    if p.is_absolute():
        return p
    if root is not None:
        return Path(root) / p
    if p.exists():
        return p
    alt = Path.cwd().parent / p
    return alt if alt.exists() else p


def build_dataset(cfg: Config, domain: str, split: str):
    """A dataset of the domain (items: dict(image, label[, name]) or (image, label)) with
    class ids (0..K-1, 255 ignore) as labels, built by the ``data.kind``'s entry of
    :data:`reinlite.data.kinds.DATA_KINDS`."""
    from reinlite.data.kinds import DATA_KINDS

    kind = DATA_KINDS.get(cfg.data.kind)
    if kind is None:
        raise ConfigError(f"unknown data.kind {cfg.data.kind!r}: use one of {', '.join(DATA_KINDS)}")
    return kind.build(cfg, domain, split)
