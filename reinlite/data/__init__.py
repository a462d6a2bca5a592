"""Data for reinlite: the class table, datasets in the real layouts, the embedded benchmark.

Submodules:
    classes     19 train classes, palette, id -> train id tables (GTA5 / Cityscapes, SYNTHIA,
                Mapillary v1.2, BDD100K)
    datasets    GTA5, SYNTHIA, Cityscapes, BDD100K, Mapillary, ACDC folder datasets
    transforms  the one training augmentation (the release's recipe, mmseg semantics)
    pipeline    datasets by domain, the step-indexed sampler (exact resume)
    hf          Hugging Face ``datasets`` conversion and offline reload
    synthetic   procedural street scenes (numpy only), the embedded benchmark's renderer
    benchmark   writes / reads the embedded benchmark in the real layouts
"""
from reinlite.data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize  # noqa: F401


def __getattr__(name):  # lazy: the torch-based parts load on first use
    import importlib

    lazy = {"GTA5": "datasets", "SYNTHIA": "datasets", "Cityscapes": "datasets",
            "BDD100K": "datasets", "Mapillary": "datasets", "ACDC": "datasets",
            "SegmentationFolder": "datasets", "build_dataset": "datasets",
            "TrainAugment": "transforms", "normalize": "transforms",
            "to_hf_dataset": "hf", "load_hf_dataset": "hf",
            "write_benchmark": "benchmark", "benchmark_datasets": "benchmark"}
    if name in lazy:
        return getattr(importlib.import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
