"""The Rein layer (Wei et al., CVPR 2024, arXiv 2312.04265), built from small pure functions.

Notation (paper, Sec. 3):  L layers, m tokens, c channels, n patches, Q query channels, r rank.
Equation numbers are those of arXiv 2312.04265v1, the version whose tables the course quotes:
(1) the training objective, (2) the forward pass with a Rein after every block, (3) Delta f_i =
Rein(f_i); then, for backbone block i with patch features f_i in R^{n x c}:

    S_i       = softmax(f_i T_i^T / sqrt(c))                  (Eqs. 4-5) token similarity, over the m tokens
    dF_i      = S_i[:, 2:m] (T_i[2:m] W_T + b_T)              (Eq. 6)  first column dropped after the softmax
    Delta f_i = (dF_i + f_i) W_f + b_f                        (Eq. 7)  residual inside W_f
    f_i'      = f_i + s * Delta f_i                                    learnable scalar s, init 1e-3
    Q_i       = T_i W_Q + b_Q                                 (Eq. 8)  tokens -> query space
    Q = Concat(Q_max, Q_avg, Q_L) W + b over the L layers     (Eqs. 9-10) instance queries, [m, Q]
    one W_T, W_f, W_Q for all L layers (shared weights)       (Eq. 11)
    T_i       = A_i B_i,  A_i in R^{m x r}, B_i in R^{r x c}  (Eq. 12) low-rank tokens

(The paper counts tokens from 1, so its columns 2:m are Python's ``[1:]``.)

Each numbered idea is one function below; :class:`Rein` only composes them. The state-dict
names are the release's, so a released Rein checkpoint loads with ``strict=True``:
``learnable_tokens`` (or ``learnable_tokens_a`` / ``learnable_tokens_b``), ``scale``,
``mlp_token2feat``, ``mlp_delta_f``, ``transform``, ``merge``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reinlite.config import ReinConfig

__all__ = [
    "token_similarity",
    "drop_first_column",
    "feature_delta",
    "refine_features",
    "low_rank_tokens",
    "pool_layers",
    "instance_queries",
    "token_init_bound",
    "Rein",
]


# ----------------------------------------------------------------------------- pure functions
def token_similarity(features: Tensor, tokens: Tensor, use_softmax: bool = True) -> Tensor:
    """Eqs. 4-5 (arXiv 2312.04265v1): S = softmax(f T^T / sqrt(c)), normalised over the m tokens.

    Args:
        features: f, patch features [B, n, c] (prefix tokens already removed).
        tokens:   T, the layer's learnable tokens [m, c].
        use_softmax: the release's switch. When False, S is the raw dot product f T^T
            (neither scaled by 1/sqrt(c) nor normalised), as in the release.
    Returns:
        S: [B, n, m]; with softmax every row sums to 1.
    """
    similarity = torch.einsum("bnc,mc->bnm", features, tokens)
    if use_softmax:
        similarity = F.softmax(similarity * features.shape[-1] ** -0.5, dim=-1)
    return similarity


def drop_first_column(similarity: Tensor) -> Tensor:
    """Softmax without the first column, the S(:, 2:m) of Eq. 6: S[:, :, 1:].

    Token 0 takes part in the softmax normaliser but its column is removed *after* it, so a
    patch that matches nothing can put its mass on token 0 and receive (almost) no update.

    Args:
        similarity: S [B, n, m] (already normalised over m).
    Returns:
        [B, n, m - 1]; rows sum to 1 - S[:, :, 0].
    """
    return similarity[..., 1:]


def feature_delta(
    features: Tensor,
    tokens: Tensor,
    mlp_token2feat: nn.Module,
    mlp_delta_f: nn.Module,
    use_softmax: bool = True,
) -> Tensor:
    """Eqs. 5-7: Delta f = (S[:, 1:] (T[1:] W_T + b_T) + f) W_f + b_f.

    Args:
        features: f [B, n, c].
        tokens: T [m, c] for this layer.
        mlp_token2feat: the shared Linear(c, c) W_T, b_T (token -> feature).
        mlp_delta_f: the shared Linear(c, c) W_f, b_f (delta projection).
    Returns:
        Delta f [B, n, c] (not yet multiplied by the scale s).
    """
    similarity = drop_first_column(token_similarity(features, tokens, use_softmax))  # [B, n, m-1]
    token_features = mlp_token2feat(tokens[1:])                                       # [m-1, c]
    delta = torch.einsum("bnm,mc->bnc", similarity, token_features)                   # [B, n, c]
    return mlp_delta_f(delta + features)


def refine_features(features: Tensor, delta: Tensor, scale: Tensor | float) -> Tensor:
    """f' = f + s * Delta f.  features, delta: [B, n, c]; scale: scalar s."""
    return features + delta * scale


