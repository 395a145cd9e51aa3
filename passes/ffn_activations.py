"""Every FFN's activations (the input of its down projection) as a graph output, for the selection to read."""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.runtime.protocol import FFN_Z


class FFNActivationsPass(ir.passes.InPlacePass):
    """Adds output ``ffn.{layer}.z`` [batch, sequence, I] per layer: act(gate) * up, as the FFN computes it.

    Guarantees: every existing output is computed as before.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for ffn in find_gated_ffns(model.graph):
            ffn.z.name = FFN_Z.format(layer=ffn.layer)
            ffn.z.shape = ir.Shape(["batch", "sequence", ffn.intermediate_size])
            model.graph.outputs.append(ffn.z)
        return ir.passes.PassResult(model, modified=True)
