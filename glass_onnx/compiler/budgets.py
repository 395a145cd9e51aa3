"""Per-layer neuron budgets: how many FFN neurons each layer keeps, the total fixed by the requested sparsity.

``uniform``: the paper's GLASS, the same k in every layer.
``calibrated``: chosen offline from the model's own samples (the global prior's), never from evaluation data:
  1. a layer whose sparsification alone costs more than PROTECT x the median layer's (KL of the next-token
     distribution on the samples' continuations, each layer A-GLASS-sparsified at the uniform k in turn) keeps
     every neuron: on SmolLM2 layer 0 alone costs 0.58 nats, the median layer 0.03;
  2. the other layers share the rest by their outlier ratio (OWL: the share of activations |Z| above M x the
     layer's mean): s_l = s - 2 lam (r_l - mean r) within s +- lam, lam falling from OWL_LAM at 50% sparsity to 0
     at 75% (where the dev split showed outlier weighting to hurt).
  Layers move in steps of STEP neurons (whole 4-bit blocks, the fp32 panels' widest width). EVAL.md has the study
  (uniform, TEAL-style sensitivity DP, OWL, layer protection) and the evidence.
An explicit list ``k_0,k_1,...``: one count per layer (whole selection blocks); the artifact's sparsity is then the
list's.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from glass_onnx.passes.glass_math import layer_budgets
from glass_onnx.runtime.errors import GlassError

log = logging.getLogger(__name__)

BUDGETS = ("uniform", "calibrated")
STEP = 32
PROTECT = 5.0  # a layer costing this many times the median layer keeps every neuron
OWL_M, OWL_LAM = 5.0, 0.3
PROFILE_SAMPLES, PROMPT_TOKENS, SCORED_TOKENS = 8, 64, 64


def explicit_budgets(spec: str, layers: int, size: int, block: int) -> list[int]:
    """One count per layer, from ``k_0,k_1,...``."""
    try:
        budgets = [int(x) for x in spec.split(",")]
    except ValueError:
        raise GlassError(f"unknown budget '{spec}'; choose one of: {', '.join(BUDGETS)}, or give one neuron count "
                         f"per layer (k_0,...,k_{layers - 1})") from None
    if len(budgets) != layers:
        raise GlassError(f"--budget lists {len(budgets)} neuron counts for {layers} layers; give one per layer")
    if bad := [b for b in budgets if b % block or not block <= b <= size]:
        raise GlassError(f"--budget counts {bad} are not whole {block}-neuron blocks between {block} and {size}")
    return budgets


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """What the calibrated budget reads of each layer, measured on the model's own samples."""

    outlier_ratio: np.ndarray  # [layers]: share of |Z| above OWL_M x the layer's mean |Z|
    sensitivity: np.ndarray  # [layers]: KL (nats/token) with only this layer A-GLASS-sparsified at the uniform k


def calibrated_budgets(profile: LayerProfile, k: int, size: int, step: int = STEP) -> tuple[list[int], dict]:
    """(k per layer, what was chosen and from what) summing to len(layers) * k, in whole ``step``s."""
    layers = len(profile.sensitivity)
    total, s = k * layers, 1.0 - k / size
    while step > 1 and total % step:  # fp32 selects neuron by neuron: a smaller power of two fits any total
        step //= 2
    protected = profile.sensitivity > PROTECT * np.median(profile.sensitivity)
    # where the others could not keep a step each, the least costly protected layers give way first
    for layer in np.argsort(profile.sensitivity, kind="stable"):
        if protected[layer] and size * protected.sum() + step * (layers - protected.sum()) > total:
            protected[layer] = False
    lam = OWL_LAM * float(np.clip((0.75 - s) / 0.25, 0.0, 1.0))
    r = profile.outlier_ratio[~protected]
    spread = np.ptp(r)
    normalised = (r - r.min()) / spread if spread > 0 else np.zeros_like(r)
    layer_sparsity = np.clip(s - 2 * lam * (normalised - normalised.mean()), s - lam, s + lam)
    target = np.full(layers, float(size))
    rest = (1.0 - layer_sparsity) * size
    target[~protected] = rest * (total - size * protected.sum()) / rest.sum()
    budgets = _round_to_steps(target, total, size, step)
    return budgets, {"kind": "calibrated", "protected_layers": np.flatnonzero(protected).tolist(),
                     "owl_lam": round(lam, 4), "owl_m": OWL_M, "protect_factor": PROTECT,
                     "sensitivity": np.round(profile.sensitivity, 5).tolist(),
                     "outlier_ratio": np.round(profile.outlier_ratio, 6).tolist()}


