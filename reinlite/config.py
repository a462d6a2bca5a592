"""The run configuration: one typed tree, the single home of every default.

    cfg = load_config("course", ["optim.iters=200", "model.rein.num_tokens=50"])
    cfg.model.rein.num_tokens       # 50
    cfg.optim.lr                    # 0.001 (course.json), default 1e-4 (the release)
    cfg.to_dict()                   # plain JSON-ready dict (stored in every checkpoint)

A config is :data:`Config` (nested dataclasses below). A JSON file (``reinlite/configs/*.json``
or any path) names only what differs from the defaults; ``key=value`` overrides use dotted
keys and JSON values (``optim.iters=200 model.head.pixel_decoder=fpn eval.resize=null``). A
misspelt key is a :class:`ConfigError` that names it and proposes the closest known one.

Each builder receives only its own part: ``build_model(cfg.model)``, the loss
``cfg.loss``, the data pipeline ``cfg.data``, the optimiser ``cfg.optim``, evaluation
``cfg.eval``. Rein's options (``cfg.model.rein``) are exactly the keywords of
:class:`reinlite.Rein`, and their defaults are Rein's own signature (so they live once).
The decoder's query count is derived: with Rein it is ``model.rein.num_tokens`` (Rein's
tokens are the queries, Eqs. 6-7); a different ``model.head.num_queries`` is an error.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from reinlite.models.rein import Rein

CONFIG_DIR = Path(__file__).with_name("configs")
METHODS = ("rein", "frozen", "full", "lora", "vpt", "adaptformer")


class ConfigError(ValueError):
    """A config that cannot be used (unknown key, bad value, conflicting values)."""


# ----------------------------------------------------------------------------------------
# The tree
# ----------------------------------------------------------------------------------------
def _rein_fields() -> list[tuple[str, Any, Any]]:
    """(name, type, field) of every keyword of ``Rein.__init__`` except the sizes the backbone
    provides (num_layers, embed_dim, and patch_size for the init bound), with Rein's defaults."""
    params = inspect.signature(Rein.__init__).parameters
    out = []
    for name, p in params.items():
        if name in ("self", "num_layers", "embed_dim", "patch_size"):
            continue
        out.append((name, p.annotation if p.annotation is not inspect.Parameter.empty else Any,
                    field(default=p.default)))
    return out


ReinConfig = dataclasses.make_dataclass(
    "ReinConfig", _rein_fields(),
    namespace={"__doc__": "Rein's keywords (reinlite.Rein), defaults from its signature."})
ReinConfig.__module__ = __name__


@dataclass
class HeadConfig:
    """The Mask2Former head (reinlite.models.head.Mask2FormerHead); defaults are the release's."""
    num_classes: Optional[int] = None   # None: derived from data.classes (see resolve_classes)
    hidden_dim: int = 256
    num_layers: int = 9                 # decoder layers (3 rounds over the 3 scales)
    num_heads: int = 8
    ffn_dim: int = 2048
    mask_dim: int = 256
    num_queries: Optional[int] = None   # None: derived (Rein's token count; see build_model)
    pixel_decoder: str = "msdeform"     # msdeform (the release) | fpn (light, for CPUs)
    pixel_decoder_layers: int = 6
    pixel_decoder_ffn: int = 1024
    pixel_decoder_points: int = 4


@dataclass
class ModelConfig:
    """Backbone (a timm ViT or a shipped course ViT) + method + head."""
    backbone: str = "course_vit"        # a timm ViT name, course_vit or course_vit_mae
    pretrained: Union[bool, str] = True  # true | false | a local weights file
    img_size: Union[None, int, list] = None  # the size the ViT is built at (None: its own)
    patch_size: Optional[int] = None    # None: the model's own (the release: 16)
    out_indices: Optional[list] = None  # None: (7, 11, 15, 23) for 24 blocks, else evenly spaced
    backbone_kwargs: dict = field(default_factory=dict)  # extra timm constructor kwargs
    method: str = "rein"                # rein | frozen | full | lora | vpt | adaptformer
    method_kwargs: dict = field(default_factory=dict)    # a baseline's options, e.g. {"rank": 8}
    rein: Optional[ReinConfig] = field(default_factory=ReinConfig)  # null: no Rein layer
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class LossConfig:
    """Mask2Former's loss (reinlite.models.losses.Mask2FormerLoss); the release's weights."""
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75


