"""The calibrated budget's measurements (``budgets`` decides from them), on the model's own samples in torch.

The first PROFILE_SAMPLES full-length samples (half of them, if fewer than twice that) give each layer's profile;
the next VALIDATION_SAMPLES score the candidate allocations with every layer sparsified at once. In both, a
sample's first PROMPT_TOKENS tokens choose the kept neurons (A-GLASS at the model's lam) and the next SCORED_TOKENS
are scored against the dense model, the sparse layers reading only their kept neurons there, as decode does.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from glass_onnx.compiler.budgets import OWL_M, STEP, LayerProfile, candidate_budgets, choose_budgets
from glass_onnx.runtime.errors import GlassError

log = logging.getLogger(__name__)

PROFILE_SAMPLES, VALIDATION_SAMPLES, PROMPT_TOKENS, SCORED_TOKENS = 8, 16, 64, 64
# samples per forward pass: a chunk's scored log-probabilities are [CHUNK, SCORED_TOKENS, vocab] float64 (78 MB a
# sample for Qwen2's 152k vocabulary), and a KL holds about four such tensors at once
CHUNK = 2
RULE = 2  # bump when the rule changes: cached choices are then measured again


class SparsifiedModel:
    """A model whose FFN down projections record their input Z and, for the layers given a keep mask, zero the
    dropped neurons at the scored positions."""

    def __init__(self, model):
        from glass_onnx.compiler.priors import down_proj_modules

        self.model, self.modules = model, down_proj_modules(model)
        self.captured: list = [None] * len(self.modules)
        self.keep: dict = {}

    def __enter__(self):
        self.hooks = [m.register_forward_pre_hook(lambda _m, args, i=i: self._hook(args, i))
                      for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()

    def _hook(self, args, layer):
        z = args[0]
        self.captured[layer] = z.detach()
        if layer in self.keep:
            z = z.clone()
            z[:, PROMPT_TOKENS:] *= self.keep[layer][:, None, :]
            return (z,)
        return None

    def _scored_logits(self, x):
        return self.model(input_ids=x, logits_to_keep=x.shape[1] - PROMPT_TOKENS).logits.double()

    def _chunks(self, x) -> list[slice]:
        return [slice(b, b + CHUNK) for b in range(0, len(x), CHUNK)]

    def dense(self, x):
        """(log-probabilities at the scored positions, one tensor per chunk of samples; each layer's local statistic
        [samples, I] over the prompt)."""
        import torch

        from glass_onnx.passes.glass_math import local_statistic

        self.keep = {}
        logp, stats = [], []
        for rows in self._chunks(x):
            logp.append(torch.log_softmax(self._scored_logits(x[rows]), -1))
            stats.append([local_statistic(z[:, :PROMPT_TOKENS].double().numpy()) for z in self.captured])
        return logp, [np.concatenate(layer) for layer in zip(*stats)]

    def kl(self, x, dense, keep: dict) -> float:
        """Mean KL(dense || sparse) per scored token, the layers in ``keep`` ({layer: [samples, I] 0/1}) sparse."""
        import torch

        return float(self.kl_tensor(x, dense, {layer: torch.from_numpy(mask) for layer, mask in keep.items()}))

    def kl_tensor(self, x, dense, keep: dict):
        """``kl`` as a torch scalar, ``keep`` given as tensors (differentiable in them outside no_grad)."""
        import torch

        total, tokens = 0.0, 0
        for rows, logp in zip(self._chunks(x), dense):
            self.keep = {layer: mask[rows] for layer, mask in keep.items()}
            try:
                sparse = torch.log_softmax(self._scored_logits(x[rows]), -1)
            finally:
                self.keep = {}
            total = total + (logp.exp() * (logp - sparse)).sum(-1).clamp_min(0).sum()
            tokens += sparse.shape[0] * sparse.shape[1]
        return total / tokens


def kept_masks(stats: list, prior_rank: np.ndarray, lam: float, budgets) -> dict:
    """{layer: [samples, I] 0/1}: A-GLASS's first k_l neurons of each sample, for the layers not kept whole."""
    from glass_onnx.passes.glass_math import fuse_rank

    masks = {}
    for layer, k in enumerate(budgets):
        if k < prior_rank.shape[1]:
            masks[layer] = np.zeros((len(stats[layer]), prior_rank.shape[1]), np.float32)
            for row, stat in enumerate(stats[layer]):
                masks[layer][row, fuse_rank(stat, prior_rank[layer], lam, int(k))] = 1.0
    return masks


def outlier_ratios(model, ids, mask) -> np.ndarray:
    """Per layer, OWL's outlier ratio: the share of FFN activations |Z| above OWL_M x their mean, over every real
    token of the samples (it does not depend on k, so the calibrations of several sparsities share it)."""
    import torch

    with torch.no_grad(), SparsifiedModel(model) as probe:
        above = np.zeros(len(probe.modules))
        for b in range(0, len(ids), 8):
            probe.model(input_ids=ids[b : b + 8], attention_mask=mask[b : b + 8], logits_to_keep=1)
            real = mask[b : b + 8].bool()
            for layer, z in enumerate(probe.captured):
                a = z.abs()[real]
                above[layer] += float((a > OWL_M * a.mean()).float().sum()) / a.numel()
    return above / len(range(0, len(ids), 8))


