"""Which panel widths the fp32 fast layout's compact weights take on this host, found by timing real decode steps.

ONNX Runtime does not prepack weights bound as session inputs, and which layout of them its one-token matmul
streams fastest depends on the host (BENCHMARKS.md, "Panel width"): narrow panels (gate/up: 32 neurons, down: 32
hidden units) ran the FFN stack 1.3x faster than plain [H, N] weights, which one panel per projection is, on an AMD
EPYC with 32 MiB of L3; one panel per projection decoded SmolLM2 at 25% sparsity 1.2x faster than narrow panels on
an Intel Xeon with 480 MiB.
Every width gives the same logits, so the trial moves time, never tokens.
"""

from __future__ import annotations

import statistics

from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import panel_width

NARROW, WHOLE = "narrow", "whole"  # whole: one panel per projection, gate and up [H, k] each, down [k, H]
WIDTHS = (NARROW, WHOLE)


class PanelWidthTrial:
    """Runs the first ``steps`` timed one-token decode steps on each width in turn (the first step after each gather
    is not timed), then keeps the width of the lower median for the rest of the decoder's life. ``fixed`` skips the
    trial."""

    def __init__(self, steps: int = 8, fixed: str | None = None):
        if fixed is not None and fixed not in WIDTHS:
            raise GlassError(f"unknown panel width '{fixed}'; choose {' or '.join(WIDTHS)}")
        self.steps = steps
        self.times: dict[str, list[float]] = {name: [] for name in WIDTHS}
        self.choice = fixed  # None while the trial runs
        self.current = fixed or NARROW

    @property
    def steps_left(self) -> int:
        """Decode steps until the choice is made."""
        return 0 if self.choice else sum(max(0, self.steps + 1 - len(t)) for t in self.times.values())

    def width(self, size: int) -> int:
        """The panel width for a tensor of ``size`` columns: k kept neurons (gate/up) or the hidden size (down)."""
        return size if self.current == WHOLE else panel_width(size)

    def record(self, seconds: float) -> bool:
        """One decode step's time on the current width; True when the width changed (gather the weights again)."""
        times = self.times[self.current]
        times.append(seconds)
        if len(times) <= self.steps:
            return False
        untried = [name for name, t in self.times.items() if len(t) <= self.steps]
        best = untried[0] if untried else min(self.times, key=lambda name: statistics.median(self.times[name][1:]))
        if not untried:
            self.choice = best
        changed, self.current = best != self.current, best
        return changed
