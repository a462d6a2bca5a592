"""Student-facing feedback: checks that compare an answer with the library's, and tiered hints.

A check returns ``True`` when the answer is right and raises :class:`CheckFailed` otherwise,
with a message a student can act on: expected versus actual shape or dtype, the largest
difference and where it is, and a *tier-1* hint: the idea, in words and the paper's
equations, never code. A failing check never prints a solution. Code-level guidance
(*tier 2*) comes only when the student asks for it with :func:`hint`::

    from reinlite.course.feedback import check_function, hint, try_check

    try_check(lambda: check_function(my_token_similarity, token_similarity, examples,
                                     hint="token_similarity"))
    # not yet: my_token_similarity: not implemented yet
    #   hint: Eq. 5: each patch compares itself with every token ...
    #   (still stuck? run hint("token_similarity", 2) for code-level guidance)

    hint("token_similarity", 2)      # a cell of its own: prints the tier-2 guidance

``hint=`` of every check is either a key of :data:`HINTS` (tier 1 is shown, tier 2 is
offered) or a free text shown as is (which then must not give the answer away either).
Notebooks may add keys of their own with :func:`register_hint`. :func:`try_check` runs a
check and prints its verdict instead of raising, so an unfinished exercise prints "not yet"
and a notebook still runs top to bottom.

The hints name the equations of the paper (Wei et al., CVPR 2024) with the numbers of
arXiv 2312.04265v1: (5) S = softmax(f T^T / sqrt(c)), (6) the first column dropped, (7) Delta f,
(8)-(10) the instance queries, (11) shared weights, (12) low-rank tokens T = A B.
"""
from __future__ import annotations

import textwrap
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["CheckFailed", "Hint", "HINTS", "hint", "register_hint", "hint_text", "try_check",
           "check_shape", "check_close", "check_equal", "check_function", "check_cases",
           "check_experiment", "EXPERIMENT_TOLERANCE", "NO_CLEAR_DIFFERENCE"]


class Hint(NamedTuple):
    """Two tiers of help for one exercise."""

    idea: str                    #: tier 1: the concept, in words and equations, no code
    code: Optional[str] = None   #: tier 2: code-level guidance, shown only on request


