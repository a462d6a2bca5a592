"""Small helpers the course notebooks share (the library itself does not depend on them).

- Fast mode: ``REINLITE_FAST=1`` (what CI sets) takes the same code path with fewer steps and
  images; :func:`pick` chooses between the full and the fast value.
- "Load if present, else make it": :func:`course_backbone` loads the shipped course ViT (a
  random ViT of the same shape, clearly announced, while its weights are missing),
  :func:`benchmark_images` renders scenes of the embedded benchmark's domains.
- :func:`try_check` runs a :mod:`reinlite.course.feedback` check and prints its verdict instead of
  raising, so an exercise that is not done yet shows the helpful message and the notebook
  still runs top to bottom.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["FAST", "is_fast", "pick", "setup", "benchmark_images", "to_tensor",
           "course_backbone", "patch_features", "rein_inputs", "patch_token", "find_checkpoint", "shipped_run", "ship_run", "checkout_weights_dir", "trained_model", "try_check",
           "IMAGENET_MEAN", "IMAGENET_STD", "repo_root", "data_dir", "benchmark_root", "FAST_BENCHMARK",
           "FULL_BENCHMARK"]

from reinlite.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402  (timm's constants)
#: the benchmark's image size (H, W)
IMAGE_SIZE = (128, 256)

# The course ViT's constructor kwargs, used only for the stand-in while the shipped
# weights (reinlite/weights/course_vit.json + .safetensors) are missing.
_COURSE_VIT_SHAPE = dict(img_size=(64, 128), patch_size=8, embed_dim=192, depth=6, num_heads=3,
                         mlp_ratio=4.0, num_classes=0, global_pool="", class_token=True)


def is_fast() -> bool:
    """True when ``REINLITE_FAST`` is set to something other than '', '0' or 'false'."""
    return os.environ.get("REINLITE_FAST", "0").strip().lower() not in ("", "0", "false", "no")


FAST = is_fast()


def pick(full: Any, fast: Any) -> Any:
    """``fast`` in fast mode (CI), ``full`` otherwise: same code path, smaller numbers."""
    return fast if is_fast() else full


def setup(seed: int = 0, threads: Optional[int] = None) -> None:
    """Seed python, numpy and torch; use at most ``threads`` CPU threads (1 in fast mode, else 2)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is None:
        threads = pick(2, 1)
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))


def benchmark_images(n: int = 4, domain: Optional[str] = "gta", seed: int = 0,
                     size: Sequence[int] = IMAGE_SIZE) -> list[dict]:
    """``n`` scenes of the embedded benchmark's ``domain`` (renders; deterministic in ``seed``).

    Each item is the renderer's dict: ``image`` uint8 [H, W, 3], ``label`` uint8 [H, W]
    (Cityscapes label ids), ``depth``, ``instance``, plus ``domain``.
    """
    from reinlite.data import synthetic as syn

    items = []
    for i in range(n):
        out = syn.render_sample([seed, i, 7], domain=domain, size=tuple(size))
        out["domain"] = domain
        items.append(out)
    return items


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> Tensor:
    """uint8 image(s) [H, W, 3] -> ImageNet-normalised float tensor [B, 3, H, W]
    (reinlite.data.transforms.normalize)."""
    from reinlite.data.transforms import normalize

    array = np.stack(images) if isinstance(images, (list, tuple)) else np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    return normalize(torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2))


def _has_course_weights() -> bool:
    from reinlite.weights import WEIGHTS_DIR

    return (WEIGHTS_DIR / "course_vit.json").is_file() and (WEIGHTS_DIR / "course_vit.safetensors").is_file()