def low_rank_tokens(tokens_a: Tensor, tokens_b: Tensor) -> Tensor:
    """Eq. 12: T = A B.

    Args:
        tokens_a: A [m, r] (or [L, m, r] for all layers).
        tokens_b: B [r, c] (or [L, r, c]).
    Returns:
        T [m, c] (or [L, m, c]).
    """
    return tokens_a @ tokens_b


def pool_layers(layer_values: Tensor) -> Tensor:
    """The pooling of Eqs. 9-10: over the layer axis, interleaved per channel (max, mean, last).

    The paper writes Concat([Q_max, Q_avg, Q_N]) in three blocks of Q channels; the release
    (and this function) interleaves the three values per channel. The two orders give the same
    layer up to a permutation of merge's input weights, but a released checkpoint's merge
    weights only fit the interleaved order.

    Args:
        layer_values: X [L, m, Q].
    Returns:
        [m, 3Q] where token j's row is [max_0, mean_0, last_0, max_1, mean_1, last_1, ...].
    """
    pooled = torch.stack(
        [layer_values.amax(dim=0), layer_values.mean(dim=0), layer_values[-1]], dim=-1
    )  # [m, Q, 3]
    return pooled.flatten(-2)


def instance_queries(all_tokens: Tensor, transform: nn.Module, merge: nn.Module) -> Tensor:
    """Eqs. 8-10: queries = merge(pool_layers(transform(T))); transform is W_Q, b_Q.

    Args:
        all_tokens: T for every layer [L, m, c] (token 0 included).
        transform: Linear(c, Q).
        merge: Linear(3Q, Q).
    Returns:
        queries [m, Q]; independent of the image.
    """
    return merge(pool_layers(transform(all_tokens)))


def token_init_bound(patch_size: int, embed_dim: int, rank: Optional[int] = None) -> float:
    """The release's uniform init bound v for tokens.

    Full rank: v = sqrt(6 / (3 p^2 + c)); low rank (for A and B): v = sqrt(6 / (3 p^2 + sqrt(c r))).
    """
    width = embed_dim if rank is None else math.sqrt(embed_dim * rank)
    return math.sqrt(6.0 / (3 * patch_size * patch_size + width))


