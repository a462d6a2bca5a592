"""Data for reinlite: the class table, datasets in the real layouts, the embedded benchmark.

Submodules:
    classes     19 train classes, palette, id -> train id tables (GTA5 / Cityscapes, SYNTHIA,
                Mapillary v1.2, BDD100K)
    datasets    GTA5, SYNTHIA, Cityscapes, BDD100K, Mapillary, ACDC folder datasets
    transforms  the one training augmentation (the release's recipe, mmseg semantics)
    pipeline    datasets by domain, the step-indexed sampler (exact resume)
    kinds       data.kind -> builder + class names (benchmark, folders, hf, pairs, random)
    hf          Hugging Face datasets as a source (on disk or the Hub), export, offline reload
    pairs       your own data as a folder of images/ + labels/ (class ids, 255 ignore)
    synthetic   procedural street scenes (numpy only), the embedded benchmark's renderer
    benchmark   writes / reads the embedded benchmark in the real layouts
"""
from reinlite.data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize, palette  # noqa: F401


def __getattr__(name):  # lazy: the torch-based parts load on first use
    import importlib

    lazy = {"GTA5": "datasets", "SYNTHIA": "datasets", "Cityscapes": "datasets",
            "BDD100K": "datasets", "Mapillary": "datasets", "ACDC": "datasets",
            "SegmentationFolder": "datasets", "build_dataset": "datasets",
            "TrainAugment": "transforms", "normalize": "transforms",
            "to_hf_dataset": "hf", "load_hf_dataset": "hf", "benchmark_to_hf": "hf",
            "open_hf_split": "hf", "HFSegmentation": "hf", "PairsDataset": "pairs",
            "pairs_dataset": "pairs", "DATA_KINDS": "kinds",
            "write_benchmark": "benchmark", "benchmark_datasets": "benchmark"}
    if name in lazy:
        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
