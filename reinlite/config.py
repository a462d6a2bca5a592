"""The run configuration: one typed tree, the single home of every default.

    cfg = load_config("course", ["optim.iters=200", "model.rein.num_tokens=50"])
    cfg.model.rein.num_tokens       # 50
    cfg.optim.lr                    # 0.001 (course.json), default 1e-4 (the release)
    cfg.to_dict()                   # plain JSON-ready dict (stored in every checkpoint)

A config is :data:`Config`, nested dataclasses that hold every module's defaults once (the
modules read their keyword defaults from here; this file imports no model code). A JSON file
(``reinlite/configs/*.json`` or a path) names only what differs; ``key=value`` overrides use
dotted keys and JSON values. :func:`load_config` folds old forms in, fills the method-dependent
default (:func:`backbone_lr_mult`) and checks names, counts and rates before anything is built;
a misspelt key or value is a :class:`ConfigError` that proposes the closest known one.
The decoder's query count is derived: with Rein it is ``model.rein.num_tokens`` (Eqs. 6-7).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence, Union

from reinlite.errors import InputError

CONFIG_DIR = Path(__file__).with_name("configs")
# The names the config accepts; reinlite.models.baselines.METHODS and
# reinlite.models.head.PIXEL_DECODERS are the registries that build them (a test holds them equal).
METHODS = ("rein", "frozen", "full", "lora", "vpt", "adaptformer")
PIXEL_DECODERS = ("msdeform", "fpn")
COURSE_BACKBONE_NAMES = ("course_vit", "course_vit_mae")  # reinlite.weights.COURSE_BACKBONES
FULL_BACKBONE_LR_MULT = 0.1  # full fine-tuning's backbone lr factor: the authors' (release issue #45)


class ConfigError(InputError):
    """A config that cannot be used (unknown key, bad value, conflicting values)."""


# ---------------------------------------------------------------------------- the tree
# A number's field carries its allowed range (at_least, above), checked by config_checks.
def at_least(low: float, default: Any, most: Optional[float] = None):
    """A numeric field with its default and range [low, most] (None always passes)."""
    return field(default=default, metadata=dict(low=low, most=most))


def above(low: float, default: Any):
    """A numeric field with its default that must be > low (None always passes)."""
    return field(default=default, metadata=dict(low=low, strict=True))


@dataclass
class ReinConfig:
    """Rein's keywords (reinlite.Rein; the paper's and the release's values). The sizes the
    backbone provides (num_layers, embed_dim, patch_size) are not config keys."""
    num_tokens: int = at_least(2, 100)               # m; also the decoder's query count (Eqs. 6-7)
    rank: Optional[int] = at_least(1, None)  # None: full-rank tokens; r: A [m, r] @ B [r, c] (Eq. 8)
    query_dim: int = at_least(1, 256)   # Q
    scale_init: float = 1e-3            # the learnable scale s at init
    use_softmax: bool = True            # Eq. 3's softmax
    link_to_queries: bool = True        # build the instance queries from the tokens
    zero_init_delta: bool = False       # s fixed at 1, W_f = 0: the layer starts as the identity
    shared_mlps: bool = True            # False: the "tokens only" ablation
    patch_size: ClassVar[int] = 16      # Rein's own default for its init bound (the ViT's, when built)


@dataclass
class LoraConfig:
    """LoRA on the attention's linear layers (reinlite.models.baselines.LoRA)."""
    rank: int = at_least(1, 8)          # r (the paper's Table 3: 0.79M on DINOv2-L)
    alpha: Optional[float] = None       # None: alpha = r (scaling 1)
    targets: list = field(default_factory=lambda: ["qkv"])  # attn.<target> linear layers


@dataclass
class VptConfig:
    """VPT-deep prompts (reinlite.models.baselines.VisualPrompts)."""
    num_prompts: int = at_least(0, 50)  # p per block: the course's (the paper's DINOv2-L count uses 150)


@dataclass
class AdaptFormerConfig:
    """AdaptFormer's parallel bottleneck adapters (reinlite.models.baselines.AdaptFormerAdapters)."""
    bottleneck: int = at_least(1, 64)   # d (the paper's Table 3: 3.17M on DINOv2-L)
    adapter_scale: float = 0.1          # the fixed scalar s


