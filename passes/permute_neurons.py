"""Compile-time relabelling of FFN neurons: each layer's neurons put in a given order (fp32 graphs, before int4).

A gated FFN sums over its neurons, so any order of them computes the same function: the gate and up columns and the
down rows move together. int4 artifacts order neurons by the global prior, so that each 4-bit block of 32 along the
down projection's neuron axis holds neurons of alike importance, and selecting whole blocks stays as good as
selecting neurons (BENCHMARKS.md, int4 design study).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.runtime.errors import GlassError

NEURON_ORDER = "glass.neuron_order"  # model metadata: "permuted" once the pass ran


class PermuteFFNNeuronsPass(ir.passes.InPlacePass):
    """Puts layer l's FFN neurons in the order ``order[l]`` (new neuron j is old neuron order[l][j]).

    Guarantees: graph inputs and outputs are unchanged and compute the same values up to float rounding of the down
    projection's sum; the FFN activations (inputs of the down projections) come out in the new order.
    """

    def __init__(self, order: np.ndarray):
        super().__init__()
        self.order = np.asarray(order)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ffns = find_gated_ffns(model.graph)
        if len(ffns) != len(self.order) or any(ffn.int4 for ffn in ffns):
            raise GlassError(f"a neuron order for {len(self.order)} layers does not fit this graph's {len(ffns)} fp32 "
                             "FFNs; permute before quantising, with an order made for this model")
        for ffn, order in zip(ffns, self.order):
            for projection, axis in ((ffn.gate, 1), (ffn.up, 1), (ffn.down, 0)):
                value = projection.weight
                array = np.take(value.const_value.numpy(), order, axis=axis)
                value.const_value = ir.tensor(np.ascontiguousarray(array), name=value.name)
        model.metadata_props[NEURON_ORDER] = "permuted"
        return ir.passes.PassResult(model, modified=True)
