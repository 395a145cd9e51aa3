"""Per-layer neuron budgets: how many FFN neurons each layer keeps, the total fixed by the requested sparsity.

``uniform``: the paper's GLASS, the same k in every layer.
``calibrated``: chosen offline from the model's own samples (the global prior's), never from evaluation data
(measured by ``budget_calibration``):
  1. candidates: uniform; "protected": a layer whose sparsification alone costs more than PROTECT x the median
     layer's (KL of the next-token distribution, each layer A-GLASS-sparsified at the uniform k in turn) keeps every
     neuron, the others share the rest evenly (on SmolLM2 layer 0 alone costs 0.59 nats, the median layer 0.045);
     and the protected allocation with the others shared by outlier ratio (OWL: the share of |Z| above M x the
     layer's mean), s_l = s - 2 lam (r_l - mean r) within s +- lam, for each lam of OWL_LAMS;
  2. each candidate sparsifies every layer at once on samples the profile did not read; the lowest KL wins if it
     beats uniform by MARGIN. A model with no dominant layer and little use for outlier weighting (Gemma-3) so keeps
     uniform counts.
  Layers move in steps of STEP neurons (whole 4-bit blocks, the fp32 panels' widest width). EVAL.md has the study
  (uniform, TEAL-style sensitivity DP, OWL, layer protection, the choice on samples) and the evidence.
An explicit list ``k_0,k_1,...``: one count per layer (whole selection blocks); the artifact's sparsity is then the
list's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from glass_onnx.passes.glass_math import layer_budgets
from glass_onnx.runtime.errors import GlassError

BUDGETS = ("uniform", "calibrated")
STEP = 32
PROTECT = 5.0  # a layer costing this many times the median layer keeps every neuron
OWL_M, OWL_LAMS = 5.0, (0.1, 0.2, 0.3)
MARGIN = 0.05  # a per-layer allocation must cut uniform's KL on the samples by this share to be chosen


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


def candidate_budgets(profile: LayerProfile, k: int, size: int, step: int = STEP) -> dict[str, list[int]]:
    """The calibrated budget's candidates by name (uniform first), each summing to len(layers) * k in whole
    ``step``s; allocations that coincide are listed once, under the first name."""
    layers = len(profile.sensitivity)
    total, s = k * layers, 1.0 - k / size
    step = fitting_step(total, step)
    protected = protected_layers(profile.sensitivity, total, size, step)
    r = profile.outlier_ratio[~protected]
    normalised = (r - r.min()) / np.ptp(r) if np.ptp(r) > 0 else np.zeros_like(r)
    candidates = {"uniform": layer_budgets(k, layers)}
    for lam in (0.0, *OWL_LAMS):
        layer_sparsity = np.clip(s - 2 * lam * (normalised - normalised.mean()), s - lam, s + lam)
        target = np.full(layers, float(size))
        rest = (1.0 - layer_sparsity) * size
        target[~protected] = rest * (total - size * protected.sum()) / rest.sum()
        budgets = round_to_steps(target, total, size, step)
        if budgets not in candidates.values():
            candidates[f"protected+owl{lam:g}" if lam else "protected"] = budgets
    return candidates


def fitting_step(total: int, step: int) -> int:
    """``step``, halved until it divides ``total``: fp32 selects neuron by neuron, a smaller power of two fits."""
    while step > 1 and total % step:
        step //= 2
    return step


def protected_layers(sensitivity: np.ndarray, total: int, size: int, step: int) -> np.ndarray:
    """[layers] bool: the layers costing more than PROTECT x the median layer, as many as the total allows."""
    protected = sensitivity > PROTECT * np.median(sensitivity)
    # where the others could not keep a step each, the least costly protected layers give way first
    for layer in np.argsort(sensitivity, kind="stable"):
        if protected[layer] and size * protected.sum() + step * (len(sensitivity) - protected.sum()) > total:
            protected[layer] = False
    return protected


def choose_budgets(candidates: dict[str, list[int]], sample_kl: dict[str, float], profile: LayerProfile,
                   k: int, size: int, step: int = STEP) -> tuple[list[int], dict]:
    """(the candidate of least KL on the samples, unless it beats uniform by less than MARGIN; the manifest's
    ``glass.budget``: what was chosen and from what). The margin: the samples are the prior's own and unprompted,
    not the prompts the model will see; Gemma-3's best candidate gained 2.3% there and outlier weighting cost 12% on
    its test split (EVAL.md)."""
    chosen = min(candidates, key=lambda name: (round(sample_kl[name], 6), list(candidates).index(name)))
    if sample_kl[chosen] > (1.0 - MARGIN) * sample_kl["uniform"]:
        chosen = "uniform"
    total = k * len(profile.sensitivity)
    protected = protected_layers(profile.sensitivity, total, size, fitting_step(total, step))
    return candidates[chosen], {
        "kind": "calibrated", "chosen": chosen,
        "sample_kl": {name: round(float(v), 6) for name, v in sample_kl.items()},
        "protected_layers": np.flatnonzero(protected).tolist() if chosen != "uniform" else [],
        "owl_m": OWL_M, "protect_factor": PROTECT, "margin": MARGIN,
        "sensitivity": np.round(profile.sensitivity, 5).tolist(),
        "outlier_ratio": np.round(profile.outlier_ratio, 6).tolist()}


def round_to_steps(target: np.ndarray, total: int, size: int, step: int) -> list[int]:
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


def layer_budgets_for(spec: str, k: int, layers: int, size: int, block: int, calibrate=None) -> tuple[list[int], dict]:
    """(k per layer, the manifest's ``glass.budget``) for ``--budget spec``; ``calibrate()`` gives the calibrated
    budget's (k per layer, record) when asked for."""
    if spec == "uniform":
        return layer_budgets(k, layers), {"kind": "uniform"}
    if spec == "calibrated":
        return calibrate()
    return explicit_budgets(spec, layers, size, block), {"kind": "explicit"}