@dataclass
class HeadConfig:
    """The Mask2Former head (reinlite.models.head.Mask2FormerHead); defaults are the release's."""
    num_classes: Optional[int] = at_least(1, None)  # None: derived from data.classes (see resolve_classes)
    hidden_dim: int = at_least(1, 256)
    num_layers: int = at_least(1, 9)    # decoder layers (3 rounds over the 3 scales)
    num_heads: int = at_least(1, 8)
    ffn_dim: int = at_least(1, 2048)
    mask_dim: int = at_least(1, 256)
    num_queries: Optional[int] = at_least(1, None)  # None: derived (Rein's token count; see build_model)
    pixel_decoder: str = "msdeform"     # msdeform (the release) | fpn (light, for CPUs)
    pixel_decoder_layers: int = at_least(0, 6)
    pixel_decoder_ffn: int = at_least(1, 1024)
    pixel_decoder_points: int = at_least(1, 4)


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
    method_kwargs: dict = field(default_factory=dict)    # old form of a baseline's options (read, folded in)
    rein: Optional[ReinConfig] = field(default_factory=ReinConfig)  # null: no Rein layer
    lora: LoraConfig = field(default_factory=LoraConfig)               # method lora's options
    vpt: VptConfig = field(default_factory=VptConfig)                  # method vpt's options
    adaptformer: AdaptFormerConfig = field(default_factory=AdaptFormerConfig)  # method adaptformer's
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class LossConfig:
    """Mask2Former's loss (reinlite.models.losses.Mask2FormerLoss); the release's weights."""
    class_weight: float = at_least(0, 2.0)
    mask_weight: float = at_least(0, 5.0)
    dice_weight: float = at_least(0, 5.0)
    no_object_weight: float = at_least(0, 0.1)
    num_points: int = at_least(1, 12544)
    oversample_ratio: float = at_least(1, 3.0)
    importance_ratio: float = at_least(0, 0.75, most=1)


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
    iters: int = at_least(1, 40000)
    batch_size: int = at_least(1, 4)    # per process
    lr: float = above(0, 1e-4)
    weight_decay: float = at_least(0, 0.05)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = above(0, 1e-8)
    poly_power: float = at_least(0, 0.9)
    grad_clip: Optional[float] = above(0, None)  # max gradient norm, or None
    backbone_lr_mult: Optional[float] = at_least(0, None)  # lr factor of trainable backbone weights; None:
                                              # the method's (see backbone_lr_mult())


@dataclass
class TrainConfig:
    """Logging and checkpoints of the loop."""
    log_every: int = at_least(1, 50)
    ckpt_every: int = at_least(1, 4000)
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
    batch_size: int = at_least(1, 1)    # images per forward pass (same-sized images only)
    max_images: Optional[int] = at_least(1, None)  # evaluate on the first N images of each domain


@dataclass
class Config:
    """A whole run."""
    name: str = "run"
    seed: int = 42
    device: str = "auto"                # auto (cuda if available) | cpu | cuda
    amp: str = "auto"                   # auto: bf16 autocast on a GPU, none on a CPU | bf16 | none
    threads: Optional[int] = at_least(1, None)  # torch CPU threads (None: torch's default, all cores)
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


# ---------------------------------------------------------------------------- from and to plain dicts
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
    """A :class:`Config` from a (partial) nested dict: missing keys take their defaults, the
    method-dependent ones included (:func:`resolve`; not checked: :func:`load_config` checks)."""
    return resolve(_parse(values))