# ----------------------------------------------------------------------------- the module
class Rein(nn.Module):
    """Rein: refine the features of every block of a frozen backbone with learnable tokens.

    Args:
        num_layers: L, number of backbone blocks (a Rein after each).
        embed_dim: c, the backbone's channel count.
        num_tokens: m (100 in the paper).
        rank: None for full-rank tokens [L, m, c]; r for low-rank A [L, m, r] @ B [L, r, c].
        query_dim: Q, channels of the instance queries (256).
        patch_size: p, used only for the release's init bound.
        scale_init: initial value of the learnable scalar s (1e-3).
        use_softmax: normalise the similarity with a softmax (Eq. 5).
        link_to_queries: build instance queries from the tokens (adds transform, merge).
        zero_init_delta: no learnable s (fixed 1.0) and W_f, b_f zero-initialised, so the
            layer starts as the identity.
        shared_mlps: False drops both MLPs (W_T, W_f become the identity), leaving the
            "tokens only" ablation Delta f = S[:, 1:] T[1:] + f. Not the release's Rein; used
            by the pieces ablation (data_scripts/sweep.py).

    The keyword defaults are :class:`reinlite.config.ReinConfig`'s (their one home);
    ``Rein.from_config(num_layers, embed_dim, cfg)`` builds one from a config.

    Trainable parameters for DINOv2-L (L=24, c=1024, m=100, Q=256): 2,990,081 with r=16 and
    5,016,065 with full-rank tokens.
    """

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        num_tokens: int = ReinConfig.num_tokens,
        rank: Optional[int] = ReinConfig.rank,
        query_dim: int = ReinConfig.query_dim,
        patch_size: int = ReinConfig.patch_size,
        scale_init: float = ReinConfig.scale_init,
        use_softmax: bool = ReinConfig.use_softmax,
        link_to_queries: bool = ReinConfig.link_to_queries,
        zero_init_delta: bool = ReinConfig.zero_init_delta,
        shared_mlps: bool = ReinConfig.shared_mlps,
    ) -> None:
        super().__init__()
        if num_tokens < 2:
            raise ValueError(
                f"Rein needs num_tokens >= 2 (token 0 is the 'do nothing' sink), got {num_tokens}"
            )
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be None (full rank) or >= 1, got {rank}")
        if zero_init_delta and not shared_mlps:
            raise ValueError("zero_init_delta needs the shared MLPs (it zero-initialises W_f)")
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.num_tokens = num_tokens
        self.rank = rank
        self.query_dim = query_dim
        self.patch_size = patch_size
        self.use_softmax = use_softmax
        self.link_to_queries = link_to_queries
        self.zero_init_delta = zero_init_delta
        self.shared_mlps = shared_mlps

        bound = token_init_bound(patch_size, embed_dim, rank)
        if rank is None:
            self.learnable_tokens = nn.Parameter(torch.empty(num_layers, num_tokens, embed_dim))
            nn.init.uniform_(self.learnable_tokens, -bound, bound)
        else:
            self.learnable_tokens_a = nn.Parameter(torch.empty(num_layers, num_tokens, rank))
            self.learnable_tokens_b = nn.Parameter(torch.empty(num_layers, rank, embed_dim))
            nn.init.uniform_(self.learnable_tokens_a, -bound, bound)
            nn.init.uniform_(self.learnable_tokens_b, -bound, bound)

        if shared_mlps:
            self.mlp_token2feat = nn.Linear(embed_dim, embed_dim)
            self.mlp_delta_f = nn.Linear(embed_dim, embed_dim)
        else:
            self.mlp_token2feat = nn.Identity()
            self.mlp_delta_f = nn.Identity()
        if zero_init_delta:
            self.scale = 1.0  # a plain float: not a parameter, not in the state dict
            nn.init.zeros_(self.mlp_delta_f.weight)
            nn.init.zeros_(self.mlp_delta_f.bias)
        else:
            self.scale = nn.Parameter(torch.tensor(float(scale_init)))

        if link_to_queries:
            self.transform = nn.Linear(embed_dim, query_dim)
            self.merge = nn.Linear(3 * query_dim, query_dim)

    @classmethod
    def from_config(cls, num_layers: int, embed_dim: int, cfg: ReinConfig,
                    patch_size: int = ReinConfig.patch_size) -> "Rein":
        """A Rein for a backbone of ``num_layers`` blocks of width ``embed_dim`` (patch size
        ``patch_size``, for the init bound) with the options of ``cfg`` (``model.rein``)."""
        return cls(num_layers, embed_dim, patch_size=patch_size, **dataclasses.asdict(cfg))

    def tokens(self, layer: Optional[int] = None) -> Tensor:
        """T for one layer [m, c], or for all layers [L, m, c] when layer is None."""
        if self.rank is None:
            return self.learnable_tokens if layer is None else self.learnable_tokens[layer]
        if layer is None:
            return low_rank_tokens(self.learnable_tokens_a, self.learnable_tokens_b)
        return low_rank_tokens(self.learnable_tokens_a[layer], self.learnable_tokens_b[layer])

    def delta(self, features: Tensor, layer: int) -> Tensor:
        """Delta f [B, n, c] for patch features [B, n, c] at block ``layer`` (before the scale)."""
        return feature_delta(
            features, self.tokens(layer), self.mlp_token2feat, self.mlp_delta_f, self.use_softmax
        )

    def forward(self, x: Tensor, layer: int, num_prefix_tokens: int = 1) -> Tensor:
        """Refine block ``layer``'s output.

        Args:
            x: [B, N, c], batch first; the first ``num_prefix_tokens`` rows (cls, registers)
               are passed through untouched, the other n = N - prefix rows are the patches.
            layer: block index in [0, L).
        Returns:
            [B, N, c]: prefix rows unchanged, patches f + s * Delta f.
        """
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} is out of range for a Rein of {self.num_layers} layers")
        if x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"Rein expects features with {self.embed_dim} channels, got shape {tuple(x.shape)}"
            )
        prefix, features = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
        refined = refine_features(features, self.delta(features, layer), self.scale)
        return torch.cat([prefix, refined], dim=1) if num_prefix_tokens else refined

    def queries(self) -> Optional[Tensor]:
        """Instance queries [m, Q] (Eqs. 8-10), or None when ``link_to_queries=False``."""
        if not self.link_to_queries:
            return None
        return instance_queries(self.tokens(), self.transform, self.merge)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, embed_dim={self.embed_dim}, num_tokens={self.num_tokens}, "
            f"rank={self.rank}, query_dim={self.query_dim}, use_softmax={self.use_softmax}, "
            f"link_to_queries={self.link_to_queries}, zero_init_delta={self.zero_init_delta}"
            + ("" if self.shared_mlps else ", shared_mlps=False")
        )