HINTS: dict[str, Hint] = {
    # 00: the DGSS problem and mIoU
    "label_to_train": Hint(
        "Every one of the 256 possible label ids has exactly one train id: its position in the "
        "list of the 19 evaluated label ids, or 255 when it is not in that list. Decide that once "
        "per id, then apply the decision to every pixel at once.",
        "Build a lookup table of 256 entries filled with 255 (dtype uint8), write 0..18 at the "
        "positions C.CITYSCAPES_LABEL_IDS, then index the table with the whole label array."),
    "iou": Hint(
        "IoU_k = intersection / union. The intersection is the diagonal entry M_kk; the union is "
        "every pixel that is class k in the label (row k) or in the prediction (column k), and "
        "the diagonal belongs to both, so it must be counted once. An empty union gives NaN.",
        "Cast M to float64; union = row sums + column sums - diagonal (M.sum(1), M.sum(0), "
        "M.diag()); torch.where(union > 0, diagonal / union, nan)."),
    # 01: frozen features
    "probe_logits": Hint(
        "A linear probe on a feature map applies the same K x c matrix at every position (a 1 x 1 "
        "convolution): each logit is a weighted sum over the channel axis plus the class's bias.",
        "One torch.einsum that sums over the channel letter ('bchw,kc->...'), then add the bias "
        "reshaped to broadcast over h and w ([K, 1, 1])."),
    "explained_variance": Hint(
        "PCA measures variance around the mean: centre the features (one row per patch) first. "
        "The variance along principal direction i is proportional to the squared singular value "
        "s_i^2 of the centred matrix; the share of the first q is their sum over the sum of all.",
        "X = features.reshape(-1, c); X = X - X.mean(0); s = torch.linalg.svdvals(X); "
        "return (s[:q] ** 2) / (s ** 2).sum()  (one ratio per component, shape [q])."),
    # 02-06: the Rein layer
    "token_similarity": Hint(
        "Eq. 5: each patch compares itself with every token (a dot product over the c channels, "
        "scaled by 1/sqrt(c)), and the softmax turns one patch's m scores into a distribution: it "
        "runs over the m tokens, not over the patches.",
        "scores = features @ tokens.T (shape [B, n, m]), divide by math.sqrt(c) with c = "
        "features.shape[-1], then torch.softmax(scores, dim=-1)."),
    "token_coverage": Hint(
        "Give every patch to the token it attends to most (its largest entry of S), then count, "
        "per token, the share of all patches it received: one number per token, summing to 1.",
        "winner = S.argmax(-1); counts = torch.bincount(winner.flatten(), minlength=m); "
        "return counts.float() / winner.numel()  (shape [m])."),
    "drop_first_column": Hint(
        "Token 0 takes part in the softmax's normaliser, so it can absorb a patch's attention; "
        "only afterwards is its column removed, and the remaining columns are not renormalised: "
        "mass put on token 0 simply produces no update.",
        "Slice the last axis after the softmax, keeping columns 1..m-1 (an ellipsis handles any "
        "number of leading axes); do not divide by the new row sums."),
    "update_strength": Hint(
        "After token 0's column is dropped, a patch's remaining similarities no longer sum to 1: "
        "what is left of its unit of attention is the strength of its update, and the part it "
        "gave to token 0 is exactly what is missing.",
        "Sum the kept columns over the token axis (S[..., 1:].sum(-1)), or equivalently "
        "1 - S[..., 0]; the result has S's shape without the last axis."),
    "feature_delta": Hint(
        "Eqs. 6-7: the tokens (except token 0) are mapped to feature space by the shared W_T, "
        "each patch takes its similarity-weighted mix of them, the patch's own feature f is added "
        "back, and that sum goes through the shared W_f: the residual f is inside W_f.",
        "S = softmax(features @ tokens.T / sqrt(c), -1); mixed = S[..., 1:] @ "
        "mlp_token2feat(tokens[1:]); return mlp_delta_f(mixed + features)."),
    "refine_features": Hint(
        "The refined feature is the input plus a small, learnable multiple of Delta f: the scalar "
        "s starts at 1e-3, so Rein starts close to the identity. (s exists only in the release's "
        "code, not in the paper's equations.)",
        "return features + scale * feature_delta(features, tokens, mlp_token2feat, mlp_delta_f)."),
    "shared_mlp_parameters": Hint(
        "A Linear(c, c) has a c x c weight matrix and a bias of c entries; Rein shares two of "
        "them (W_T and W_f) across all layers, so the depth L does not enter.",
        "2 * (c * c + c) with c = 1024."),
    "low_rank_tokens": Hint(
        "Eq. 12: instead of storing the m x c token matrix, store two thin factors whose product "
        "is m x c: an m x r matrix and an r x c matrix, with a small rank r.",
        "tokens = A @ B with A [m, r] and B [r, c]; the product has shape [m, c]."),
    "break_even_rank": Hint(
        "Per layer, low-rank tokens store the entries of two thin factors (m x r and r x c), "
        "full-rank tokens those of one m x c matrix. The break-even rank is the r at which the two "
        "counts are equal.",
        "r = m c / (m + c)."),
    "rein_parameters": Hint(
        "Every trainable tensor counts once: the tokens of each of the L layers (in low rank, how "
        "many numbers do the two factors hold?), the scale s, the two MLPs shared by all layers, "
        "and the two query layers (transform to Q channels, merge from 3Q). A Linear(in, out) "
        "holds a weight matrix and a bias.",
        "tokens + 1 + 2 * (c * c + c) + (c * Q + Q) + (3 * Q * Q + Q)."),
    "pool_layers": Hint(
        "Eqs. 9-10: the queries summarise the L layers' transformed tokens by three statistics over "
        "the layer axis (max, mean, and the last layer's value), interleaved per channel: "
        "[max_0, mean_0, last_0, max_1, mean_1, last_1, ...].",
        "X [L, m, Q] -> torch.stack([X.max(0).values, X.mean(0), X[-1]], dim=-1) is [m, Q, 3]; "
        "reshape to [m, 3Q] so the three values of a channel sit next to each other."),
    "instance_queries": Hint(
        "Eqs. 8-10: transform every layer's tokens to Q channels, pool over the layers, then merge "
        "3Q -> Q. All m tokens are used (token 0 included), and nothing depends on the image.",
        "merge(pool_layers(transform(stack of the L layers' tokens, [L, m, c])))."),
    # 02-06: the course's "new question" exercises
    "components_needed": Hint(
        "PCA's share of the variance along direction i is s_i^2 / sum_j s_j^2 for the singular values "
        "s_i of the centred feature matrix (one row per patch). Add the shares from the largest down "
        "and stop at the first k whose total reaches the share asked for.",
        "X = features.reshape(-1, c); s2 = torch.linalg.svdvals(X - X.mean(0)) ** 2; "
        "k = number of cumulative shares (torch.cumsum(s2, 0) / s2.sum()) still below share, plus 1."),
    "similarity_entropy": Hint(
        'The entropy of a distribution p over m outcomes is -sum_k p_k log p_k; it is largest, log '
        'm, when every p_k = 1/m, and 0 when one p_k = 1. A term with p_k = 0 contributes 0 (the '
        'limit of p log p), not NaN.',
        '-(S * S.clamp_min(1e-12).log()).sum(-1) / math.log(S.shape[-1])'),
    "sink_logit": Hint(
        "Write Z for the sum of exp over the other logits. Token 0's share of the softmax is e^l0 /"
        ' (e^l0 + Z), so the strength left for the other tokens is Z / (e^l0 + Z). Set it to the '
        'strength you want and solve for l0; log Z is a logsumexp.',
        'torch.logsumexp(other_logits, -1) + math.log((1 - strength) / strength)'),
    "update_ratio": Hint(
        'The refined patches are f + s Delta f, so the change the layer makes is s Delta f. Compare'
        ' its size with the size of f itself, one number per layer, on the same input x.',
        'f = x[:, 1:]; torch.stack([(rein.scale * rein.delta(f, i)).norm() / f.norm() for i in '
        'range(rein.num_layers)]).'),
    "interleave_merge_weight": Hint(
        'The two orders hold the same 3Q numbers. In the blocks order, statistic k (0 max, 1 mean, '
        '2 last) of channel i sits at position k Q + i; in the interleaved order at 3 i + k. The '
        "interleaved weight's column 3 i + k must be the blocks weight's column k Q + i.",
        'W.reshape(Q_out, 3, Q) has [:, k, i] = column k Q + i; swap the last two axes and reshape '
        'back to [Q_out, 3Q].'),
    # 07-10: decoder, training, baselines, real data
    "semantic_inference": Hint(
        "Mask classification: each query says what class it is (a softmax over K + 1 classes, "
        "the last one 'no object') and where (a sigmoid mask). A pixel's score for class k sums, "
        "over the queries, the query's probability of k times its mask; 'no object' is dropped "
        "after the softmax.",
        "torch.einsum('bqk,bqhw->bkhw', pred_logits.softmax(-1)[..., :-1], pred_masks.sigmoid())."),
    "dice_cost": Hint(
        "The dice cost of one (prediction, target) pair is 1 - (2 overlap + 1) / (predicted mass + "
        "target mass + 1), with the prediction as probabilities; the overlaps of every pair at "
        "once form one matrix product.",
        "s = inputs.sigmoid(); 1 - (2 * s @ targets.T + 1) / (s.sum(-1)[:, None] + "
        "targets.sum(-1)[None, :] + 1)."),
    "no_object": Hint(
        "Hungarian matching is one-to-one: each of the n targets gets exactly one of the m "
        "predictions; every prediction left over is trained towards the 'no object' class.",
        "m - (number of targets of the image)."),
    "poly_lr": Hint(
        "The poly schedule decays the learning rate from its base value to 0 at the last "
        "iteration, following (1 - progress) ** power; past the end it stays 0.",
        "base_lr * (1 - min(step, iters) / iters) ** power."),
    "whole_image_inference": Hint(
        "Inference must see what training saw: the same normalisation and input size. Class "
        "scores (not labels) are resized back to the image, and only then is the class chosen.",
        "normalize -> F.interpolate to the evaluation size -> model.predict -> F.interpolate "
        "the scores back to (H, W) -> argmax over dim 1."),
    "lora_parameters": Hint(
        "LoRA adds two thin matrices next to each adapted Linear(in, out): one in x r and one "
        "r x out, in every block.",
        "L * r * (in + out) with in = c and out = 3c for qkv."),
    "resize_patch_kernel": Hint(
        "A patch-14 kernel becomes a patch-16 kernel by resampling it as a small image per "
        "(output channel, input channel), with a smooth (bicubic) interpolation.",
        "F.interpolate(kernel, size=(16, 16), mode='bicubic', align_corners=False)."),
}