def course_backbone(rein: Optional[dict] = None, img_size: Sequence[int] = IMAGE_SIZE,
                    verbose: bool = True, **kwargs: Any):
    """The course backbone ``build_backbone("course_vit", pretrained=True)``, frozen, eval mode.

    While the shipped weights are missing, a *random* ViT of the same shape stands in (and
    says so): shapes and parameter counts are the same, the features are not meaningful.
    """
    from reinlite.models.backbone import build_backbone

    if _has_course_weights():
        bb = build_backbone("course_vit", pretrained=True, img_size=tuple(img_size), rein=rein, **kwargs)
        source = "course_vit (pretrained, reinlite/weights)"
    else:
        shape = {k: v for k, v in _COURSE_VIT_SHAPE.items() if k not in ("num_classes", "img_size")}
        shape.update(kwargs)
        torch.manual_seed(0)
        bb = build_backbone("vit_tiny_patch16_224", pretrained=False, img_size=tuple(img_size),
                            rein=rein, **shape)
        source = "a RANDOM ViT of the course backbone's shape (course_vit weights not found)"
    bb.eval()
    if verbose:
        print(f"backbone: {source}; {len(bb.vit.blocks)} blocks, c = {bb.embed_dim}, "
              f"patch {bb.patch_size}")
    return bb


@torch.no_grad()
def patch_features(backbone, images: Tensor, layers: Optional[Sequence[int]] = None) -> list[Tensor]:
    """Patch tokens [B, n, c] after each block in ``layers`` (default: all), prefix rows removed.

    With a Rein attached these are the *refined* features; without, the frozen ones.
    """
    vit = backbone.vit
    layers = list(range(len(vit.blocks))) if layers is None else list(layers)
    maps = vit.forward_intermediates(images, indices=layers, norm=False, output_fmt="NLC",
                                     intermediates_only=True)
    return [m for m in maps]


@torch.no_grad()
def rein_inputs(backbone, images: Tensor) -> list[Tensor]:
    """The patch features [B, n, c] each layer's Rein receives (block output, prefix rows removed).

    Runs ``backbone`` (which must have a Rein) once, capturing the Rein's input at every layer.
    """
    seen: dict[int, Tensor] = {}

    def grab(module, args, kwargs):
        x, layer = args[0], args[1]
        prefix = kwargs.get("num_prefix_tokens", args[2] if len(args) > 2 else 1)
        seen[int(layer)] = x[:, prefix:].detach().clone()

    handle = backbone.rein.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        backbone(images)
    finally:
        handle.remove()
    return [seen[i] for i in sorted(seen)]


def patch_token(features: Tensor, patches, logit: float = 20.0) -> Tensor:
    """A token made from the feature of a patch (or the mean feature of several patches).

    ViT patch features share a large common component (their mean over the image, mu); most of
    what differs between patches is their length along mu. A raw copied feature therefore
    matches every patch about equally, and the token with the largest mu-part wins everywhere.
    This keeps only what is specific to the chosen patches, v = g - (g . u) u with g their mean
    feature and u = mu / |mu|, and scales it so that their own logit g . t / sqrt(c) equals
    ``logit`` (trained tokens must find such directions and lengths themselves).

    Args:
        features: patch features of one image [n, c].
        patches: a patch index, a list of indices, or a boolean mask [n].
        logit: the chosen patches' own (scaled) logit for this token.
    Returns:
        the token [c].
    """
    chosen = features[patches]
    feature = chosen.mean(0) if chosen.ndim == 2 else chosen
    direction = features.mean(0)
    direction = direction / direction.norm().clamp_min(1e-12)
    specific = feature - (feature @ direction) * direction
    length = specific.norm().clamp_min(1e-12)
    return specific / length * (logit * features.shape[-1] ** 0.5 / length)


def shown_path(path: str | os.PathLike) -> str:
    """``path`` relative to the checkout (:func:`repo_root`) when it is inside it (what
    notebooks print, so stored outputs hold no machine paths), else its name."""
    p, root = Path(path).resolve(), repo_root()
    return str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else p.name


def shipped_run(name: str = "course") -> Optional[Path]:
    """The trained run shipped with the package (``reinlite/weights/NAME_run.safetensors``,
    made by ``reinlite ship-run``), or None."""
    from reinlite.weights import WEIGHTS_DIR

    path = WEIGHTS_DIR / f"{name}_run.safetensors"
    return path if path.is_file() else None


