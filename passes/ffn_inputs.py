"""Fast-layout decoder pass: FFN weights become graph inputs, FFN activations become graph outputs.

One session then serves prefill (bound to the full weights) and decode (bound to per-prompt compact weights):
ONNX Runtime prepacks only the constant attention and lm_head weights, once, and the FFN weights are held once,
by the runtime, memory-mapped from the weights file.
"""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.passes.io_names import tensor_value

FFN_GATE = "ffn.{layer}.gate"  # [ffn_batch, H, width]: ffn_batch 1 (shared) or batch (one set per sequence)
FFN_UP = "ffn.{layer}.up"  # [ffn_batch, H, width]
FFN_DOWN = "ffn.{layer}.down"  # [ffn_batch, width, H]
FFN_Z = "ffn.{layer}.z"  # [batch, sequence, width]: act(gate) * up, the input of the down projection


class FFNWeightsAsInputsPass(ir.passes.InPlacePass):
    """Replaces each gated FFN's three weight initializers with graph inputs and exposes its activations.

    Guarantees: bound to the original weights (as [1, H, I] / [1, I, H] views), every original output is
    unchanged; bound to a subset of neurons (columns of gate/up, rows of down), the FFN is the dense FFN restricted
    to them. Adds output ``ffn.{layer}.z``. Returns the removed initializers in ``self.weights`` (layer -> dict) so
    the caller can store them.
    """

    def __init__(self):
        super().__init__()
        self.weights: list[dict[str, ir.Value]] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for ffn in find_gated_ffns(graph):
            hidden = ffn.w_gate.shape[0]
            shapes = {FFN_GATE: ["ffn_batch", hidden, "ffn_width"], FFN_UP: ["ffn_batch", hidden, "ffn_width"],
                      FFN_DOWN: ["ffn_batch", "ffn_width", hidden]}
            removed = {}
            for template, weight in ((FFN_GATE, ffn.w_gate), (FFN_UP, ffn.w_up), (FFN_DOWN, ffn.w_down)):
                name = template.format(layer=ffn.layer)
                value = tensor_value(name, weight.dtype, shapes[template])
                graph.inputs.append(value)
                ir.convenience.replace_all_uses_with(weight, value)
                removed[template] = weight
                if not weight.uses():
                    graph.initializers.pop(weight.name)
            self.weights.append(removed)
            z = ir.node("Identity", [ffn.z], name=f"glass/layers.{ffn.layer}/ffn_z")
            z.outputs[0].name = FFN_Z.format(layer=ffn.layer)
            z.outputs[0].type = ffn.z.type
            z.outputs[0].shape = ir.Shape(["batch", "sequence", "ffn_width"])
            graph.insert_after(ffn.nodes[-1], z)
            graph.outputs.append(z.outputs[0])
        return ir.passes.PassResult(model, modified=True)
