"""Loader benchmark: images per second of the Hugging Face loader vs the folder loader on the
same benchmark images, side by side in one run (a measurement, not a test).

    python -m reinlite.experiments.bench_loaders [--root data/benchmark] [--images 100]
                                                 [--repeats 3] [--workers 0]

Takes the first N source (GTA5-layout) images of the embedded benchmark, exports exactly those
to a saved Hugging Face dataset in a scratch folder (``to_hf_dataset``), then times reading
every pair as the trainer does (decode image + label, checks; ``ds.load(i)``) with each loader,
alternating the two ``--repeats`` times (the best pass of each is reported, so file-cache
warm-up does not favour the one read second). With ``--workers W`` it also times a DataLoader
with W worker processes over each (the datasets pickle by file reference).
"""
from __future__ import annotations

import argparse
import tempfile
import time


def _rate(ds, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        ds.load(i)
    return n / (time.perf_counter() - start)


def _loader_rate(ds, n: int, workers: int) -> float:
    import torch

    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(n)), batch_size=None,
                                         num_workers=workers, collate_fn=lambda x: x)
    start = time.perf_counter()
    for _ in loader:
        pass
    return n / (time.perf_counter() - start)


def run(root: str = "data/benchmark", images: int = 100, repeats: int = 3, workers: int = 0) -> dict:
    from reinlite.data.benchmark import benchmark_datasets
    from reinlite.data.datasets import SegmentationFolder
    from reinlite.data.hf import load_hf_dataset, to_hf_dataset
    from reinlite.data.pipeline import resolve_path

    src = benchmark_datasets(resolve_path(root))["gta"]
    n = min(int(images), len(src))
    folder = SegmentationFolder(src.pairs[:n], name="folder")
    with tempfile.TemporaryDirectory(prefix="reinlite-bench-loaders-") as tmp:
        to_hf_dataset(folder, f"{tmp}/hf")
        hf = load_hf_dataset(f"{tmp}/hf")
        best = {"folder": 0.0, "hf": 0.0}
        for _ in range(max(1, int(repeats))):
            best["folder"] = max(best["folder"], _rate(folder, n))
            best["hf"] = max(best["hf"], _rate(hf, n))
        out = dict(images=n, size=list(folder.load(0)[0].shape[:2]), folder=best["folder"],
                   hf=best["hf"], ratio=best["hf"] / best["folder"])
        if workers:
            out["workers"] = workers
            out["folder_loader"] = _loader_rate(folder, n, workers)
            out["hf_loader"] = _loader_rate(hf, n, workers)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/benchmark", help="the embedded benchmark")
    p.add_argument("--images", type=int, default=100, help="source images to read (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="alternating passes; the best counts")
    p.add_argument("--workers", type=int, default=0, help="also time a DataLoader with this many workers")
    args = p.parse_args(argv)
    r = run(args.root, args.images, args.repeats, args.workers)
    print(f"{r['images']} benchmark images of {r['size'][0]}x{r['size'][1]}, image + label decoded "
          f"and checked per item (best of {args.repeats} alternating passes):")
    print(f"  folder loader (PNG files)          : {r['folder']:8.1f} images/s")
    print(f"  Hugging Face loader (Arrow on disk): {r['hf']:8.1f} images/s")
    print(f"  ratio hf / folder                  : {r['ratio']:8.2f}")
    if args.workers:
        print(f"  DataLoader, {args.workers} workers: folder {r['folder_loader']:.1f}, "
              f"hf {r['hf_loader']:.1f} images/s (ratio {r['hf_loader'] / r['folder_loader']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
