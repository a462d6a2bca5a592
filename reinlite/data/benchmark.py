"""The embedded DGSS benchmark: procedural domains written in the real datasets' layouts.

``write_benchmark(out)`` renders (``reinlite.data.synthetic``) and writes::

    out/gta/          source, GTA5 layout: images/00001.png, labels/00001.png (label ids,
                      palette PNG), train.txt (the --source training images) and val.txt
                      (held-out source images, as many as --target)
    out/cityscapes/   target, leftImg8bit/val/{city}/..._leftImg8bit.png + gtFine ..._labelIds.png
    out/bdd100k/      target, images/10k/val/*.jpg + labels/sem_seg/masks/val/*.png (train ids)
    out/mapillary/    target, validation/images/*.jpg + validation/v1.2/labels/*.png (v1.2 ids)
                      + config_v1.2.json
    out/acdc/         target (fog / night / rain), rgb_anon/{cond}/val/... + gt/{cond}/val/...
    out/benchmark.json  seed, sizes, counts and per-domain class frequencies

``benchmark_datasets(out)`` reads it back through the real loaders (``reinlite.data.datasets``).
Image i of domain d is drawn from ``SeedSequence([seed, BENCHMARK_TAG, d, i])`` alone (each
image is a pure function of (seed, domain, index)), so the output is identical byte for byte
whatever the number of worker processes; other uses of the renderer (e.g. pretraining the
course backbone) should use a different tag.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from reinlite.data import classes as C
from reinlite.data import synthetic as syn

__all__ = ["write_benchmark", "benchmark_datasets", "sample_figure", "default_workers",
           "BENCHMARK_TAG", "DOMAIN_FOLDERS", "CITIES"]

BENCHMARK_TAG = 0xBE7C  # seed-sequence tag of the benchmark's images
DOMAIN_FOLDERS = {"gta": "gta", "cityscapes": "cityscapes", "bdd100k": "bdd100k",
                  "mapillary": "mapillary", "acdc": "acdc"}
CITIES = ("frankfurt", "lindau", "munster")  # the Cityscapes validation cities
FORMAT_VERSION = 1

# label id -> train id -> layout-specific ids
_LABEL_TO_MAPILLARY = np.full(256, 65, np.uint8)   # void--unlabeled
_LABEL_TO_MAPILLARY[1] = 64                         # ego vehicle
for _t, _lid in enumerate(C.CITYSCAPES_LABEL_IDS):
    _LABEL_TO_MAPILLARY[_lid] = C.TRAIN_TO_MAPILLARY[_t]


def _palette_bytes(colors_by_id: dict) -> list:
    pal = np.zeros((256, 3), np.uint8)
    for i, c in colors_by_id.items():
        pal[i] = c
    return pal.ravel().tolist()


_GTA_PALETTE = _palette_bytes({lid: C.PALETTE[t] for t, lid in enumerate(C.CITYSCAPES_LABEL_IDS)})
_MAPILLARY_PALETTE = _palette_bytes({i: c for i, (_, c) in enumerate(C.MAPILLARY_V12)})


def _save_png(arr, path, palette=None):
    """uint8 [H, W] ids -> PNG; with ``palette`` a palette PNG whose indices are the ids."""
    im = Image.fromarray(np.ascontiguousarray(arr, np.uint8))
    if palette is not None:
        im.putpalette(palette)   # an L image becomes P with the same indices
    im.save(path, format="PNG", compress_level=6)


def _names(domain, i, style):
    """(image relative path, label relative path) of image i of a domain."""
    if domain == "gta":
        return f"images/{i + 1:05d}.png", f"labels/{i + 1:05d}.png"
    if domain == "cityscapes":
        city = CITIES[i % len(CITIES)]
        stem = f"{city}_{i // len(CITIES):06d}_000019"
        return (f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png",
                f"gtFine/val/{city}/{stem}_gtFine_labelIds.png")
    if domain == "bdd100k":
        stem = f"b{i:07d}-{(i * 2654435761) % (1 << 32):08x}"
        return f"images/10k/val/{stem}.jpg", f"labels/sem_seg/masks/val/{stem}.png"
    if domain == "mapillary":
        stem = f"m{(i * 40503 + 12345) % 100000:05d}{i:05d}"
        return f"validation/images/{stem}.jpg", f"validation/v1.2/labels/{stem}.png"
    if domain == "acdc":
        cond = style["condition"]
        seq = f"GOPR{300 + i // 50:04d}"
        stem = f"{seq}_frame_{i % 50:06d}"
        return (f"rgb_anon/{cond}/val/{seq}/{stem}_rgb_anon.png",
                f"gt/{cond}/val/{seq}/{stem}_gt_labelIds.png")
    raise ValueError(domain)


def default_workers() -> int:
    """The processors this process may run on (its CPU affinity; ``os.cpu_count()`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def _render_one(task):
    """Render and write image i of a domain; returns its train-id histogram (int64 [256])."""
    out, domain, d_index, i, seed, size = task
    rng = np.random.default_rng(np.random.SeedSequence([seed, BENCHMARK_TAG, d_index, i]))
    layout = syn.sample_layout(rng, domain=domain)
    style = syn.domain_style(domain, rng)
    r = syn.render(layout, style, size=size, rng=rng)
    img_rel, lab_rel = _names(domain, i, style)
    root = Path(out) / DOMAIN_FOLDERS[domain]
    img_path, lab_path = root / img_rel, root / lab_rel
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    label = r["label"]
    train_ids = C.map_ids(label, C.CITYSCAPES_LUT)
    if img_path.suffix == ".jpg":
        Image.fromarray(r["image"]).save(img_path, format="JPEG", quality=90)
    else:
        Image.fromarray(r["image"]).save(img_path, format="PNG", compress_level=1)
    if domain == "gta":
        _save_png(label, lab_path, _GTA_PALETTE)
    elif domain == "bdd100k":
        _save_png(train_ids, lab_path)
    elif domain == "mapillary":
        _save_png(_LABEL_TO_MAPILLARY[label], lab_path, _MAPILLARY_PALETTE)
    else:
        _save_png(label, lab_path)
    return np.bincount(train_ids.ravel(), minlength=256)


def write_benchmark(out, seed: int = 0, source: int = 2000, target: int = 500,
                    size=(128, 256), domains=syn.DOMAINS, heldout: int | None = None,
                    workers: int | None = None, progress: bool = True) -> dict:
    """Write the benchmark under ``out`` (see the module docstring); returns the manifest.

    Args:
        seed: the benchmark's seed (same seed, same bytes).
        source: number of source (``gta``) training images.
        target: number of images per target domain.
        size: (H, W) of every image.
        heldout: held-out source images (val.txt), default ``target``.
        workers: processes rendering in parallel; ``None`` or 0: one per processor this
            process may use (``default_workers()``); 1: in this process. The bytes written do
            not depend on it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heldout = target if heldout is None else heldout
    counts = {d: (source + heldout if d == syn.SOURCE_DOMAIN else target) for d in domains}
    size = (int(size[0]), int(size[1]))
    tasks = [(str(out), d, syn.DOMAINS.index(d), i, int(seed), size)
             for d in domains for i in range(counts[d])]
    hist = {d: np.zeros(256, np.int64) for d in domains}
    workers = min(int(workers) if workers else default_workers(), max(len(tasks), 1))
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (or None / 0 for one per processor), got {workers}")
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        # chunks small enough that every worker gets several (the domains differ in cost)
        chunksize = max(1, min(16, len(tasks) // (4 * workers)))
        with ctx.Pool(workers) as pool:
            results = pool.imap(_render_one, tasks, chunksize=chunksize)
            hist = _collect(results, tasks, hist, progress)
    else:
        hist = _collect(map(_render_one, tasks), tasks, hist, progress)
    if syn.SOURCE_DOMAIN in domains:
        g = out / DOMAIN_FOLDERS[syn.SOURCE_DOMAIN]
        (g / "train.txt").write_text("".join(f"{i + 1:05d}\n" for i in range(source)))
        (g / "val.txt").write_text("".join(f"{i + 1:05d}\n" for i in range(source, source + heldout)))
    if "mapillary" in domains:
        cfg = {"labels": [{"name": n, "readable": n.split("--")[-1].replace("-", " ").title(),
                           "color": list(c), "instances": False, "evaluate": n != "void--unlabeled"}
                          for n, c in C.MAPILLARY_V12], "version": "1.2 (reinlite benchmark)"}
        (out / DOMAIN_FOLDERS["mapillary"] / "config_v1.2.json").write_text(json.dumps(cfg, indent=1) + "\n")
    freqs = {}
    for d in domains:
        h = hist[d][:C.NUM_CLASSES]
        freqs[d] = {c: round(float(v) / max(int(hist[d].sum()), 1), 5) for c, v in zip(C.CLASSES, h)}
        freqs[d]["ignore"] = round(float(hist[d][255]) / max(int(hist[d].sum()), 1), 5)
    manifest = dict(format_version=FORMAT_VERSION, seed=int(seed), size=list(size),
                    source=source, heldout=heldout, target=target,
                    domains={d: dict(folder=DOMAIN_FOLDERS[d], images=counts[d],
                                     role="source" if d == syn.SOURCE_DOMAIN else "target")
                             for d in domains},
                    class_frequencies=freqs)
    (out / "benchmark.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _collect(results, tasks, hist, progress):
    from tqdm.auto import tqdm

    for task, h in tqdm(zip(tasks, results), total=len(tasks), desc="benchmark", unit="img",
                        disable=not progress):
        hist[task[1]] += h
    return hist


def benchmark_datasets(root, transform=None, eval_transform=None) -> dict:
    """The benchmark through the real loaders: {"gta" (train), "gta_val", targets...}.

    ``transform`` is given to the source training set, ``eval_transform`` to the others.
    """
    from reinlite.data.datasets import ACDC, BDD100K, GTA5, Cityscapes, Mapillary

    root = Path(root)
    if not (root / "benchmark.json").is_file():
        raise FileNotFoundError(f"no benchmark at {str(root)!r} (missing benchmark.json); write one "
                                "with `reinlite data benchmark --out DIR`")
    doms = json.loads((root / "benchmark.json").read_text())["domains"]
    ds = {}
    if "gta" in doms:
        ds["gta"] = GTA5(root / "gta", split="train", transform=transform)
        ds["gta_val"] = GTA5(root / "gta", split="val", transform=eval_transform)
    makers = {"cityscapes": lambda r: Cityscapes(r, "val", transform=eval_transform),
              "bdd100k": lambda r: BDD100K(r, "val", transform=eval_transform),
              "mapillary": lambda r: Mapillary(r, "validation", transform=eval_transform),
              "acdc": lambda r: ACDC(r, "val", transform=eval_transform)}
    for d, mk in makers.items():
        if d in doms:
            ds[d] = mk(root / doms[d]["folder"])
    return ds


def sample_figure(root, path, per_domain: int = 3, seed: int = 0):
    """Save a figure: one row per domain, image and coloured train-id labels side by side."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ds = benchmark_datasets(root)
    names = [d for d in ds if d != "gta_val"]
    fig, axes = plt.subplots(len(names), 2 * per_domain, figsize=(2.2 * 2 * per_domain, 1.35 * len(names)))
    rng = np.random.default_rng(seed)
    for r, d in enumerate(names):
        idx = rng.choice(len(ds[d]), size=min(per_domain, len(ds[d])), replace=False)
        for k, i in enumerate(sorted(idx)):
            img, mask = ds[d].load(int(i))
            axes[r, 2 * k].imshow(img)
            axes[r, 2 * k + 1].imshow(C.colorize(mask))
            for a in axes[r, 2 * k: 2 * k + 2]:
                a.set_xticks([])
                a.set_yticks([])
        label = d + (" (source)" if d == "gta" else "")
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout(pad=0.2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_benchmark_cli(args) -> int:
    """``reinlite data benchmark``: write, time and summarise the benchmark."""
    import time

    if getattr(args, "format", "folders") == "hf":
        return _export_hf_cli(args)
    if args.source < 1 or args.target < 1:
        raise ValueError("--source and --target must be at least 1")
    start = time.perf_counter()
    workers = getattr(args, "workers", None) or default_workers()
    m = write_benchmark(args.out, seed=args.seed, source=args.source, target=args.target,
                        size=tuple(args.size), workers=workers)
    took = time.perf_counter() - start
    n = sum(d["images"] for d in m["domains"].values())
    per = ", ".join(f"{d}: {v['images']}" for d, v in m["domains"].items())
    print(f"wrote {n} images ({per}) at {args.size[0]}x{args.size[1]} to {args.out} "
          f"in {took:.1f} s ({n / took:.0f} images/s, {workers} worker{'s' if workers > 1 else ''})")
    if args.figure:
        print(f"sample figure: {sample_figure(args.out, args.figure)}")
    return 0


def _export_hf_cli(args) -> int:
    """``reinlite data benchmark --format hf --out DIR [--from BENCHMARK]``: the benchmark as
    one Hugging Face DatasetDict (rendered into a scratch folder first unless --from)."""
    import tempfile
    import time

    from reinlite.data.hf import benchmark_to_hf

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reinlite-bench-") as tmp:
        src = args.from_dir
        if src is None:
            src = tmp
            args_copy = type(args)(**{**vars(args), "format": "folders", "out": tmp, "figure": None})
            run_benchmark_cli(args_copy)
        dd = benchmark_to_hf(src, args.out, progress=False)
    per = ", ".join(f"{k}: {len(v)}" for k, v in dd.items())
    print(f"wrote the Hugging Face dataset {args.out} ({per}; classes.json beside it) in "
          f"{time.perf_counter() - start:.1f} s; train on it with data.kind=hf data.root={args.out}")
    return 0
