"""Decode pass: every FFN runs only the kept neurons through an ai.glass indexed FFN op."""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes import glass_ops
from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.passes.values import tensor_value
from glass_onnx.runtime.protocol import KEPT_NEURONS


class IndexedFFNPass(ir.passes.InPlacePass):
    """Replaces each gated FFN with ``ai.glass.Indexed{SwiGLU,GeGLU}(x, kept_neurons.l, W_gate, W_up, W_down)`` (int4
    graphs: ``Indexed*Int4`` on each weight's 4-bit B and scales, reading only the kept neurons' codes).

    Guarantees: a new input ``kept_neurons.l`` [batch, k_l] int64 per layer; the FFN output equals the dense one
    when kept holds every neuron, and the dense FFN restricted to the kept neurons otherwise (int4: of the same 4-bit
    weights, computed in float). The weights stay the same initializers the dense graph used, so prefill and decode
    can share one weights file.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        batch = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else "batch"
        for ffn in find_gated_ffns(graph):
            functions = glass_ops.INDEXED_FFN_INT4 if ffn.int4 else glass_ops.INDEXED_FFN
            op_type = glass_ops.add_function(model, functions[ffn.activation])
            kept = tensor_value(KEPT_NEURONS.format(layer=ffn.layer), ir.DataType.INT64,
                                [batch, f"kept_{ffn.layer}"])
            graph.inputs.append(kept)
            weights = [v for p in (ffn.gate, ffn.up, ffn.down)
                       for v in ((p.weight, p.scales) if ffn.int4 else (p.weight,))]
            node = ir.node(op_type, [ffn.x, kept, *weights], domain=glass_ops.DOMAIN,
                           name=f"glass/layers.{ffn.layer}/{op_type}",
                           metadata_props=dict(ffn.nodes[-1].metadata_props))
            node.outputs[0].shape, node.outputs[0].type = ffn.output.shape, ffn.output.type
            graph.insert_after(ffn.nodes[-1], node)
            ir.convenience.replace_all_uses_with(ffn.output, node.outputs[0])
            graph.remove(ffn.nodes, safe=True)
        return ir.passes.PassResult(model, modified=True)
