"""The selection methods: each is a global prior and a weight lam of the local (prompt) ranking.

f_j = lam * r_local(j) + (1 - lam) * r_prior(j): lam = 1 is GRIFFIN (prompt only), lam = 0 a static global mask.
"""

from __future__ import annotations

import dataclasses

from glass_onnx.runtime.errors import GlassError


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


def check_settings(method: Method, sparsity: float, lam: float | None, intermediate_size: int) -> tuple[int, float]:
    """(k, lam) for these settings, or a one-line error for values out of range."""
    if not 0.0 <= sparsity < 1.0:
        raise GlassError(f"--sparsity must be in [0, 1) (got {sparsity})")
    if lam is not None and not 0.0 <= lam <= 1.0:
        raise GlassError(f"--lam must be in [0, 1] (got {lam})")
    if lam is not None and method.lam is not None:
        raise GlassError(f"method '{method.name}' fixes lam = {method.lam}; --lam applies to a-glass and i-glass")
    if method.name == "dense":
        sparsity = 0.0
    k = round((1.0 - sparsity) * intermediate_size)
    if k < 1:
        raise GlassError(f"--sparsity {sparsity} keeps no neuron of {intermediate_size}; lower it")
    return k, method.lam if method.lam is not None else lam
