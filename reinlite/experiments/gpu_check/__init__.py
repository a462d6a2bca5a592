"""`reinlite gpu-check`: the GPU path, measured in one call, next to the paper's Table 8.

    reinlite gpu-check --out runs/gpu_check            # one GPU, <= 8 minutes in all
    reinlite gpu-check --out /tmp/gc --tiny            # seconds, on the CPU (what the tests run)
    reinlite gpu-check --out /tmp/gc --tiny --device cuda   # a 1-minute smoke test on a GPU

The release configuration (``gta2cs_dinov2_large``: DINOv2-L/16 at 512 x 512 with *random*
weights, no download; Rein m = 100, r = 16; Mask2Former with the deformable pixel decoder;
12,544 points; batch 4), built through the project's one builder (:func:`build`), then:

=================  =====================================================================
phase              what it measures
=================  =====================================================================
step_rein_bf16     Rein training step (forward, Mask2Former loss with Hungarian matching,
step_rein_fp32     backward, AdamW): median seconds over ``--steps`` steps after
step_full_bf16     ``--warmup``, and peak memory (``torch.cuda.max_memory_allocated``: the
step_full_fp32     weights, grads, optimiser state and activations); full fine-tuning alike.
                   bf16 = bf16 autocast (how ``reinlite train`` runs on a GPU); fp32 =
                   no autocast (TF32 matmuls as PyTorch's default leaves them: off).
profile            ``torch.profiler`` over a few Rein bf16 steps: the share of the step
                   spent in the multi-scale deformable attention of the pixel decoder
                   (``reinlite.models.head.MSDeformAttn``; its ``grid_sample`` calls, forward and
                   backward, told apart from the loss's point sampling by their shapes).
train              ``--train-steps`` (200) Rein steps under bf16 on the embedded benchmark's
                   GTA images upscaled to the crop (random shapes if it is absent), poly
                   lr: every loss finite, the last 20 below the first 20.
slide              slide-window inference (crop 512, stride 341) of 1024 x 512 images
                   (``reinlite.engine.evaluate.infer``): images per second, bf16 and fp32.
ddp                ``torchrun --nproc_per_node=1`` of a minimal DDP step (NCCL on a GPU,
                   gloo on the CPU): the release model wrapped in DistributedDataParallel,
                   a few bf16 steps and an all_reduce.
compile            the Rein bf16 step with ``torch.compile(model)`` in a child process
                   killed at its time budget (skipped then); the compile time and the
                   compiled step's median.
train_cli          ``torchrun --nproc_per_node=1 -m reinlite.cli train`` with the release
                   config, random weights and a few iterations (the real loop on the device).
=================  =====================================================================

Time: every phase has a budget (seconds, :data:`GPU_BUDGETS`); a phase runs with
``min(budget, time left)`` and is *skipped* (reported as such) when less than its minimum
is left of ``--budget`` (480 s, model construction included). Step loops stop at their
phase's budget (``truncated`` in the report). Results: ``gpu_check.json`` and
``gpu_check.md`` in ``--out``. Table 8 of the paper (one RTX 3090 Ti, 40k iterations):
Rein 9.5 h / 10.0 GB, full fine-tuning 11.2 h / 14.7 GB, Rein / full = 0.85 time, 0.68 memory.

Layout, by job: :mod:`.settings` (phases, budgets, Table 8, :class:`Settings`, the release
config), :mod:`.phases` (the measurements: the step, its timing, the profile, slide
inference), :mod:`.children` (the torchrun / compile child processes and their budgets),
:mod:`.run` (the phases in order within ``--budget``: :func:`run_gpu_check`), :mod:`.report`
(the Table 8 comparison and the markdown), :mod:`.cli` (the arguments; ``python -m
reinlite.experiments.gpu_check`` is also how the children are started).
"""
from reinlite.experiments.gpu_check.settings import (GIB, GPU_BUDGETS, PAPER, PHASES, RELEASE, TINY_BUDGETS, TINY_OVERRIDES,
                       TINY_PHASES, Settings, check_config, config_facts)
from reinlite.experiments.gpu_check.phases import (MSDEFORM_RANGE, build, domain_images, make_batches, profile_steps, slide_rate,
                     time_steps, train_step)
from reinlite.experiments.gpu_check.children import compile_worker, ddp_worker, run_child, torchrun
from reinlite.experiments.gpu_check.report import format_markdown, summarise
from reinlite.experiments.gpu_check.run import Clock, run_gpu_check
from reinlite.experiments.gpu_check.cli import add_arguments, main, run_cli

__all__ = ["GIB", "GPU_BUDGETS", "PAPER", "PHASES", "RELEASE", "TINY_BUDGETS", "TINY_OVERRIDES", "TINY_PHASES",
           "Settings", "check_config", "config_facts", "MSDEFORM_RANGE", "build", "domain_images",
           "make_batches", "profile_steps", "slide_rate", "time_steps", "train_step", "compile_worker",
           "ddp_worker", "run_child", "torchrun", "format_markdown", "summarise", "Clock", "run_gpu_check",
           "add_arguments", "main", "run_cli"]
