"""Analysis of recorded attention: rollout, gradient-weighted rollout, attention flow, per-head
entropy, mean attention distance and top-k attended positions.

References:
  * attention rollout and attention flow -- Abnar & Zuidema 2020, "Quantifying Attention Flow in
    Transformers": A_hat = 0.5 * A + 0.5 * I per layer (the residual), row-normalised; rollout is
    the product A_hat_n ... A_hat_1; flow is the max-flow from an output position to an input
    position in the layered graph whose edge capacities are the A_hat entries.
  * gradient-weighted rollout -- Chefer, Gur & Wolf 2021, "Generic Attention-model
    Explainability" (rule 5 of the self-attention case): A_bar = E_h[(grad_A * A)^+],
    R = I, R <- R + A_bar R for every layer.
  * mean attention distance -- Dosovitskiy et al. 2021 (ViT, fig. 7): sum_j a_ij * d(i, j).

Inputs are per-layer weights (B, H, L, S) -- a list, a (layers, B, H, L, S) tensor or an
``AttentionMaps`` of self-attention layers -- the first layer first. Per-layer tensors without a
batch dim (H, L, S) are accepted and give results without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "attention_rollout",
    "gradient_rollout",
    "attention_flow",
    "head_entropy",
    "mean_attention_distance",
    "top_k_attended",
]

Layers = Sequence[Tensor] | Tensor | Mapping


def _as_layers(attentions: Layers, arg: str = "attentions") -> tuple[Tensor, bool]:
    """(layers, B, H, L, L) float tensor and whether a batch dim was added."""
    if isinstance(attentions, Mapping):
        attentions = [attentions[n] for n in attentions]
    if isinstance(attentions, Tensor):
        attentions = list(attentions)
    if not attentions:
        raise ValueError(f"{arg} is empty")
    for a in attentions:
        if not isinstance(a, Tensor) or a.dim() not in (3, 4):
            raise ValueError(f"{arg} must hold (B, H, L, L) or (H, L, L) tensors")
    squeeze = attentions[0].dim() == 3
    t = torch.stack([a[None] if a.dim() == 3 else a for a in attentions]).float()
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(
            f"{arg} must be square self-attention maps, got L={t.shape[-2]}, S={t.shape[-1]}"
        )
    return t, squeeze


def _fuse_heads(t: Tensor, head_indices: Sequence[int] | None, head_fusion: str) -> Tensor:
    """(layers, B, H, L, L) -> (layers, B, L, L), over the heads ``head_indices`` (or all)."""
    if head_indices is not None:
        t = t[:, :, list(head_indices)]
    if head_fusion == "mean":
        return t.mean(2)
    if head_fusion == "max":
        return t.amax(2)
    if head_fusion == "min":
        return t.amin(2)
    raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")


def _with_residual(a: Tensor, residual: float) -> Tensor:
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    a = residual * eye + (1.0 - residual) * a
    return a / a.sum(-1, keepdim=True).clamp_min(1e-12)


def attention_rollout(
    attentions: Layers,
    *,
    head_indices: Sequence[int] | None = None,
    head_fusion: str = "mean",
    residual: float = 0.5,
    start_layer: int = 0,
) -> Tensor:
    """Attention rollout: R = A_hat_n @ ... @ A_hat_start, A_hat = residual*I + (1-residual)*A
    row-normalised, heads fused first (the heads ``head_indices``, a list of indices, or all).
    R[b, i, j]: how much output position i draws on input position j. Returns (B, L, L) (or
    (L, L) for unbatched input)."""
    t, squeeze = _as_layers(attentions)
    a = _with_residual(_fuse_heads(t, head_indices, head_fusion), residual)
    r = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a[0]).clone()
    for layer in a[start_layer:]:
        r = layer @ r  # later layers multiply on the left
    return r[0] if squeeze else r


def gradient_rollout(attentions: Layers, gradients: Layers) -> Tensor:
    """Class-specific relevance of Chefer et al. 2021: R = I; R <- R + E_h[(grad * A)^+] @ R.

    ``gradients`` are d(score)/d(weights) for the class score of interest, e.g. from
    ``record_attention(..., retain_grad=True)`` then ``maps.grad(name)``. Returns (B, L, L);
    row i is the relevance of each input position for output position i (e.g. the class token).
    """
    a, squeeze = _as_layers(attentions)
    g, _ = _as_layers(gradients, "gradients")
    if a.shape != g.shape:
        raise ValueError(f"attentions {tuple(a.shape)} and gradients {tuple(g.shape)} differ")
    cam = (g * a).clamp_min(0).mean(2)  # (layers, B, L, L)
    r = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(cam[0]).clone()
    for layer in cam:
        r = r + layer @ r
    return r[0] if squeeze else r


def _max_flow(cap: np.ndarray, s: int, t: int, eps: float = 1e-12) -> float:
    """Edmonds-Karp (shortest augmenting paths, Edmonds & Karp 1972) on a dense capacity
    matrix; BFS levels are vectorised over numpy rows."""
    res = cap.copy()
    n = res.shape[0]
    flow = 0.0
    while True:
        parent = np.full(n, -1)
        parent[s] = s
        frontier = np.array([s])
        while frontier.size and parent[t] < 0:
            reach = res[frontier] > eps  # (|frontier|, n)
            new = reach.any(0) & (parent < 0)
            idx = np.nonzero(new)[0]
            if not idx.size:
                break
            parent[idx] = frontier[reach[:, idx].argmax(0)]
            frontier = idx
        if parent[t] < 0:
            return flow
        path, v = [], t
        while v != s:
            path.append((parent[v], v))
            v = parent[v]
        f = min(res[u, w] for u, w in path)
        for u, w in path:
            res[u, w] -= f
            res[w, u] += f
        flow += f


def attention_flow(
    attentions: Layers,
    *,
    head_indices: Sequence[int] | None = None,
    head_fusion: str = "mean",
    residual: float = 0.5,
    method: str = "maxflow",
    max_nodes: int = 1024,
) -> Tensor:
    """Attention flow (Abnar & Zuidema 2020): F[b, i, j] = value of the maximum flow from output
    position i (after the last layer) to input position j, with capacities A_hat_l[a, b] on the
    edge from position a of layer l to position b of layer l - 1.

    ``method='maxflow'`` is exact (Edmonds-Karp, one run per (i, j): meant for small L, e.g.
    L <= 32 and a few layers; the graph may have at most ``max_nodes`` nodes).
    ``method='bottleneck'`` is the fast widest-path approximation: the largest over paths of the
    smallest capacity on the path (a max-min matrix product per layer; a lower bound of the flow).
    Heads are fused first, as in ``attention_rollout``. Returns (B, L, L) (or (L, L) for
    unbatched input).
    """
    t, squeeze = _as_layers(attentions)
    a = _with_residual(_fuse_heads(t, head_indices, head_fusion), residual).double()  # (n,B,L,L)
    n, B, L, _ = a.shape
    if method == "bottleneck":
        w = a[-1]  # (B, L, L): from the top positions into layer n - 1
        for layer in reversed(a[:-1]):
            w = torch.minimum(w[..., :, None], layer[:, None]).amax(2)  # (B, L, L, L) -> (B,L,L)
        out = w.float()
    elif method == "maxflow":
        V = (n + 1) * L
        if V > max_nodes:
            raise ValueError(
                f"attention_flow graph has {V} nodes > max_nodes={max_nodes}; use "
                "method='bottleneck' or raise max_nodes"
            )
        out = torch.zeros(B, L, L)
        for b in range(B):
            cap = np.zeros((V, V))
            for l in range(n):  # node (l, p) = l * L + p; layer l + 1 feeds from layer l
                hi, lo = (l + 1) * L, l * L
                cap[hi : hi + L, lo : lo + L] = a[l, b].numpy()
            for i in range(L):
                for j in range(L):
                    out[b, i, j] = _max_flow(cap, n * L + i, j)
    else:
        raise ValueError(f"method must be 'maxflow' or 'bottleneck', got {method!r}")
    return out[0] if squeeze else out


def _check_weights(weights: Tensor) -> None:
    if not isinstance(weights, Tensor) or weights.dim() < 3:
        raise ValueError("weights must be a (..., H, L, S) tensor")


def head_entropy(weights: Tensor) -> Tensor:
    """Mean over query rows of the entropy -sum_j p_ij log p_ij (nats) per head: (..., H).
    Rows with no mass (fully masked queries) are left out of the mean."""
    _check_weights(weights)
    p = weights.float()
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (..., H, L); 0 log 0 = 0
    live = (p.sum(-1) > 0).float()
    return (ent * live).sum(-1) / live.sum(-1).clamp_min(1.0)


def mean_attention_distance(
    weights: Tensor,
    q_coords: Tensor | None = None,
    k_coords: Tensor | None = None,
) -> Tensor:
    """Mean attention distance per head, (..., H): mean over query rows of sum_j p_ij d(i, j).

    Without coordinates d = |pos_i - j| with queries aligned bottom-right (query i at position
    i + S - L, as when decoding with a cache). With ``q_coords`` (L, C) and ``k_coords`` (S, C)
    (default: ``q_coords``) d is the Euclidean distance, e.g. patch centres in pixels.
    """
    _check_weights(weights)
    L, S = weights.shape[-2:]
    dev = weights.device
    if q_coords is None:
        qp = torch.arange(S - L, S, device=dev, dtype=torch.float32)
        d = (qp[:, None] - torch.arange(S, device=dev, dtype=torch.float32)).abs()
    else:
        k_coords = q_coords if k_coords is None else k_coords
        qc = torch.as_tensor(q_coords, dtype=torch.float32, device=dev).reshape(L, -1)
        kc = torch.as_tensor(k_coords, dtype=torch.float32, device=dev).reshape(S, -1)
        d = torch.cdist(qc, kc)  # (L, S)
    p = weights.float()
    per_row = (p * d).sum(-1)  # (..., H, L)
    live = (p.sum(-1) > 0).float()
    return (per_row * live).sum(-1) / live.sum(-1).clamp_min(1.0)


def top_k_attended(weights: Tensor, k: int, query: int | None = None) -> tuple[Tensor, Tensor]:
    """The k largest weights and their key positions per query row: (..., H, L, k) each, or for
    one ``query`` (..., H, k)."""
    _check_weights(weights)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    w = weights if query is None else weights[..., query, :]
    return w.topk(min(k, w.shape[-1]), dim=-1)
