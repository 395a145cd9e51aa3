"""Quality metrics of a sparse model against the dense one on the same teacher-forced tokens (numpy only)."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def token_metrics(dense_logits: np.ndarray, sparse_logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> dict:
    """Sums over the masked positions: NLL of the targets, KL(dense || sparse), top-1 agreement, and the count.

    dense_logits, sparse_logits: [n, vocab] predicting targets [n]; mask [n] (1 = counts).
    """
    mask = mask.astype(bool)
    p_log, q_log = log_softmax(dense_logits[mask]), log_softmax(sparse_logits[mask])
    t = targets[mask]
    nll = -q_log[np.arange(len(t)), t]
    kl = (np.exp(p_log) * (p_log - q_log)).sum(-1)
    agree = dense_logits[mask].argmax(-1) == sparse_logits[mask].argmax(-1)
    return {"nll": float(nll.sum()), "kl": float(np.clip(kl, 0, None).sum()), "top1": float(agree.sum()),
            "tokens": int(mask.sum()), "dense_nll": float(-p_log[np.arange(len(t)), t].sum())}


def summarise(totals: dict) -> dict:
    """Corpus-level figures from summed token metrics: perplexity, mean KL, top-1 agreement."""
    n = max(totals["tokens"], 1)
    out = {"ppl": float(np.exp(totals["nll"] / n)), "kl": totals["kl"] / n, "top1": totals["top1"] / n,
           "dense_ppl": float(np.exp(totals["dense_nll"] / n)), "tokens": totals["tokens"]}
    if "kl_int4" in totals:  # the same against the int4 dense model
        out.update(kl_int4=totals["kl_int4"] / n, top1_int4=totals["top1_int4"] / n)
    if "kl_after" in totals:  # after the longest warm-up (evaluate.Evaluator.run_batch)
        after = max(totals["tokens_after"], 1)
        out.update(kl_after=totals["kl_after"] / after, top1_after=totals["top1_after"] / after,
                   tokens_after=totals["tokens_after"])
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    a, b = set(a.tolist()), set(b.tolist())
    return len(a & b) / max(len(a | b), 1)


def paired_ratio_interval(a: np.ndarray, b: np.ndarray, level: float = 0.9, draws: int = 2000,
                          seed: int = 0) -> tuple[float, float]:
    """The ``level`` interval of sum(a) / sum(b) when the prompts are resampled with replacement (a paired
    bootstrap: a[i] and b[i] are two configurations' KL sums over prompt i's same tokens)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    picks = np.random.default_rng(seed).integers(0, len(a), (draws, len(a)))
    ratios = a[picks].sum(1) / np.maximum(b[picks].sum(1), 1e-30)
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