class CheckFailed(AssertionError):
    """An answer that differs from the reference; the message says how and hints why."""


def register_hint(key: str, idea: str, code: Optional[str] = None, replace: bool = False) -> Hint:
    """Add a two-tier hint under ``key`` (a notebook's own exercise); returns it.

    ``idea`` is tier 1 (shown by a failing check: the concept, no code); ``code`` is tier 2
    (shown only by ``hint(key, 2)``). An existing key is kept unless ``replace=True``.
    """
    if not idea:
        raise ValueError("register_hint: tier 1 ('idea') must say something")
    if key in HINTS and not replace:
        if HINTS[key] != Hint(idea, code):
            raise ValueError(f"register_hint: {key!r} is already a hint; pass replace=True to change it")
        return HINTS[key]
    HINTS[key] = Hint(idea, code)
    return HINTS[key]


def hint_text(key: str, tier: int = 1) -> str:
    """The text of hint ``key`` at ``tier`` (1 = the idea, 2 = code-level guidance)."""
    if key not in HINTS:
        raise KeyError(f"no hint called {key!r}; known: {', '.join(sorted(HINTS))}")
    if tier not in (1, 2):
        raise ValueError(f"hint tier must be 1 (the idea) or 2 (code-level guidance), got {tier!r}")
    entry = HINTS[key]
    if tier == 1:
        return entry.idea
    return entry.code if entry.code else f"{entry.idea}\n(no code-level hint for {key!r}: the idea above is all)"


