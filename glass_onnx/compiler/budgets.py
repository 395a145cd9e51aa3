"""Per-layer neuron budgets: how many FFN neurons each layer keeps.

``uniform``: the paper's GLASS, the same k in every layer (k from the requested sparsity).
An explicit list ``k_0,k_1,...``: one count per layer (whole selection blocks), e.g. from a study of one's own;
the artifact's sparsity is then the list's.
"""

from __future__ import annotations

from glass_onnx.runtime.errors import GlassError

BUDGETS = ("uniform",)


def uniform_budgets(k: int, layers: int) -> list[int]:
    """k neurons in every layer."""
    return [k] * layers


def layer_budgets_for(spec: str, k: int, layers: int, size: int, block: int) -> tuple[list[int], str]:
    """(k per layer, budget kind) for ``--budget spec``: a named budget, or one count per layer."""
    if spec in BUDGETS:
        return uniform_budgets(k, layers), spec
    try:
        budgets = [int(x) for x in spec.split(",")]
    except ValueError:
        raise GlassError(f"unknown budget '{spec}'; choose one of: {', '.join(BUDGETS)}, or give one neuron count "
                         f"per layer (k_0,...,k_{layers - 1})") from None
    if len(budgets) != layers:
        raise GlassError(f"--budget lists {len(budgets)} neuron counts for {layers} layers; give one per layer")
    if bad := [b for b in budgets if b % block or not block <= b <= size]:
        raise GlassError(f"--budget counts {bad} are not whole {block}-neuron blocks between {block} and {size}")
    return budgets, "explicit"
