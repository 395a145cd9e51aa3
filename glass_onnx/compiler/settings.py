"""GLASS settings in one place: the selection methods and fusions, the defaults of sparsity, lam and the prior's
sample sizes, and the one-line checks every command applies to them.

A method is a global prior and a weight lam of the local (prompt) ranking:
f_j = lam * r_local(j) + (1 - lam) * r_prior(j): lam = 1 is GRIFFIN (prompt only), lam = 0 a static global mask.
"""

from __future__ import annotations

import dataclasses

from glass_onnx.passes.glass_math import FUSIONS, check_fusion  # noqa: F401  (the fusions' names and check)
from glass_onnx.runtime.errors import GlassError

DEFAULT_METHOD = "a-glass"
DEFAULT_SPARSITY = 0.5
DEFAULT_FUSION = FUSIONS[0]  # rank fusion beat Plackett-Luce at every lam tried (EVAL.md)
DEFAULT_LAM = 0.5  # for a model whose lam was not chosen on its own dev split (its recipe's default_lam)
DEFAULT_WARMUP = 32  # generated tokens run densely before the kept neurons are chosen (compile --warmup; EVAL.md)
INT4_BLOCK = 32  # int4 artifacts select blocks of this many neurons: one 4-bit block of the down projection
PRIOR_SAMPLES = 64  # sequences the model samples for its prior
PRIOR_TOKENS = 256  # tokens per sequence


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    prior: str | None  # "activation", "impact", "random" or None (no prior needed)
    lam: float | None  # fixed weight, or None: the model's default (tunable with --lam)
    description: str


METHODS = {m.name: m for m in (
    Method("dense", None, 1.0, "every neuron (sparsity forced to 0), through the same sessions"),
    Method("random", "random", 0.0, "a seeded random static set"),
    Method("global-a", "activation", 0.0, "static: top-k of the A-GLASS prior (mean |activation|)"),
    Method("global-i", "impact", 0.0, "static: top-k of the I-GLASS prior (mean |activation x gradient|)"),
    Method("griffin", None, 1.0, "prompt only: GRIFFIN's local statistic"),
    Method("a-glass", "activation", None, "local ranking fused with the activation prior"),
    Method("i-glass", "impact", None, "local ranking fused with the impact prior"),
)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise GlassError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def check_sparsity(sparsity: float) -> float:
    if not 0.0 <= sparsity < 1.0:
        raise GlassError(f"--sparsity must be in [0, 1) (got {sparsity})")
    return sparsity


def check_lam(lam: float | None) -> float | None:
    if lam is not None and not 0.0 <= lam <= 1.0:
        raise GlassError(f"--lam must be in [0, 1] (got {lam})")
    return lam


def keep_count(sparsity: float, intermediate_size: int, block: int = 1) -> int:
    """k: the neurons each layer keeps at this sparsity (at least one), a whole number of ``block``-neuron blocks."""
    k = round((1.0 - check_sparsity(sparsity)) * intermediate_size / block) * block
    if k < 1:
        raise GlassError(f"--sparsity {sparsity} keeps no neuron of {intermediate_size}; lower it")
    return k


def default_lam(recipe) -> float:
    """lam for a model: its recipe's, chosen on its dev split (EVAL.md), else DEFAULT_LAM."""
    return recipe.default_lam if recipe is not None and recipe.default_lam is not None else DEFAULT_LAM


def check_settings(method: Method, sparsity: float, lam: float | None, intermediate_size: int,
                   recipe=None, block: int = 1) -> tuple[int, float]:
    """(k, lam) for these settings, or a one-line error for values out of range."""
    check_sparsity(sparsity)
    if check_lam(lam) is not None and method.lam is not None:
        raise GlassError(f"method '{method.name}' fixes lam = {method.lam}; --lam applies to a-glass and i-glass")
    if intermediate_size % block:
        raise GlassError(f"the FFN's {intermediate_size} neurons do not split into blocks of {block}")
    k = keep_count(0.0 if method.name == "dense" else sparsity, intermediate_size, block)
    return k, method.lam if method.lam is not None else (lam if lam is not None else default_lam(recipe))