def hint(key: str, tier: int = 1) -> None:
    """Print hint ``key``: ``hint("token_similarity")`` the idea, ``hint("token_similarity", 2)``
    code-level guidance. Meant for a cell of its own, run by a student who asks for it."""
    label = "idea" if tier == 1 else "code-level guidance"
    body = "\n".join(textwrap.fill(part, width=100, initial_indent="  ", subsequent_indent="  ",
                                   break_long_words=False, break_on_hyphens=False)
                     for part in hint_text(key, tier).split("\n"))
    print(f"hint ({key}, tier {tier}: {label}):\n{body}")


def _hint(hint: Optional[str]) -> str:
    """The hint line of a failure message: tier 1 only, plus how to ask for tier 2."""
    if not hint:
        return ""
    if hint not in HINTS:
        return f"\n  hint: {hint}"
    text = "\n" + textwrap.fill(HINTS[hint].idea, width=100, initial_indent="  hint: ",
                                subsequent_indent="        ")
    if HINTS[hint].code:
        text += f"\n  (still stuck? run hint({hint!r}, 2) for code-level guidance)"
    return text


def try_check(check: Callable[[], Any], success: str = "correct!") -> bool:
    """Run ``check`` (a function that calls a check); print its verdict instead of raising.

    Prints "not yet: <what differs>" plus the tier-1 hint and returns False when the check
    fails; prints "✓ <success>" and returns True when it passes. Other errors propagate.
    """
    try:
        check()
    except CheckFailed as err:
        print(f"not yet: {err}")
        return False
    print(f"\u2713 {success}")
    return True


def _as_tensor(value: Any, name: str, hint: Optional[str] = None) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if value is None or value is ...:
        raise CheckFailed(f"{name}: no answer yet (got {value!r}); fill in the code above and run it again."
                          + _hint(hint))
    try:
        return torch.as_tensor(value)
    except Exception as err:
        raise CheckFailed(f"{name}: expected a tensor, got {type(value).__name__}" + _hint(hint)) from err


def check_shape(actual: Any, expected_shape: Sequence[int], name: str = "answer",
                hint: Optional[str] = None) -> bool:
    """The answer is a tensor of exactly ``expected_shape``."""
    tensor = _as_tensor(actual, name, hint)
    if tuple(tensor.shape) != tuple(expected_shape):
        raise CheckFailed(
            f"{name}: expected shape {tuple(expected_shape)}, got {tuple(tensor.shape)}" + _hint(hint))
    return True