def find_checkpoint(name: str = "course") -> Optional[Path]:
    """The trained checkpoint of the run ``name`` if one exists, else None.

    Looks at ``$REINLITE_CHECKPOINT`` (your own run), then the run shipped with the package
    (so every notebook shows the same trained weights as its stored outputs), then
    ``runs/NAME/checkpoint.safetensors`` under the checkout (:func:`repo_root`), its
    ``notebooks/`` and the current folder (training's default ``out_dir`` is ``runs/{name}``).
    """
    candidates = []
    if os.environ.get("REINLITE_CHECKPOINT"):
        candidates.append(Path(os.environ["REINLITE_CHECKPOINT"]))
    shipped = shipped_run(name)
    if shipped is not None:
        candidates.append(shipped)
    root = repo_root()
    for base in ((root, root / "notebooks") if root is not None else ()) + (Path.cwd(),):
        candidates.append(base / "runs" / name / "checkpoint.safetensors")
    for path in candidates:
        if path.is_file():
            return path
    return None


def checkout_weights_dir() -> Path:
    """``reinlite/weights`` of the checkout in the current directory (where ``reinlite
    ship-run`` ships a run, for the notebooks to load), or a FileNotFoundError that says to run
    from a checkout's root: an installed package is never written into."""
    folder = Path("reinlite") / "weights"
    if not (Path("pyproject.toml").is_file() and (folder / "__init__.py").is_file()):
        raise FileNotFoundError(
            f"{Path.cwd()} is not the root of a reinlite checkout (no pyproject.toml and "
            f"{folder}/ here): run `reinlite ship-run` from the checkout's root, or call "
            f"reinlite.course.ship_run(run_dir, dest=FOLDER) to write elsewhere")
    return folder


