"""Fast-layout decoder pass: FFN weights become graph inputs in panels, FFN activations become graph outputs.

One session then serves prefill (bound to the full weights) and decode (bound to per-prompt compact weights):
ONNX Runtime prepacks only the constant attention and lm_head weights, once, and the FFN weights are held once,
by the runtime, memory-mapped from the weights file.

Why panels: a matmul whose weights are an input, not a constant, loses ONNX Runtime's prepacked layout and
re-reads [H, k] weights in a cache-unfriendly order every decode step (~35 % slower than prepacked). Weights given
as [panels, K, width] panels (width 32: each panel a contiguous [K, 32] block) are streamed once per step, like
the prepacked constants. A panel matmul with width = N is the plain matmul, so the same graph takes the full
weights for prefill as [1, 1, H, I] views of the weights file, with no copy.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.passes.io_names import tensor_value

FFN_GATE = "ffn.{layer}.gate"  # [ffn_batch, panels, H, panel_width]: ffn_batch 1 (shared) or batch (one per sequence)
FFN_UP = "ffn.{layer}.up"  # [ffn_batch, panels, H, panel_width]
FFN_DOWN = "ffn.{layer}.down"  # [ffn_batch, hidden_panels, width, hidden_panel_width]
FFN_Z = "ffn.{layer}.z"  # [batch, sequence, width]: act(gate) * up, the input of the down projection


class FFNWeightsAsInputsPass(ir.passes.InPlacePass):
    """Replaces each gated FFN's three weight initializers with graph inputs in panel layout and exposes its
    activations.

    Guarantees: bound to the original weights as [1, 1, H, I] / [1, 1, I, H] views, every original output is
    unchanged; bound to panels of a subset of neurons (as compact.onnx builds them), the FFN is the dense FFN
    restricted to them. Adds output ``ffn.{layer}.z``. Returns the removed initializers in ``self.weights``
    (layer -> dict) so the caller can store them.
    """

    def __init__(self):
        super().__init__()
        self.weights: list[dict[str, ir.Value]] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        rows_shape = self._rows_shape(graph, ffns[0].nodes[0]) if ffns else None
        for ffn in ffns:
            hidden = ffn.w_gate.shape[0]
            shapes = {FFN_GATE: ["ffn_batch", "panels", hidden, "panel_width"],
                      FFN_UP: ["ffn_batch", "panels", hidden, "panel_width"],
                      FFN_DOWN: ["ffn_batch", "hidden_panels", "ffn_width", "hidden_panel_width"]}
            removed = {}
            matmuls = {FFN_GATE: ffn.nodes[0], FFN_UP: ffn.nodes[1], FFN_DOWN: ffn.nodes[-1]}
            for template, weight in ((FFN_GATE, ffn.w_gate), (FFN_UP, ffn.w_up), (FFN_DOWN, ffn.w_down)):
                name = template.format(layer=ffn.layer)
                value = tensor_value(name, weight.dtype, shapes[template])
                graph.inputs.append(value)
                self._panel_matmul(graph, matmuls[template], value, rows_shape, name)
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
        return ir.passes.PassResult(model, modified=bool(ffns))

    @staticmethod
    def _rows_shape(graph: ir.Graph, before: ir.Node) -> ir.Value:
        """[batch, sequence, -1], from the first FFN input's shape, for folding panels back into rows."""
        x = before.inputs[0]
        shape = ir.node("Shape", [x], attributes={"start": 0, "end": 2}, name="glass/ffn_rows/Shape")
        rest = ir.node("Constant", [], attributes={"value": ir.tensor(np.array([-1], np.int64))},
                       name="glass/ffn_rows/rest")
        rows = ir.node("Concat", [shape.outputs[0], rest.outputs[0]], attributes={"axis": 0},
                       name="glass/ffn_rows/Concat")
        rows.outputs[0].name = "glass.ffn_rows_shape"
        graph.insert_before(before, [shape, rest, rows])
        return rows.outputs[0]

    @staticmethod
    def _panel_matmul(graph: ir.Graph, matmul: ir.Node, panels: ir.Value, rows_shape: ir.Value, name: str) -> None:
        """MatMul(x [B, S, K], W [K, N]) -> Reshape(Transpose(MatMul(x[:, None], panels [fb, N/w, K, w])))."""
        x = matmul.inputs[0]
        axis = ir.node("Constant", [], attributes={"value": ir.tensor(np.array([1], np.int64))}, name=f"{name}/axis")
        rows = ir.node("Unsqueeze", [x, axis.outputs[0]], name=f"{name}/Unsqueeze")  # [B, 1, S, K]
        product = ir.node("MatMul", [rows.outputs[0], panels], name=f"{name}/MatMul")  # [B, N/w, S, w]
        by_row = ir.node("Transpose", [product.outputs[0]], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}/Transpose")
        out = ir.node("Reshape", [by_row.outputs[0], rows_shape], name=f"{name}/Reshape")  # [B, S, N]
        graph.insert_before(matmul, [axis, rows, product, by_row, out])
        old = matmul.outputs[0]
        out.outputs[0].dtype, out.outputs[0].shape = old.dtype, old.shape
        ir.convenience.replace_all_uses_with(old, out.outputs[0])
