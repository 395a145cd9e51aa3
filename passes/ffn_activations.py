"""Every FFN's activations (the input of its down projection) as a graph output, for the selection to read; and a
mask on them, so that the same graph can run the FFNs restricted to the kept neurons."""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import find_gated_ffns, record_ffn_weights
from glass_onnx.passes.values import constant, tensor_value
from glass_onnx.runtime.protocol import FFN_MASK, FFN_Z


class FFNActivationsPass(ir.passes.InPlacePass):
    """Adds output ``ffn.{layer}.z`` [batch, sequence, I] per layer, act(gate) * up as the FFN computes it, and input
    ``ffn.{layer}.mask`` [mask_batch, I] that multiplies it before the down projection.

    Guarantees: with every mask all ones, every existing output is computed as before; with a 0/1 mask, each FFN is
    the dense FFN restricted to the neurons marked 1. The model's metadata ``glass.ffn_weights`` names each layer's
    FFN weights (``ffn_pattern.ffn_weights``).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        record_ffn_weights(model, ffns)
        for ffn in ffns:
            down = ffn.nodes[-1]
            mask = tensor_value(FFN_MASK.format(layer=ffn.layer), ffn.z.dtype or ir.DataType.FLOAT,
                                ["mask_batch", ffn.intermediate_size])
            graph.inputs.append(mask)
            axis = constant([1], f"glass/layers.{ffn.layer}/mask_axis")
            rows = ir.node("Unsqueeze", [mask, axis.outputs[0]], name=f"glass/layers.{ffn.layer}/mask_rows")
            masked = ir.node("Mul", [ffn.z, rows.outputs[0]], name=f"glass/layers.{ffn.layer}/masked_z")
            graph.insert_before(down, [axis, rows, masked])
            masked.outputs[0].dtype, masked.outputs[0].shape = ffn.z.dtype, ffn.z.shape
            down.replace_input_with(0, masked.outputs[0])
            ffn.z.name = FFN_Z.format(layer=ffn.layer)
            ffn.z.shape = ir.Shape(["batch", "sequence", ffn.intermediate_size])
            graph.outputs.append(ffn.z)
        return ir.passes.PassResult(model, modified=True)
