"""Training: the loop, top to bottom.

    reinlite train --config course [key=value ...]      # or a path to a .json config
    torchrun --nproc_per_node=2 -m reinlite.cli train --config gta2cs_dinov2_large

What the loop does, per step k (the release's recipe, rein-method.md):
    lr_k  = lr * (1 - k / iters) ** 0.9                          (poly schedule)
    batch = the k-th batch of a seeded, epoch-wise permutation, each sample augmented by a
            generator seeded by (seed, its position)              (reinlite.data.pipeline)
    loss  = Mask2FormerLoss(head(backbone(images)), labels)      (bf16 autocast on a GPU)
    AdamW step on the trainable parameters only (Rein + head), optional grad-norm clipping
            (the forward, loss, backward, clip and AdamW step are reinlite.engine.step.train_step)

Exact resume: the data order and every random draw of step k depend only on (seed, k) (the
global RNG is re-seeded at the start of each step). A checkpoint stores the trainable weights
with the step and the whole config (reinlite.engine.checkpoint), and the optimiser state; a run
killed after step k and resumed from its last checkpoint ends with bit-identical weights on
a CPU. Resuming with a changed config is refused (only the keys in
``reinlite.config.RESUMABLE``, e.g. ``optim.iters`` to extend a run, may change).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from reinlite.engine.checkpoint import CKPT_NAME, read_optimizer_state, read_run_checkpoint, save_run_checkpoint, load_trainable
from reinlite.config import Config, ConfigError, changed_keys, load_config
from reinlite.data.pipeline import AugmentedDataset, StepBatchSampler, build_dataset, collate, mix_seed
from reinlite.data.transforms import TrainAugment
from reinlite.engine.diagnostics import record_delta_ratios, rein_log_entry
from reinlite.models.segmentor import build_criterion, build_model
from reinlite.engine.device import amp_enabled, pick_device
from reinlite.engine.optim import build_optimizer, poly_lr, set_lr
from reinlite.engine.step import train_step

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Training stopped: the loss became NaN or infinite."""


def setup_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment (a single process without it).
    The device follows reinlite.engine.device.pick_device (device=cuda without a GPU is a
    ConfigError); each process takes the GPU of its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_pref, index=int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def find_resume_checkpoint(cfg: Config) -> Optional[Path]:
    """The checkpoint to resume from (``train.resume``: auto | a path | none), or None."""
    resume = str(cfg.train.resume or "none")
    if resume.lower() in ("none", "false", "no"):
        return None
    if resume.lower() == "auto":
        path = cfg.run_dir / CKPT_NAME
        return path if path.is_file() else None
    path = Path(resume)
    path = path / CKPT_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"train.resume: checkpoint not found: {path}")
    return path


def check_same_config(stored: dict, cfg: Config, where: Path) -> None:
    """Refuse to resume a run whose config changed (apart from the resumable keys)."""
    new = cfg.to_dict()
    diff = changed_keys(stored, new)
    if diff:
        def value(tree, key):
            for part in key.split("."):
                tree = tree.get(part, "<missing>") if isinstance(tree, dict) else "<missing>"
            return json.dumps(tree)

        lines = "\n".join(f"  {k}: {value(stored, k)} in the run, {value(new, k)} now" for k in diff)
        raise ConfigError(
            f"{where} was trained with another config:\n{lines}\nResuming would mix the two. "
            f"Train into another folder (out_dir=runs/NEW or name=NEW), or start this one over "
            f"with train.resume=none.")