def check_close(actual: Any, expected: Tensor, name: str = "answer", hint: Optional[str] = None,
                rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Same shape and values within tolerance; on failure report the largest difference."""
    tensor = _as_tensor(actual, name, hint)
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


def check_equal(actual: Any, expected: Any, name: str = "answer", hint: Optional[str] = None,
                reveal: bool = True) -> bool:
    """Exact equality for counts, names and other plain values.

    ``reveal=False`` is for exercises whose answer *is* ``expected`` (a count to compute):
    the message then says only whether the answer is too high or too low, never the value.
    """
    if actual is None or actual is ...:
        raise CheckFailed(f"{name}: no answer yet (got {actual!r})" + _hint(hint))
    if actual != expected:
        numbers = (isinstance(actual, (int, float)) and isinstance(expected, (int, float))
                   and not isinstance(actual, bool) and not isinstance(expected, bool))
        if not reveal:
            direction = (" (too high)" if actual > expected else " (too low)") if numbers else ""
            raise CheckFailed(f"{name}: {actual!r} is not it{direction}" + _hint(hint))
        detail = f" (off by {actual - expected:+,})" if numbers else ""
        raise CheckFailed(f"{name}: expected {expected!r}, got {actual!r}{detail}" + _hint(hint))
    return True


def _call(student: Callable, args: tuple, name: str, hint: Optional[str]) -> Any:
    """``student(*args)``; its errors (``NotImplementedError`` included) become CheckFailed."""
    try:
        return student(*args)
    except NotImplementedError:
        raise CheckFailed(f"{name}: not implemented yet" + _hint(hint)) from None
    except Exception as err:
        shapes = ", ".join(str(tuple(a.shape)) if isinstance(a, Tensor) else type(a).__name__ for a in args)
        raise CheckFailed(f"{name} raised {type(err).__name__}: {err} (inputs {shapes})" + _hint(hint)) from err


def check_function(student: Callable, reference: Callable, example_args: Sequence[tuple],
                   name: Optional[str] = None, hint: Optional[str] = None, **tolerances) -> bool:
    """Call ``student`` and ``reference`` on each tuple of arguments and compare the outputs.

    ``student`` is the student's function (or a solution, checked the same way). Its errors,
    ``NotImplementedError`` included, become a :class:`CheckFailed` that names the inputs'
    shapes; the reference's output is never printed whole.
    """
    name = name or getattr(student, "__name__", "function")
    for number, args in enumerate(example_args):
        got = _call(student, args, name, hint)
        check_close(got, reference(*args), name=f"{name} (example {number + 1})", hint=hint, **tolerances)
    return True


def check_cases(student: Callable, cases: Sequence[tuple[tuple, Any]], name: Optional[str] = None,
                hint: Optional[str] = None, **tolerances) -> bool:
    """Call ``student(*args)`` for each ``(args, expected)`` and compare with the known answer.

    For exercises whose reference would be the solution itself if written out in the
    notebook: the expected values are numbers worked out by hand (or printed by the
    library), so the check cell shows no code that answers the exercise. Errors of the
    student's function, ``NotImplementedError`` included, become :class:`CheckFailed`.
    """
    name = name or getattr(student, "__name__", "function")
    for number, (args, expected) in enumerate(cases):
        got = _call(student, args, name, hint)
        label = f"{name} (case {number + 1})" if len(cases) > 1 else name
        check_close(got, torch.as_tensor(expected, dtype=torch.float64), name=label, hint=hint, **tolerances)
    return True


# ---------------------------------------------------------------- experiment exercises
#: how close two runs' values may be and still count as "no clear difference"
EXPERIMENT_TOLERANCE = {"final_loss": 0.05, "target_miou": 1.0, "source_miou": 1.0,
                        "delta_ratio": 0.1, "scale": 0.1}
NO_CLEAR_DIFFERENCE = "no clear difference"


def check_experiment(runs: Any, largest: Any, variants: Optional[dict] = None,
                     min_steps: int = 20) -> bool:
    """An experiment exercise: were the runs made, and does the conclusion agree with them?

    Args:
        runs: ``{label: record}``, each record returned by
            :func:`reinlite.course.experiments.quick_run` (its signature is recomputed, so a
            record typed by hand or edited afterwards does not pass).
        largest: the student's conclusion, ``{metric: label}``: for each metric (a key of
            :data:`reinlite.course.experiments.METRICS`: final_loss, target_miou, source_miou,
            delta_ratio, scale) the label of the run with the largest value, or
            ``"no clear difference"``. When the two largest values are within
            :data:`EXPERIMENT_TOLERANCE` (absolute for mIoU in points and for the scale,
            relative for the loss and the delta ratio), both that label and "no clear
            difference" are accepted.
        variants: ``{label: {Rein option: value}}`` (``"sink": False`` included) that each run
            must have been made with.
        min_steps: the least number of training steps a run must have.
    """
    from reinlite.course.experiments import METRICS, metric, run_signature

    if not isinstance(runs, dict) or len(runs) < 2:
        raise CheckFailed(f"runs: expected a dict of at least two quick_run records, got {type(runs).__name__}"
                          + ("" if not isinstance(runs, dict) else f" with {len(runs)} entr{'y' if len(runs) == 1 else 'ies'}"))
    for label, record in runs.items():
        if record is None or record is ...:
            raise CheckFailed(f"runs[{label!r}]: no run yet; run quick_run(...) for it")
        if not isinstance(record, dict) or "signature" not in record:
            raise CheckFailed(f"runs[{label!r}]: expected the dict returned by quick_run, got {type(record).__name__}")
        if run_signature(record) != record["signature"]:
            raise CheckFailed(f"runs[{label!r}]: its numbers do not match its signature: use quick_run's record "
                              "as it is returned, without editing it")
        if int(record.get("steps", 0)) < min_steps:
            raise CheckFailed(f"runs[{label!r}]: {record.get('steps')} training steps; train at least {min_steps} "
                              "so the difference is more than the first steps' noise")
        for option, value in (variants or {}).get(label, {}).items():
            made = (record.get("sink", True) if option == "sink"
                    else record.get("rein", {}).get(option, record.get("options", {}).get(option, "(default)")))
            if made != value:
                raise CheckFailed(f"runs[{label!r}]: expected a run with {option}={value!r}, this one has {made!r}")
    if variants:
        missing = sorted(set(variants) - set(runs))
        if missing:
            raise CheckFailed(f"runs: no run for {missing}; the exercise asks for {sorted(variants)}")
    seeds = {int(r.get("seed", 0)) for r in runs.values()}
    if len(seeds) > 1:
        raise CheckFailed(f"runs: made with different seeds {sorted(seeds)}; change only the Rein choice")
    if not isinstance(largest, dict) or not largest:
        raise CheckFailed("largest: expected your conclusion as a dict {metric: label of the run with the largest value}")
    for name, claim in largest.items():
        if name not in METRICS:
            raise CheckFailed(f"largest: unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if claim is None or claim is ...:
            raise CheckFailed(f"largest[{name!r}]: no answer yet; name a run ({', '.join(map(repr, runs))}) "
                              f"or {NO_CLEAR_DIFFERENCE!r}")
        if claim != NO_CLEAR_DIFFERENCE and claim not in runs:
            raise CheckFailed(f"largest[{name!r}] = {claim!r}: not one of your runs ({', '.join(map(repr, runs))}) "
                              f"nor {NO_CLEAR_DIFFERENCE!r}")
        values = {label: metric(record, name) for label, record in runs.items()}
        order = sorted(values, key=lambda k: values[k], reverse=True)
        top, second = values[order[0]], values[order[1]]
        tol = EXPERIMENT_TOLERANCE[name]
        if name in ("final_loss", "delta_ratio"):
            tol = tol * max(abs(top), 1e-12)
        accepted = {order[0]} | ({NO_CLEAR_DIFFERENCE} | {k for k in order if top - values[k] <= tol}
                                 if top - second <= tol else set())
        if claim not in accepted:
            shown = ", ".join(f"{k}: {values[k]:.4g}" for k in order)
            raise CheckFailed(f"largest[{name!r}] = {claim!r} does not agree with your runs ({METRICS[name]}: "
                              f"{shown}); look at the numbers again")
    return True