def _parse(values: dict) -> Config:
    return _merge_into(Config(), {k: v for k, v in values.items() if k != "_comment"}, "")


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
    """A full config: the defaults <- the named / pathed JSON (or a dict) <- overrides, with the
    old ``model.method_kwargs`` folded into the method's options and the method-dependent
    defaults filled in (:func:`resolve`); checked by :func:`reinlite.config_checks.validate`."""
    if isinstance(name_or_path, Config):
        cfg = copy.deepcopy(name_or_path)
    elif isinstance(name_or_path, dict):
        cfg = _parse(name_or_path)
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
            cfg = _parse(values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    from reinlite.config_checks import validate  # names, counts and rates (a file of its own)

    cfg = resolve(apply_overrides(cfg, overrides))
    validate(cfg)
    return resolve_classes(cfg)


# ---------------------------------------------------------------------------- method-dependent defaults
METHOD_OPTIONS = {"rein": ReinConfig, "lora": LoraConfig, "vpt": VptConfig,
                  "adaptformer": AdaptFormerConfig}  # method -> its options (model.<method>)


def backbone_lr_mult(optim: OptimConfig, method: str) -> float:
    """The lr factor of trainable backbone weights: ``optim.backbone_lr_mult`` when given, else
    the method's (:data:`FULL_BACKBONE_LR_MULT` for full fine-tuning, 1 for the others)."""
    if optim.backbone_lr_mult is not None:
        return float(optim.backbone_lr_mult)
    return FULL_BACKBONE_LR_MULT if method == "full" else 1.0


def resolve(cfg: Config) -> Config:
    """``cfg`` with its method-dependent defaults made explicit (what a checkpoint stores):
    ``optim.backbone_lr_mult`` from :func:`backbone_lr_mult`, and an old-style
    ``model.method_kwargs`` moved into ``model.<method>`` (e.g. {"rank": 8} -> model.lora.rank).
    A config resolved once keeps its value: to switch the method of a loaded config, give
    ``optim.backbone_lr_mult`` with it (or load from the unresolved JSON, as the CLI does)."""
    cfg = copy.deepcopy(cfg)
    m = cfg.model
    if m.method_kwargs and m.method in METHOD_OPTIONS and m.method != "rein":
        setattr(m, m.method, _merge_into(getattr(m, m.method), m.method_kwargs, f"model.{m.method}."))
        m.method_kwargs = {}
    cfg.optim.backbone_lr_mult = backbone_lr_mult(cfg.optim, m.method)
    return cfg


def method_options(m: ModelConfig) -> dict:
    """The keywords of ``m.method``'s backbone builder (reinlite.models.baselines.METHODS):
    ``model.<method>`` as a dict ({} for frozen and full), with any ``model.method_kwargs``
    set after loading on top."""
    if m.method not in METHOD_OPTIONS:
        if m.method_kwargs:
            raise ConfigError(f"model.method={m.method} takes no options, got model.method_kwargs="
                              f"{m.method_kwargs}")
        return {}
    options = getattr(m, m.method)
    if options is None:
        raise ConfigError(f"model.method is {m.method!r} but model.{m.method} is null")
    if m.method_kwargs:
        if m.method == "rein":
            raise ConfigError(f"model.method_kwargs {m.method_kwargs} are for the baselines; Rein's "
                              f"options go in model.rein (e.g. model.rein.num_tokens=50)")
        options = _merge_into(options, m.method_kwargs, f"model.{m.method}.")
    return dataclasses.asdict(options)


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
    return ReinConfig.num_tokens


# ---------------------------------------------------------------------------- comparing configs (resuming a run, extending a sweep)
def normalise(values: dict) -> dict:
    """A stored config dict as this version reads it: keys added since it was written take
    their defaults, old forms are folded in (:func:`resolve`), the class list is resolved
    (:func:`resolve_classes`). Unreadable dicts are returned
    as they are (the comparison then names every difference)."""
    try:
        return resolve_classes(from_dict(values)).to_dict()
    except (ConfigError, OSError, ValueError):
        return values


def changed_keys(old: dict, new: dict, prefix: str = "", ignore: Sequence[str] = RESUMABLE) -> list[str]:
    """Dotted keys whose values differ between two config dicts (both :func:`normalise`-d;
    the keys in ``ignore``, by default the ``RESUMABLE`` ones, left out; a key ending in '.'
    stands for its whole subtree)."""
    if not prefix:
        old, new = normalise(old), normalise(new)
    out = []
    for key in sorted(set(old) | set(new)):
        dotted = prefix + key
        if any(dotted == r or (r.endswith(".") and dotted.startswith(r)) for r in ignore):
            continue
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict) and dotted not in FREE_FORM:
            out += changed_keys(a, b, dotted + ".", ignore)
        elif a != b:
            out.append(dotted)
    return out