def train(cfg: Config, *, stop_at: Optional[int] = None,
          on_step: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train with ``cfg`` (from :func:`reinlite.config.load_config`). Returns dict(checkpoint,
    step, losses, seconds, out_dir, rank, world).

    stop_at: stop (after saving a checkpoint) once this many steps are done; the run can be
        resumed later (``train.resume=auto``).
    on_step: called as on_step(step, losses) after every optimiser step (tests use it to
        simulate a crash).
    """
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    rank, world, device = setup_distributed(cfg.device)
    amp_on = amp_enabled(cfg.amp, device)
    is_main = rank == 0
    out_dir = cfg.run_dir
    o, t = cfg.optim, cfg.train
    iters = int(o.iters)

    # --- the model, the loss, the optimiser -----------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg.loss, cfg.model.head.num_classes).to(device)
    optimizer = build_optimizer(model, o)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # --- resume -----------------------------------------------------------------------------
    start, ckpt_path = 0, find_resume_checkpoint(cfg)
    if ckpt_path is not None:
        weights, meta = read_run_checkpoint(ckpt_path)
        if "config" in meta:
            check_same_config(json.loads(meta["config"]), cfg, ckpt_path)
        load_trainable(model, weights, str(ckpt_path))
        start = int(meta.get("step", 0))
        optimizer.load_state_dict(read_optimizer_state(ckpt_path, start))
        if is_main and start < iters:
            log.info("resuming from %s at step %d", ckpt_path, start)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    # --- the data: batch k is a function of (seed, k) ---------------------------------------
    d = cfg.data
    source = build_dataset(cfg, d.source, d.source_split)
    sampler = StepBatchSampler(len(source), int(o.batch_size), iters, cfg.seed, start, rank, world)
    loader = torch.utils.data.DataLoader(
        AugmentedDataset(source, TrainAugment.from_config(d)), batch_sampler=sampler,
        collate_fn=collate, num_workers=int(d.num_workers),
        generator=torch.Generator().manual_seed(cfg.seed))

    # --- logging ----------------------------------------------------------------------------
    log_file = writer = bar = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        log_file = open(out_dir / "log.jsonl", "a")
        if t.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(out_dir / "tb"))
            except ImportError:
                log.warning("tensorboard is not installed; train.tensorboard ignored")
        if t.progress and start < iters:
            from tqdm import tqdm
            bar = tqdm(total=iters, initial=start, desc=f"train {cfg.name}", dynamic_ncols=True)

    # --- the loop ---------------------------------------------------------------------------
    model.train()
    t0 = time.perf_counter()
    last_good = (ckpt_path, start)
    history, step = [], start

    def stop_if_not_finite(loss: torch.Tensor) -> None:
        """Stop every rank before the step that would spread a NaN or inf into the weights."""
        bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0, device=device)
        if world > 1:
            dist.all_reduce(bad)
        if bad.item() > 0:
            where = (f"the last good checkpoint is {last_good[0]} (step {last_good[1]})"
                     if last_good[0] else "no checkpoint was written yet")
            raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at step {step}: training "
                                f"stopped; {where}. Try a lower optim.lr, optim.grad_clip or amp=none.")

    try:
        for images, labels in loader:
            torch.manual_seed(mix_seed(cfg.seed, "step", step, rank))
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            lr = poly_lr(o.lr, step, iters, o.poly_power)
            set_lr(optimizer, lr)
            logging_step = is_main and ((step + 1) % int(t.log_every) == 0 or step + 1 == iters or step == start)

            with record_delta_ratios(model, enabled=logging_step) as ratios:
                result = train_step(net, images, lambda outputs: criterion(outputs, labels), optimizer,
                                    params=trainable, grad_clip=o.grad_clip, amp=amp_on,
                                    check_loss=stop_if_not_finite)
            losses, gnorm = result.losses, result.grad_norm
            step += 1

            record = {k: float(losses[k].detach()) for k in ("loss", "loss_cls", "loss_mask", "loss_dice")}
            history.append(record["loss"])
            if on_step is not None:
                on_step(step, record)
            if is_main:
                if logging_step:
                    entry = dict(step=step, lr=lr, grad_norm=float(gnorm), **record,
                                 seconds=round(time.perf_counter() - t0, 2), **rein_log_entry(model, ratios))
                    log_file.write(json.dumps(entry) + "\n")
                    log_file.flush()
                    if writer is not None:
                        for k, v in entry.items():
                            if isinstance(v, list):
                                continue
                            writer.add_scalar(f"train/{k}", v, step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
            done = step == iters or (stop_at is not None and step >= stop_at)
            if step % int(t.ckpt_every) == 0 or done:
                if is_main:
                    last_good = (save_run_checkpoint(out_dir, model, optimizer, step, cfg.to_dict()), step)
                if world > 1:
                    dist.barrier()
            if done:
                break
    finally:
        for closable in (bar, log_file, writer):
            if closable is not None:
                closable.close()

    if world > 1:  # every rank must hold the same weights (DDP keeps them in sync)
        flat = torch.cat([p.detach().float().flatten() for p in trainable])
        sums = [torch.zeros(2, device=device) for _ in range(world)]
        dist.all_gather(sums, torch.stack([flat.sum(), (flat * flat).sum()]))
        if not all(torch.equal(sums[0], s) for s in sums):
            raise RuntimeError("DDP ranks ended with different weights")
    seconds = time.perf_counter() - t0
    if is_main and step > start:
        log.info("trained %s: steps %d->%d in %.1f s; checkpoint %s", cfg.name, start, step,
                 seconds, out_dir / CKPT_NAME)
    elif is_main:
        log.info("%s: already trained to step %d (%s); nothing to do (train.resume=none or "
                 "another out_dir starts afresh)", cfg.name, step, out_dir / CKPT_NAME)
    return dict(checkpoint=out_dir / CKPT_NAME, step=step, losses=history, seconds=seconds,
                out_dir=out_dir, rank=rank, world=world)


def run_train_cli(args) -> int:
    """`reinlite train --config NAME_OR_PATH [key=value ...]`."""
    cfg = load_config(args.config, args.overrides)
    try:
        result = train(cfg, stop_at=getattr(args, "stop_at", None))
    except NonFiniteLoss as err:
        log.error("%s", err)
        return 3
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0 if result["step"] > 0 else 1
