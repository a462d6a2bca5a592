"""Student-facing checks: compare an answer with the library's and explain what differs.

Every check returns ``True`` when the answer is right and raises :class:`CheckFailed` with a
message a student can act on otherwise: expected versus actual shape or dtype, the largest
difference and where it is, and a hint naming the paper's equation.

    >>> from reinlite.checks import check_close
    >>> check_close(my_similarity, token_similarity(f, T), name="S", hint="Eq. 3: softmax over the m tokens")
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["CheckFailed", "check_shape", "check_close", "check_equal", "check_function", "HINTS"]

# The hints name the equations of rein-method.md / the paper (arXiv 2312.04265).
HINTS = {
    "token_similarity": "Eq. 3: S = softmax(f T^T / sqrt(c)), the softmax runs over the m tokens (last axis).",
    "drop_first_column": "Token 0 stays in the softmax normaliser; drop its column *after* the softmax: S[..., 1:].",
    "feature_delta": "Eq. 4-5: Delta f = (S[:, 1:] (T[1:] W_T + b_T) + f) W_f + b_f; the residual f is inside W_f.",
    "refine_features": "f' = f + s * Delta f, with the learnable scalar s (init 1e-3).",
    "low_rank_tokens": "Eq. 8: T = A B with A [m, r] and B [r, c].",
    "pool_layers": "Pool over layers, then interleave per channel: [max_0, mean_0, last_0, max_1, ...].",
    "instance_queries": "Eq. 6-7: queries = merge(pool_layers(transform(T))), over all m tokens (token 0 included).",
    "rein_parameters": "Count tokens (L m c, or L m r + L r c), the scalar s, two Linear(c, c), Linear(c, Q) and Linear(3Q, Q).",
}


class CheckFailed(AssertionError):
    """An answer that differs from the reference; the message says how and hints why."""


def _hint(hint: Optional[str]) -> str:
    return f"\n  hint: {HINTS.get(hint, hint)}" if hint else ""


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if value is None or value is ...:
        raise CheckFailed(f"{name}: no answer yet (got {value!r}); fill in the code above and run it again.")
    try:
        return torch.as_tensor(value)
    except Exception as err:
        raise CheckFailed(f"{name}: expected a tensor, got {type(value).__name__}") from err


def check_shape(actual: Any, expected_shape: Sequence[int], name: str = "answer",
                hint: Optional[str] = None) -> bool:
    """The answer is a tensor of exactly ``expected_shape``."""
    tensor = _as_tensor(actual, name)
    if tuple(tensor.shape) != tuple(expected_shape):
        raise CheckFailed(
            f"{name}: expected shape {tuple(expected_shape)}, got {tuple(tensor.shape)}" + _hint(hint))
    return True


def check_close(actual: Any, expected: Tensor, name: str = "answer", hint: Optional[str] = None,
                rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Same shape and values within tolerance; on failure report the largest difference."""
    tensor = _as_tensor(actual, name)
    expected = torch.as_tensor(expected)
    check_shape(tensor, expected.shape, name, hint)
    if not torch.is_floating_point(tensor) and torch.is_floating_point(expected):
        tensor = tensor.to(expected.dtype)
    tensor = tensor.detach().to(expected.dtype)
    expected = expected.detach()
    if not torch.isfinite(tensor).all():
        raise CheckFailed(f"{name}: contains NaN or inf" + _hint(hint))
    diff = (tensor - expected).abs()
    bad = diff > atol + rtol * expected.abs()
    if bad.any():
        worst = int(diff.flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), diff.shape))
        raise CheckFailed(
            f"{name}: {int(bad.sum())} of {bad.numel()} values differ; max difference "
            f"{float(diff.max()):.4g} at index {index} (got {float(tensor[index]):.6g}, "
            f"expected {float(expected[index]):.6g})" + _hint(hint))
    return True


def check_equal(actual: Any, expected: Any, name: str = "answer", hint: Optional[str] = None) -> bool:
    """Exact equality for counts, names and other plain values."""
    if actual is None or actual is ...:
        raise CheckFailed(f"{name}: no answer yet (got {actual!r})" + _hint(hint))
    if actual != expected:
        detail = ""
        if isinstance(actual, (int, float)) and isinstance(expected, (int, float)):
            detail = f" (off by {actual - expected:+,})"
        raise CheckFailed(f"{name}: expected {expected!r}, got {actual!r}{detail}" + _hint(hint))
    return True


def check_function(student: Callable, reference: Callable, example_args: Sequence[tuple],
                   name: Optional[str] = None, hint: Optional[str] = None, **tolerances) -> bool:
    """Call ``student`` and ``reference`` on each tuple of arguments and compare the outputs."""
    name = name or getattr(student, "__name__", "function")
    for number, args in enumerate(example_args):
        try:
            got = student(*args)
        except NotImplementedError:
            raise CheckFailed(f"{name}: not implemented yet" + _hint(hint)) from None
        except Exception as err:
            shapes = ", ".join(str(tuple(a.shape)) if isinstance(a, Tensor) else type(a).__name__ for a in args)
            raise CheckFailed(f"{name} raised {type(err).__name__}: {err} (inputs {shapes})" + _hint(hint)) from err
        check_close(got, reference(*args), name=f"{name} (example {number + 1})", hint=hint, **tolerances)
    return True