RELEASE_SHORT_SIDES = [int(512 * x * 0.1) for x in range(5, 21)]  # 256, 307, ..., 1024


@dataclass
class DataConfig:
    """Datasets and the training augmentation (reinlite.data.transforms.TrainAugment)."""
    kind: str = "benchmark"             # a key of reinlite.data.kinds.DATA_KINDS: benchmark | folders |
                                        # hf (a Hugging Face dataset) | pairs (images/ + labels/) | random
    root: str = "data/benchmark"        # hf: a save_to_disk folder or a Hub name; pairs: a folder
    classes: Optional[list] = None      # class names (label id i = classes[i]); None: read from the
                                        # dataset (classes.json, HF ClassLabel), else the 19 Cityscapes
    image_column: str = "image"         # hf: the column of images
    label_column: str = "label"         # hf: the column of label maps (class ids, 255 = ignore)
    roots: dict = field(default_factory=dict)  # per-domain roots (kind folders): {"gta": ...}
    source: str = "gta"
    source_split: str = "train"
    # targets: domain names (benchmark, folders); hf / pairs: a split of data.root ("validation")
    # or "PATH_OR_NAME:SPLIT" (another dataset), each evaluated as an unseen domain
    targets: list = field(default_factory=lambda: ["cityscapes", "bdd100k", "mapillary"])
    target_split: str = "val"
    crop_size: list = field(default_factory=lambda: [512, 512])
    train_resize: Union[None, int, list] = None  # before scaling: short side or [H, W]
    scale_range: Optional[list] = None  # a continuous random rescale factor [lo, hi]
    short_sides: Optional[list] = field(default_factory=lambda: list(RELEASE_SHORT_SIDES))
    max_long_side: Optional[int] = 2048  # with short_sides: the long side's cap
    cat_max_ratio: float = 0.75
    flip: bool = True
    photometric: bool = True
    num_workers: int = 2
    random_size: list = field(default_factory=lambda: [64, 64])  # kind random: image size
    random_count: int = 16                                       # kind random: images


@dataclass
class OptimConfig:
    """AdamW with the poly schedule (the release's)."""
    iters: int = 40000
    batch_size: int = 4                 # per process
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    poly_power: float = 0.9
    grad_clip: Optional[float] = None   # max gradient norm, or None
    backbone_lr_mult: float = 1.0       # lr factor of trainable backbone weights (full: 0.1)


@dataclass
class TrainConfig:
    """Logging and checkpoints of the loop."""
    log_every: int = 50
    ckpt_every: int = 4000
    resume: str = "auto"                # auto (out_dir's checkpoint if any) | a checkpoint | none
    progress: bool = True
    tensorboard: bool = False


@dataclass
class EvalConfig:
    """Inference and the per-domain mIoU (reinlite.engine.evaluate)."""
    mode: str = "slide"                 # slide | whole
    crop: list = field(default_factory=lambda: [512, 512])
    stride: list = field(default_factory=lambda: [341, 341])
    resize: Union[None, list, dict] = None  # [H, W] before inference, or {domain: [H, W]}
    keep_ratio: bool = False            # resize to fit [H, W] keeping the aspect ratio (mmseg)
    batch_size: int = 1                 # images per forward pass (same-sized images only)
    max_images: Optional[int] = None    # evaluate on the first N images of each domain


@dataclass
class Config:
    """A whole run."""
    name: str = "run"
    seed: int = 42
    device: str = "auto"                # auto (cuda if available) | cpu | cuda
    amp: str = "auto"                   # auto: bf16 autocast on a GPU, none on a CPU | bf16 | none
    threads: Optional[int] = None       # torch CPU threads (None: torch's default, all cores)
    out_dir: str = "runs/{name}"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        """``out_dir`` with ``{name}`` filled in."""
        return Path(str(self.out_dir).format(name=self.name))