def ship_run(run_dir: str | os.PathLike, name: str = "course", command: str = "", *,
             dest: str | os.PathLike) -> Path:
    """Copy a finished run's trainable weights (Rein + head; the frozen backbone is shipped on
    its own) to ``dest/NAME_run.safetensors`` with its config in the metadata, and write
    ``dest/NAME_run.json``: the config, the command, the step, the sha256 and the evaluation
    table of ``run_dir/eval/metrics.json`` when present. Returns the weights path.

    ``dest`` is explicit: the package never writes into itself. To ship with the course,
    ``dest`` is the checkout's ``reinlite/weights`` (:func:`checkout_weights_dir`, what
    ``reinlite ship-run`` passes), where :func:`shipped_run` finds it."""
    import hashlib
    import shutil

    from reinlite.engine.checkpoint import CKPT_NAME, read_run_checkpoint

    run_dir, dest = Path(run_dir), Path(dest)
    source = run_dir / CKPT_NAME
    _, meta = read_run_checkpoint(source)  # a readable run checkpoint with its config
    if not dest.is_dir():
        raise FileNotFoundError(f"ship_run: the destination folder {dest} does not exist")
    target = dest / f"{name}_run.safetensors"
    shutil.copyfile(source, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    record = dict(name=f"{name}_run", step=int(meta.get("step", 0)), sha256=digest,
                  bytes=target.stat().st_size, command=command,
                  config=json.loads(meta["config"]))
    metrics = run_dir / "eval" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        record["evaluation"] = dict(mean_targets=m.get("mean"), targets=m.get("targets"),
                                    miou={d: v["miou"] for d, v in m.get("domains", {}).items()})
    (dest / f"{name}_run.json").write_text(json.dumps(record, indent=1) + "\n")
    return target


def trained_model(name: str = "course", train_steps: Optional[int] = None, verbose: bool = True):
    """(model, cfg) of a trained run: load its checkpoint if present (your own via
    ``$REINLITE_CHECKPOINT``, else the shipped one, else ``runs/NAME``), else train it.

    Without a checkpoint and with ``train_steps=None`` nothing is trained and None is
    returned (the caller says so honestly). With ``train_steps=N`` the config ``name`` is
    trained for N steps into ``runs/NAME`` of the checkout (:func:`repo_root`; the current
    directory outside one; this needs the benchmark under ``data/`` and takes minutes on a CPU).
    """
    from reinlite.config import load_config
    from reinlite.engine.evaluate import load_run
    from reinlite.engine.train import train

    path = find_checkpoint(name)
    if path is None and train_steps is not None:
        cfg = load_config(name, [f"optim.iters={int(train_steps)}",
                                 f"out_dir={json.dumps(str((repo_root() or Path.cwd()) / 'runs' / '{name}'))}"])
        path = Path(train(cfg)["checkpoint"])
    if path is None:
        if verbose:
            print(f"no trained checkpoint for '{name}' (run `reinlite train --config {name}`)")
        return None
    model, cfg = load_run(path)
    if verbose:
        print(f"loaded the trained '{name}' run ({cfg.optim.iters} steps) from {shown_path(path)}")
    return model, cfg


def try_check(check: Callable[[], Any], success: str = "correct!") -> bool:
    """:func:`reinlite.course.feedback.try_check` (kept here for the notebooks that import it from course)."""
    from reinlite.course.feedback import try_check as feedback_try_check

    return feedback_try_check(check, success)


# ---------------------------------------------------------------------------------------------
# Data and runs for notebooks 00, 01 and 07-10 (load if present, else make)
# ---------------------------------------------------------------------------------------------
#: the small benchmark written in fast mode (CI): source images, and images per target (and held out)
FAST_BENCHMARK = dict(source=32, target=8)
#: the full benchmark: the command line's defaults (``reinlite data benchmark``)
FULL_BENCHMARK = dict(source=2000, target=500)


def repo_root() -> Optional["Path"]:
    """The reinlite checkout the course runs in: the current directory, or its parent (the
    notebooks run with the current directory = ``notebooks/``), whichever is a checkout's
    root (holds ``pyproject.toml`` and ``reinlite/``); None elsewhere. Found from the current
    directory, never from where the package is installed."""
    from pathlib import Path

    cwd = Path.cwd().resolve()
    for base in (cwd, cwd.parent):
        if (base / "pyproject.toml").is_file() and (base / "reinlite").is_dir():
            return base
    return None


def data_dir() -> "Path":
    """Where the course keeps data and runs: ``$REINLITE_DATA``, else ``<checkout>/data``
    (what ``reinlite data benchmark --out data/benchmark`` writes), else ``~/.cache/reinlite``."""
    from pathlib import Path

    if os.environ.get("REINLITE_DATA"):
        return Path(os.environ["REINLITE_DATA"]).expanduser()
    root = repo_root()
    return root / "data" if root is not None else Path.home() / ".cache" / "reinlite"


def benchmark_root(root=None, seed: int = 0, verbose: bool = True) -> "Path":
    """The embedded benchmark's folder: load if present, else write it.

    Full mode: ``data/benchmark`` with the command line's defaults (2000 source, 500 per
    target; about a minute with 2 workers). Fast mode: ``data/benchmark_fast``, a small one
    (:data:`FAST_BENCHMARK`) so CI always sees the same images. Writing goes to a temporary
    folder that is renamed at the end, so notebooks running in parallel never see half a
    benchmark.
    """
    import json
    import shutil
    from pathlib import Path

    from reinlite.data.benchmark import write_benchmark

    sizes = dict(FAST_BENCHMARK) if is_fast() else dict(FULL_BENCHMARK)
    root = Path(root) if root is not None else data_dir() / pick("benchmark", "benchmark_fast")
    manifest = root / "benchmark.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if verbose:
            print(f"benchmark: {shown_path(root)} (present: {m['source']} source, {m['target']} per target, "
                  f"seed {m['seed']})")
        return root
    tmp = root.with_name(f"{root.name}.tmp{os.getpid()}")
    if verbose:
        print(f"benchmark: writing {sizes['source']} source + {sizes['target']} per target to {shown_path(root)} ...")
    root.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark(tmp, seed=seed, workers=None, progress=False, **sizes)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return root