def long_samples(ids, mask):
    """The samples long enough to calibrate on, cut to PROMPT_TOKENS + SCORED_TOKENS; refused if under 2."""
    full = mask[:, : PROMPT_TOKENS + SCORED_TOKENS].all(1)
    x = ids[full][:, : PROMPT_TOKENS + SCORED_TOKENS]
    if len(x) < 2 or ids.shape[1] < PROMPT_TOKENS + SCORED_TOKENS:
        raise GlassError(f"the model's samples are too short or too few to calibrate budgets (need 2 of "
                         f"{PROMPT_TOKENS + SCORED_TOKENS} tokens without EOS); raise --prior-tokens or "
                         "--prior-samples, or compile with --budget uniform")
    return x


def calibrate(model, ids, mask, prior_rank: np.ndarray, lam: float, k: int, outlier: np.ndarray, step: int = STEP):
    """(the layer profile, the candidate allocations, their KL on the held-out samples); ``outlier``: the samples'
    ``outlier_ratios``."""
    import torch

    from glass_onnx.progress import progress

    size, layers = prior_rank.shape[1], prior_rank.shape[0]
    x = long_samples(ids, mask)
    profiled = min(PROFILE_SAMPLES, len(x) // 2)  # the rest, up to VALIDATION_SAMPLES, choose among the candidates
    profile_x, held_out = x[:profiled], x[profiled : profiled + VALIDATION_SAMPLES]
    with torch.no_grad(), SparsifiedModel(model) as probe:
        dense, stats = probe.dense(profile_x)
        sensitivity = np.zeros(layers)
        for layer in progress(range(layers), desc="calibrating layer budgets"):
            only_this_layer = [k if i == layer else size for i in range(layers)]
            sensitivity[layer] = probe.kl(profile_x, dense, kept_masks(stats, prior_rank, lam, only_this_layer))
        profile = LayerProfile(outlier, sensitivity)
        candidates = candidate_budgets(profile, k, size, step)
        del dense  # the profile's log-probabilities, before the held-out samples' take their place
        dense, stats = probe.dense(held_out)
        sample_kl = {name: probe.kl(held_out, dense, kept_masks(stats, prior_rank, lam, budgets))
                     for name, budgets in candidates.items()}
    return profile, candidates, sample_kl


def calibrated_budgets(manifest: dict, source, options, prior_rank: np.ndarray, lam: float, k: int,
                       step: int = STEP) -> tuple[list[int], dict]:
    """``budgets.choose_budgets`` over ``calibrate`` on the prior's samples for this prior, lam and uniform k (the
    measurements cached beside the prior)."""
    import hashlib

    from glass_onnx.compiler.priors import PriorSettings, compute_samples, prior_path
    from glass_onnx.compiler.sources import load_model, recorded_source

    settings = PriorSettings("activation", options.prior_samples, options.prior_tokens, 1.0, options.prior_seed,
                             options.prior_text)
    source = source or recorded_source(manifest)
    digest = hashlib.sha256(np.ascontiguousarray(prior_rank, np.float32).tobytes()).hexdigest()[:12]
    path = prior_path(source.cache_key(), settings).with_name(
        f"{source.cache_key()}-budgets-r{RULE}-{settings.key()}-{digest}-lam{lam:g}-k{k}-step{step}.json")
    if path.exists():
        log.info(f"using the cached budget calibration {path}")
        cached = json.loads(path.read_text())
        profile = LayerProfile(np.array(cached["outlier_ratio"]), np.array(cached["sensitivity"]))
        return choose_budgets(cached["candidates"], cached["sample_kl"], profile, k, prior_rank.shape[1], step)
    start = time.perf_counter()
    model, tokenizer = load_model(source)
    ids, mask = compute_samples(model, tokenizer, settings, bool(manifest["tokenizer"]["instruct"]),
                                source.cache_key())
    long_samples(ids, mask)  # refuse samples too short before measuring anything on them
    # the outlier ratios are the samples', whatever the sparsity: cached on their own for the other sparsities
    outliers = path.with_name(f"{source.cache_key()}-outliers-r{RULE}-{settings.key()}.npy")
    if outliers.exists():
        outlier = np.load(outliers)
    else:
        outlier = outlier_ratios(model, ids, mask)
        outliers.parent.mkdir(parents=True, exist_ok=True)
        np.save(outliers.with_suffix(".tmp.npy"), outlier)
        outliers.with_suffix(".tmp.npy").rename(outliers)
    profile, candidates, sample_kl = calibrate(model, ids, mask, prior_rank, lam, k, outlier, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps({
        "outlier_ratio": profile.outlier_ratio.tolist(), "sensitivity": profile.sensitivity.tolist(),
        "candidates": candidates, "sample_kl": sample_kl}))
    path.with_suffix(".tmp").rename(path)
    budgets, record = choose_budgets(candidates, sample_kl, profile, k, prior_rank.shape[1], step)
    log.info(f"budgets calibrated in {time.perf_counter() - start:.0f} s ({record['chosen']}, sample KL "
             f"{record['sample_kl']}), cached at {path}")
    return budgets, record
