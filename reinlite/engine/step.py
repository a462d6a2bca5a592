"""One training step: the only place in reinlite where a loss is minimised.

    result = train_step(model, images, lambda out: criterion(out, labels), optimizer,
                        params=trainable, grad_clip=cfg.optim.grad_clip, amp=amp_on)
    result.loss, result.losses, result.grad_norm

In order (the float operations, and their order, of every reinlite training run):

    outputs = model(inputs)             under bf16 autocast when ``amp`` (the forward only)
    loss    = loss_fn(outputs)          outside autocast, in the loss's own precision
    check_loss(loss)                    optional: may raise before anything is changed
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    g = clip_grad_norm_(params, grad_clip or inf)     g = ||grad||_2 over ``params``, before clipping
    optimizer.step()

``reinlite train`` (reinlite.engine.train), ``reinlite costs``, the GPU check, the probes and
the pretraining programs all call it; they differ only in the model, the loss and the optimizer
they pass (a pretraining objective passes its own ``loss_fn``). The learning-rate schedule is
the caller's (reinlite.engine.optim: ``poly_lr`` / ``warmup_cosine_lr`` with ``set_lr``).

With ``grad_clip`` None the gradient norm is still computed (it is logged) and the gradients are
multiplied by 1.0, which leaves them bit for bit as they were.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["StepResult", "train_step", "optimizer_params"]

LossOutput = Union[Tensor, Mapping[str, Tensor]]


@dataclass
class StepResult:
    """What one step returns.

    loss: the scalar that was minimised (detached).
    losses: ``loss_fn``'s dict as it returned it (``{"loss": loss}`` when it returned a tensor).
    grad_norm: the total L2 norm of the gradients of ``params`` before clipping (a 0-d tensor).
    (The model's outputs are not kept: holding them until the next step would hold their memory.)
    """
    loss: Tensor
    losses: dict
    grad_norm: Tensor


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """Every parameter the optimizer updates, group by group."""
    return [p for g in optimizer.param_groups for p in g["params"]]


def train_step(model: Callable[..., Any], inputs: Any, loss_fn: Callable[[Any], LossOutput],
               optimizer: torch.optim.Optimizer, *, params: Optional[Sequence[Tensor]] = None,
               grad_clip: Optional[float] = None, amp: bool = False,
               check_loss: Optional[Callable[[Tensor], None]] = None) -> StepResult:
    """One optimisation step (see the module's docstring for the exact order).

    model: a module or any callable; called as ``model(*inputs)`` when ``inputs`` is a tuple,
        else ``model(inputs)``.
    loss_fn: outputs -> a scalar loss, or a dict of losses whose ``"loss"`` is minimised.
    params: the parameters whose gradient norm is taken and clipped (default: the optimizer's,
        group by group). The order of the list is the order of the norm's sum: pass the same
        list every step.
    grad_clip: the maximal gradient norm, or None (no clipping).
    amp: run the forward pass under bf16 autocast (reinlite.engine.device.amp_enabled).
    check_loss: called with the loss before the gradients are touched (e.g. to stop on a
        non-finite loss with a message that knows the run).
    """
    params = optimizer_params(optimizer) if params is None else list(params)
    device_type = params[0].device.type if params else "cpu"
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
        outputs = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    out = loss_fn(outputs)
    losses = dict(out) if isinstance(out, Mapping) else {"loss": out}
    loss = losses["loss"]
    if check_loss is not None:
        check_loss(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, float(grad_clip or "inf"))
    optimizer.step()
    return StepResult(loss=loss.detach(), losses=losses, grad_norm=grad_norm)