# Keys that hold free-form objects (their inner keys are not checked).
FREE_FORM = {"model.backbone_kwargs", "model.method_kwargs", "data.roots", "eval.resize"}
# Keys that may differ when a run is resumed (they do not change what was trained so far).
RESUMABLE = ("optim.iters", "train.", "eval.", "threads", "device", "data.num_workers", "name",
             "out_dir")


# ----------------------------------------------------------------------------------------
# From and to plain dicts
# ----------------------------------------------------------------------------------------
def _unknown(key: str, prefix: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}; known keys under "
                       f"'{prefix.rstrip('.') or '<top>'}': {', '.join(sorted(known))}")


def _dataclass_of(f: dataclasses.Field):
    """The dataclass type of a nested field, or None for a plain value."""
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        made = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(made):
            return type(made)
    return None


def from_dict(values: dict) -> Config:
    """A :class:`Config` from a (partial) nested dict: missing keys take their defaults."""
    values = {k: v for k, v in values.items() if k != "_comment"}
    return _merge_into(Config(), values, "")


def _merge_into(base, values: dict, prefix: str):
    """``base`` (a dataclass) with the (partial) dict ``values`` merged in."""
    if not isinstance(values, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be an object, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(base)}
    out = copy.deepcopy(base)
    for key, value in values.items():
        if key not in fields:
            raise _unknown(key, prefix, fields)
        dotted = prefix + key
        sub = _dataclass_of(fields[key])
        current = getattr(out, key)
        if sub is not None and dotted not in FREE_FORM:
            if value is None:
                if key != "rein":
                    raise ConfigError(f"config key '{dotted}' must be an object, got null")
                setattr(out, key, None)
            else:
                start = current if current is not None else sub()
                setattr(out, key, _merge_into(start, value, dotted + "."))
        else:
            setattr(out, key, copy.deepcopy(value))
    return out


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("none", "null"):
            return None
        if low in ("true", "false"):
            return low == "true"
        return text


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """``cfg`` with ``a.b.c=value`` strings applied (values parsed as JSON, else strings)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        nested: Any = _parse_value(text)
        # free-form dicts take deeper keys: data.roots.gta=... -> {"data": {"roots": {"gta": ...}}}
        for i in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:i])
            if parent in FREE_FORM:
                current = _get(cfg, parts[:i])
                merged = dict(current) if isinstance(current, dict) else {}
                sub = merged
                for p in parts[i:-1]:
                    sub = sub.setdefault(p, {})
                sub[parts[-1]] = nested
                parts, nested = parts[:i], merged
                break
        tree: Any = nested
        for p in reversed(parts):
            tree = {p: tree}
        cfg = _merge_into(cfg, tree, "")
    return cfg


def _get(cfg: Config, parts: Sequence[str]):
    node: Any = cfg
    for p in parts:
        node = getattr(node, p)
    return node


def config_names() -> list[str]:
    """The shipped configs (reinlite/configs/*.json)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: Union[str, os.PathLike, dict, Config],
                overrides: Sequence[str] = ()) -> Config:
    """A full config: the defaults <- the named / pathed JSON (or a dict) <- overrides."""
    if isinstance(name_or_path, Config):
        cfg = copy.deepcopy(name_or_path)
    elif isinstance(name_or_path, dict):
        cfg = from_dict(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise FileNotFoundError(f"config {str(name_or_path)!r} not found: not a file and not "
                                    f"one of the shipped configs ({', '.join(config_names())})")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from err
        try:
            cfg = from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return resolve_classes(cfg)


def validate(cfg: Config) -> None:
    """Values that no builder could use, and values that contradict each other."""
    m, d = cfg.model, cfg.data
    if m.method not in METHODS:
        raise ConfigError(f"model.method must be one of {', '.join(METHODS)}, got {m.method!r}")
    if m.method == "rein" and m.method_kwargs:
        raise ConfigError(f"model.method_kwargs {m.method_kwargs} are for the baselines; Rein's "
                          f"options go in model.rein (e.g. model.rein.num_tokens=50)")
    if m.method == "rein" and m.rein is None:
        raise ConfigError("model.method is 'rein' but model.rein is null; give Rein's options "
                          "or choose model.method=frozen")
    if m.rein is not None and m.rein.link_to_queries and m.method == "rein":
        q = m.head.num_queries
        if q is not None and q != m.rein.num_tokens:
            raise ConfigError(
                f"model.head.num_queries={q} conflicts with model.rein.num_tokens="
                f"{m.rein.num_tokens}: Rein's tokens are the decoder's queries (Eqs. 6-7); "
                f"drop model.head.num_queries (it is derived) or change model.rein.num_tokens")
    if cfg.amp not in ("auto", "bf16", "none", None):
        raise ConfigError(f"amp must be auto, bf16 or none, got {cfg.amp!r}")
    if cfg.eval.mode not in ("slide", "whole"):
        raise ConfigError(f"eval.mode must be 'slide' or 'whole', got {cfg.eval.mode!r}")
    from reinlite.data.kinds import DATA_KINDS

    if d.kind not in DATA_KINDS:
        raise ConfigError(f"unknown data.kind {d.kind!r}: use one of {', '.join(DATA_KINDS)}")
    if d.short_sides and (d.scale_range or d.train_resize):
        raise ConfigError("data.short_sides (the release's random short side) cannot be combined "
                          "with data.train_resize / data.scale_range (the course's resize then "
                          "random factor); set data.short_sides=null for the latter")


def resolve_classes(cfg: Config) -> Config:
    """The one place the class list and the head's class count are decided.

    ``data.classes``: the names given, else the dataset's own (``reinlite.data.kinds``: a
    classes.json beside it, a Hugging Face ClassLabel, the 19 Cityscapes classes of the
    benchmark and the real layouts). ``model.head.num_classes`` follows: None becomes
    ``len(data.classes)``; another value is a :class:`ConfigError` naming both. ``cfg`` is
    changed in place and returned (a checkpoint stores the resolved names)."""
    from reinlite.data.kinds import dataset_classes

    d, head = cfg.data, cfg.model.head
    if d.classes is None:
        d.classes = list(dataset_classes(d))
    names = d.classes
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(n, str) and n for n in names)):
        raise ConfigError(f"data.classes must be a non-empty list of class names, got {names!r}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"data.classes names a class twice: {', '.join(dup)}")
    if len(names) > 255:
        raise ConfigError(f"data.classes has {len(names)} names; at most 255 (label 255 = ignore)")
    d.classes = list(names)
    if head.num_classes is None:
        head.num_classes = len(names)
    elif int(head.num_classes) != len(names):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ConfigError(
            f"model.head.num_classes={head.num_classes} conflicts with data.classes ({len(names)} "
            f"classes: {shown}): the head's class count is derived from data.classes; drop "
            f"model.head.num_classes")
    return cfg


def num_queries(model: ModelConfig) -> int:
    """The decoder's query count: Rein's tokens when Rein makes the queries; otherwise
    ``head.num_queries``, or as many as Rein would have tokens (so every method of a
    comparison predicts the same number of masks)."""
    if model.head.num_queries is not None:
        return int(model.head.num_queries)
    if model.rein is not None:
        return int(model.rein.num_tokens)
    return 100


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``RESUMABLE`` ones left out).
    At the top level a stored dict is first read as a config (keys added since it was written
    take their defaults, the class list is resolved), so a new field alone is no change."""
    if not prefix:
        try:
            old = resolve_classes(from_dict(old)).to_dict()
        except (ConfigError, OSError, ValueError):
            pass
    out = []
    for key in sorted(set(old) | set(new)):
        dotted = prefix + key
        if any(dotted == r or (r.endswith(".") and dotted.startswith(r)) for r in RESUMABLE):
            continue
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict) and dotted not in FREE_FORM:
            out += changed_keys(a, b, dotted + ".")
        elif a != b:
            out.append(dotted)
    return out