def _round_to_steps(target: np.ndarray, total: int, size: int, step: int) -> list[int]:
    """Real per-layer counts -> multiples of ``step`` in [step, size] summing to ``total`` (largest remainders)."""
    if total % step:
        raise GlassError(f"{total} kept neurons do not split into {step}-neuron steps; choose a sparsity that does")
    units = np.clip(target / step, 1, size // step)
    counts = np.floor(units).astype(int)
    remainder = units - counts
    need = total // step - counts.sum()
    order = np.argsort(-remainder if need > 0 else remainder, kind="stable")
    while need:
        changed = False
        for layer in order:
            if need > 0 and counts[layer] < size // step:
                counts[layer], need, changed = counts[layer] + 1, need - 1, True
            elif need < 0 and counts[layer] > 1:
                counts[layer], need, changed = counts[layer] - 1, need + 1, True
            if not need:
                break
        if not changed:
            raise GlassError(f"{total} neurons cannot be spread over {len(target)} layers in steps of {step}")
    return (counts * step).tolist()


def layer_profile(model, ids, mask, prior_rank: np.ndarray, lam: float, k: int) -> LayerProfile:
    """Outlier ratios over every real sample token, and each layer's sensitivity: the first PROMPT_TOKENS tokens of
    PROFILE_SAMPLES samples choose A-GLASS's k neurons of that layer alone, the next SCORED_TOKENS are scored against
    the dense model (the sparse layer reads only its kept neurons there, as decode does)."""
    import torch

    from glass_onnx.compiler.priors import down_proj_modules
    from glass_onnx.passes.glass_math import fuse_rank, local_statistic
    from glass_onnx.progress import progress

    modules = down_proj_modules(model)
    captured: list = [None] * len(modules)
    keep: dict = {}

    def hook(_module, args, layer):
        z = args[0]
        captured[layer] = z.detach()
        if layer in keep:  # decode positions read only the kept neurons
            z = z.clone()
            z[:, PROMPT_TOKENS:] *= keep[layer][:, None, :]
            return (z,)
        return None

    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: hook(mod, args, i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            above = np.zeros(len(modules))
            for b in range(0, ids.shape[0], 8):
                x, m = ids[b : b + 8], mask[b : b + 8]
                model(input_ids=x, attention_mask=m)
                for layer, z in enumerate(captured):
                    a = z.abs()[m.bool()]
                    above[layer] += float((a > OWL_M * a.mean()).float().sum()) / a.numel()
            outlier = above / len(range(0, ids.shape[0], 8))
            rows = mask[:, : PROMPT_TOKENS + SCORED_TOKENS].all(1)
            x = ids[rows][:PROFILE_SAMPLES, : PROMPT_TOKENS + SCORED_TOKENS]
            if len(x) == 0 or x.shape[1] < PROMPT_TOKENS + 2:
                raise GlassError(f"the model's samples are too short to calibrate budgets (need {PROMPT_TOKENS + 2} "
                                 "tokens without EOS); raise --prior-tokens")
            dense = torch.log_softmax(model(input_ids=x).logits[:, PROMPT_TOKENS:].double(), -1)
            stats = [local_statistic(z[:, :PROMPT_TOKENS].double().numpy()) for z in captured]  # [samples, I]
            sensitivity = np.zeros(len(modules))
            for layer in progress(range(len(modules)), desc="calibrating layer budgets"):
                kept = np.zeros((len(x), prior_rank.shape[1]), np.float32)
                for row, stat in enumerate(stats[layer]):
                    kept[row, fuse_rank(stat, prior_rank[layer], lam, k)] = 1.0
                keep = {layer: torch.from_numpy(kept)}
                sparse = torch.log_softmax(model(input_ids=x).logits[:, PROMPT_TOKENS:].double(), -1)
                sensitivity[layer] = float((dense.exp() * (dense - sparse)).sum(-1).clamp_min(0).mean())
                keep = {}
    finally:
        for h in hooks:
            h.remove()
    return LayerProfile(outlier, sensitivity)


def calibration_profile(manifest: dict, source, options, prior_rank: np.ndarray, lam: float, k: int):
    """The layer profile of the model of a dense export for this prior, lam and uniform k, cached beside the prior
    (its samples are the prior's)."""
    import hashlib

    from glass_onnx.compiler.priors import PriorSettings, compute_samples, prior_path
    from glass_onnx.compiler.sources import load_model, recorded_source

    settings = PriorSettings("activation", options.prior_samples, options.prior_tokens, 1.0, options.prior_seed,
                             options.prior_text)
    source = source or recorded_source(manifest)
    digest = hashlib.sha256(np.ascontiguousarray(prior_rank, np.float32).tobytes()).hexdigest()[:12]
    path = prior_path(source.cache_key(), settings).with_name(
        f"{source.cache_key()}-layer-profile-{settings.key()}-{digest}-lam{lam:g}-k{k}.npz")
    if path.exists():
        log.info(f"using the cached layer profile {path}")
        data = np.load(path)
        return LayerProfile(data["outlier_ratio"], data["sensitivity"])
    start = time.perf_counter()
    model, tokenizer = load_model(source)
    ids, mask = compute_samples(model, tokenizer, settings, bool(manifest["tokenizer"]["instruct"]),
                                source.cache_key())
    profile = layer_profile(model, ids, mask, prior_rank, lam, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), outlier_ratio=profile.outlier_ratio, sensitivity=profile.sensitivity)
    path.with_suffix(".tmp.npz").rename(path)
    log.info(f"layer profile measured in {time.perf_counter() - start:.0f} s, cached at {path}")
    return profile


def layer_budgets_for(spec: str, k: int, layers: int, size: int, block: int, calibrate=None) -> tuple[list[int], dict]:
    """(k per layer, the manifest's ``glass.budget``) for ``--budget spec``; ``calibrate()`` gives the calibrated
    budget's LayerProfile when asked for."""
    if spec == "uniform":
        return layer_budgets(k, layers), {"kind": "uniform"}
    if spec == "calibrated":
        return calibrated_budgets(calibrate(), k, size, block if block > 1 else STEP)
    return explicit_budgets(spec, layers, size, block), {"kind": "explicit"}
