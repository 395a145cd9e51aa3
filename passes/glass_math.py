"""GLASS in numpy: the local statistic, the rankings, their fusion and the global priors, for one FFN layer.

Z [tokens, I] is the input of the layer's down projection. The ai.glass ONNX functions (glass_ops.py) compute
exactly this inside the graphs, the compiler's torch prior (compiler/priors.py) computes the prior formulas over the
model's own samples, and the tests use this module as the oracle of both.

    local statistic   s_j = sum_t Z_tj^2 / ||Z_t||^2          GRIFFIN's statistic (squared), summed over prompt chunks
    ranking           r(j) = place of j in descending order    0 = most important; ties go to the lower index
    A-GLASS prior     g_j = mean_t |Z_tj|                      over the model's own samples
    I-GLASS prior     g_j = mean_t |Z_tj * dL/dZ_tj|           L = next-token loss
    rank fusion       keep the k smallest lam * r_local(j) + (1 - lam) * r_prior(j), ties by r_local
    Plackett-Luce     keep the k largest MAP worths of a Plackett-Luce model of the two rankings, weighted lam, 1 - lam
    blocks of b       the same on blocks of b consecutive neurons: s summed over a block, r_prior the rank of the
                      block's mean prior rank; keep k / b blocks (int4's fast layout slices whole 4-bit blocks)
    budgets           k may differ by layer (compiler/budgets.py); each layer keeps its own k of the same ranking
"""

from __future__ import annotations

import numpy as np

from glass_onnx.runtime.errors import GlassError

FUSIONS = ("rank", "plackett-luce")
# Plackett-Luce MAP (Hunter's MM). A Gamma(a, b) prior on each worth: a > 1 keeps every worth positive, so the
# estimate exists even for a neuron both rankings put last; a small b keeps the prior weak.
PL_ITERATIONS, PL_GAMMA_A, PL_GAMMA_B = 30, 1.01, 0.01


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise GlassError(f"unknown fusion '{fusion}'; choose one of: {', '.join(FUSIONS)}")
    return fusion


def local_statistic(z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """[..., tokens, I] activations and [..., tokens] mask (0 = padding) -> s [..., I]."""
    sq = np.square(z)
    weight = (1.0 if mask is None else mask[..., None]) / np.maximum(sq.sum(-1, keepdims=True), 1e-30)
    return (sq * weight).sum(-2, dtype=sq.dtype)


def ranks(values: np.ndarray) -> np.ndarray:
    """Rank of each value along the last axis: 0 for the largest, ties to the lower index (float32, as in graphs)."""
    order = np.argsort(-np.asarray(values), axis=-1, kind="stable")
    return np.argsort(order, axis=-1, kind="stable").astype(np.float32)


def activation_prior(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A-GLASS: mean |Z_tj| over the real tokens (mask 1) of [..., tokens, I] activations -> [I]."""
    weighted = np.abs(z) * mask[..., None]
    return weighted.reshape(-1, z.shape[-1]).sum(0, dtype=np.float64) / mask.sum()


def impact_prior(z: np.ndarray, grad: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """I-GLASS: mean |Z_tj * dL/dZ_tj| over the real tokens -> [I]."""
    return activation_prior(z * grad, mask)


def fused_order(stats: np.ndarray, prior_rank: np.ndarray, lam: float) -> np.ndarray:
    """Every neuron id, by ascending lam * r_local + (1 - lam) * r_prior, ties by r_local."""
    r_local, lam = ranks(stats), np.float32(lam)
    fused = lam * r_local + (np.float32(1) - lam) * np.asarray(prior_rank, np.float32)
    return np.lexsort((r_local, fused))


def fuse_rank(stats: np.ndarray, prior_rank: np.ndarray, lam: float, k: int) -> np.ndarray:
    """The k ascending neuron ids first in ``fused_order``."""
    return np.sort(fused_order(stats, prior_rank, lam)[:k])


def plackett_luce_worths(rankings: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """MAP worths [I] (float64) of a Plackett-Luce model of full rankings (ranks, 0 = first) weighted by ``weights``.

    Hunter's MM update: w_j = (a - 1 + c_j) / (b + sum_r weight_r * sum_{stages s <= r(j), s < I-1} 1 / sum_{m placed
    at s or later} w_m), where c_j is the weight of the rankings that do not put j last.
    """
    n = len(rankings[0])
    orders = [np.argsort(r, kind="stable") for r in rankings]
    places = [np.argsort(order, kind="stable") for order in orders]
    choice = np.arange(n) < n - 1  # the last stage chooses nothing
    wins = sum(w * (place < n - 1) for place, w in zip(places, weights))
    worth = np.ones(n)
    for _ in range(PL_ITERATIONS):
        seen = [np.cumsum(choice / np.cumsum(worth[order][::-1])[::-1])[place] for order, place in zip(orders, places)]
        worth = (PL_GAMMA_A - 1.0 + wins) / (PL_GAMMA_B + sum(w * s for w, s in zip(weights, seen)))
    return worth


def fuse_plackett_luce(stats: np.ndarray, prior_rank: np.ndarray, lam: float, k: int) -> np.ndarray:
    """The k ascending neuron ids with the largest Plackett-Luce worths, ties by r_local."""
    r_local, lam = ranks(stats), float(np.float32(lam))
    worth = plackett_luce_worths([r_local, np.asarray(prior_rank)], [lam, 1.0 - lam])
    return np.sort(np.lexsort((r_local, -worth))[:k])


def block_prior_rank(prior_rank: np.ndarray, block: int) -> np.ndarray:
    """[..., I] neuron ranks -> [..., I / block] ranks of blocks of consecutive neurons by their mean neuron rank."""
    means = np.asarray(prior_rank, np.float64).reshape(*prior_rank.shape[:-1], -1, block).mean(-1)
    return ranks(-means)


def layer_budgets(k, layers: int) -> list[int]:
    """k kept neurons per layer: one number for every layer, or one per layer."""
    budgets = [int(k)] * layers if np.ndim(k) == 0 else [int(x) for x in k]
    if len(budgets) != layers:
        raise GlassError(f"{len(budgets)} per-layer budgets for {layers} layers; give one k per layer")
    return budgets


def select(stats: np.ndarray, prior_rank: np.ndarray, lam: float, k, fusion: str = "rank",
           block: int = 1) -> np.ndarray | list[np.ndarray]:
    """[layers, I] statistics and prior ranks ([layers, I / block] block ranks when ``block`` > 1), k kept neurons
    per layer (one number, or one per layer) -> the kept neuron ids per layer, each row ascending: [layers, k] when
    every layer keeps as many, else a list of [k_l]."""
    fuse = dict(zip(FUSIONS, (fuse_rank, fuse_plackett_luce)))[check_fusion(fusion)]
    stats = np.asarray(stats).reshape(len(stats), -1, block).sum(-1) if block > 1 else stats
    kept = [fuse(s, p, lam, k_l // block) for s, p, k_l in zip(stats, prior_rank, layer_budgets(k, len(stats)))]
    if block > 1:
        kept = [(ids[:, None] * block + np.arange(block)).reshape(-1) for ids in kept]
    return np.stack(kept) if len({len(ids) for ids in kept}) == 1 else kept
