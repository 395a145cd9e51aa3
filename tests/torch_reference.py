"""Eager PyTorch reference of GLASS (GRIFFIN-style slicing), used by the tests and the evaluation.

Independent of the ONNX graphs: the statistic comes from forward hooks, the selection from torch sorting, and
sparse decoding from FFN weights sliced to the kept neurons.
"""

from __future__ import annotations

import contextlib

import numpy as np

from glass_onnx.passes.glass_ops import PL_GAMMA_A, PL_GAMMA_B, PL_ITERATIONS
from glass_onnx.compiler.priors import down_proj_modules


def local_stats(model, input_ids, attention_mask=None) -> np.ndarray:
    """[batch, layers, I]: sum over the prompt's real tokens of z_t^2 / ||z_t||^2 (GRIFFIN's s, squared)."""
    import torch

    captured = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
             for m in down_proj_modules(model)]
    ids = torch.as_tensor(input_ids)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    stats = []
    for z in captured:
        sq = z * z
        row = sq.sum(-1, keepdim=True).clamp_min(1e-30)
        stats.append((sq / row * mask.unsqueeze(-1).to(sq.dtype)).sum(1))
    return torch.stack(stats, dim=1).numpy()


def _local_order(stats):
    import torch

    # descending, ties to the lower index (stable sort of the negated values)
    return torch.sort(-torch.as_tensor(stats), stable=True).indices


def select_rank(stats: np.ndarray, prior_rank: np.ndarray, lam: float, k: int) -> np.ndarray:
    """Weighted rank fusion for one layer: [I] stats, [I] prior ranks -> k ascending neuron ids."""
    import torch

    order = _local_order(stats)
    rank_local = torch.empty(len(order), dtype=torch.float32)
    rank_local[order] = torch.arange(len(order), dtype=torch.float32)
    lam_t = torch.tensor(lam, dtype=torch.float32)
    fused = lam_t * rank_local + (1 - lam_t) * torch.as_tensor(prior_rank, dtype=torch.float32)
    picked = torch.sort(fused[order], stable=True).indices[:k]  # in local order, so ties go to the lower r_L
    return np.sort(order[picked].numpy())


def select_plackett_luce(stats: np.ndarray, prior_rank: np.ndarray, lam: float, k: int) -> np.ndarray:
    """Plackett-Luce MAP worths (Hunter's MM, float64) of the two rankings weighted lam and 1 - lam."""
    import torch

    n = len(stats)
    lam = float(np.float32(lam))
    order_local = _local_order(stats)
    order_prior = torch.sort(torch.as_tensor(prior_rank), stable=True).indices
    rankings = []
    for order, weight in ((order_local, lam), (order_prior, 1.0 - lam)):
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n)
        rankings.append((order, rank, weight))
    stage_is_choice = (torch.arange(n) < n - 1).double()
    wins = sum(w * (rank < n - 1).double() for _, rank, w in rankings)
    worth = torch.ones(n, dtype=torch.float64)
    for _ in range(PL_ITERATIONS):
        denominator = torch.full((n,), PL_GAMMA_B, dtype=torch.float64)
        for order, rank, w in rankings:
            tail = worth[order].flip(0).cumsum(0).flip(0)
            denominator = denominator + w * (stage_is_choice / tail).cumsum(0)[rank]
        worth = (PL_GAMMA_A - 1.0 + wins) / denominator
    picked = torch.sort(-worth[order_local], stable=True).indices[:k]
    return np.sort(order_local[picked].numpy())


def select(stats: np.ndarray, prior_rank: np.ndarray, lam: float, k: int, fusion: str = "rank") -> np.ndarray:
    """[layers, I] stats and prior ranks -> [layers, k] kept neuron ids."""
    choose = select_rank if fusion == "rank" else select_plackett_luce
    return np.stack([choose(s, p, lam, k) for s, p in zip(stats, prior_rank)])


@contextlib.contextmanager
def sliced_ffns(model, kept: np.ndarray):
    """Within the block, each layer's FFN holds only the kept neurons (GRIFFIN-style weight slicing)."""
    import torch

    layers = model.model.layers
    saved = []
    with torch.no_grad():
        for layer, idx in zip(layers, kept):
            mlp, idx = layer.mlp, torch.as_tensor(idx)
            saved.append((mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight))
            mlp.gate_proj.weight = torch.nn.Parameter(mlp.gate_proj.weight[idx].clone(), requires_grad=False)
            mlp.up_proj.weight = torch.nn.Parameter(mlp.up_proj.weight[idx].clone(), requires_grad=False)
            mlp.down_proj.weight = torch.nn.Parameter(mlp.down_proj.weight[:, idx].clone(), requires_grad=False)
    try:
        yield model
    finally:
        for layer, (g, u, d) in zip(layers, saved):
            layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight = g, u, d


def sparse_continuation_logits(model, prompt_ids, continuation_ids, kept: np.ndarray) -> np.ndarray:
    """Dense prefill of the prompt, then the continuation teacher-forced through the sliced FFNs: [n, vocab]."""
    import torch

    prompt = torch.as_tensor([list(prompt_ids)])
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=True)
        with sliced_ffns(model, kept):
            cont = torch.as_tensor([list(continuation_ids)])
            logits = model(input_ids=cont, cache=out.cache, use_cache=True).logits
    return logits[0].numpy()
