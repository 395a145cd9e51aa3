"""Fast-layout decoder pass: FFN weights become graph inputs, FFN activations become graph outputs.

One session then serves prefill (bound to the full weights) and decode (bound to per-prompt compact weights):
ONNX Runtime prepacks only the constant attention and lm_head weights, once, and the FFN weights are held once,
by the runtime, read from the weights file.

A matmul whose weights are an input, not a constant, loses ONNX Runtime's prepacked layout: it re-packs the
weights on every call. The gate and up projections (fused into one matmul) therefore have two paths, and a
runtime binds one and leaves the other empty (width 0: a few nodes that do no work):
- decode, ``ffn.{layer}.gate_up``: the compact weights in panels [panels, H, 32] (each panel a contiguous [H, 32]
  block), streamed once per token like prepacked constants;
- prefill, ``ffn_t.{layer}.gate_up``: the full weights transposed, [2I, H], multiplied as the left operand
  (W x^T), which reads them in place instead of re-packing them for every prompt chunk.
The down projection has one path, in panels: prefill binds the full weights, decode the compact ones; its input
is the concatenation of the two paths' activations (one of them empty). BENCHMARKS.md has the measurements.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import GatedFFN, find_gated_ffns
from glass_onnx.passes.io_names import tensor_value

# [ffn_batch, 2k / width, H, width]: gate panels then up panels; ffn_batch 1 (shared) or batch (per sequence)
FFN_GATE_UP = "ffn.{layer}.gate_up"
FFN_DOWN = "ffn.{layer}.down"  # [ffn_batch, H / h, width, h]: down weights in panels of h hidden units
FFN_GATE_UP_T = "ffn_t.{layer}.gate_up"  # [2 * width, H]: gate rows then up rows (the weights transposed)
FFN_Z = "ffn.{layer}.z"  # [batch, sequence, width]: act(gate) * up, the down projection's input


def _const(name: str, values) -> ir.Node:
    return ir.node("Constant", [], attributes={"value": ir.tensor(np.array(values, np.int64))}, name=name)


class FFNWeightsAsInputsPass(ir.passes.InPlacePass):
    """Replaces each gated FFN's three weight initializers with graph inputs (module docstring) and exposes its
    activations.

    Guarantees: bound to the full weights (gate/up transposed, down in panels) with the gate/up panels empty,
    every original output is unchanged; bound to panels of a subset of neurons (as compact.onnx builds them) with
    the transposed input empty, the FFN is the dense FFN restricted to them. Adds output ``ffn.{layer}.z``.
    Returns the removed initializers in ``self.weights`` (layer -> {"gate", "up", "down"}) so the caller can store
    them laid out for these inputs.
    """

    def __init__(self):
        super().__init__()
        self.weights: list[dict[str, ir.Value]] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        if not ffns:
            return ir.passes.PassResult(model, modified=False)
        rows_shape = self._rows_shape(graph, ffns[0].nodes[0])
        for ffn in ffns:
            hidden, dtype = ffn.w_gate.shape[0], ffn.w_gate.dtype
            prefix = f"glass/layers.{ffn.layer}"
            z_t = self._transposed_gating(graph, ffn, hidden, rows_shape)
            gate_up = tensor_value(FFN_GATE_UP.format(layer=ffn.layer), dtype,
                                   ["ffn_batch", "gate_up_panels", hidden, "panel_width"])
            down = tensor_value(FFN_DOWN.format(layer=ffn.layer), dtype,
                                ["ffn_batch", "hidden_panels", "ffn_width", "hidden_panel_width"])
            graph.inputs.extend([gate_up, down])
            flat = self._panel_matmul(graph, ffn.nodes[0], ffn.x, gate_up, rows_shape)
            split = ir.node("Split", [flat], attributes={"axis": -1, "num_outputs": 2}, num_outputs=2,
                            name=f"{prefix}/gate_up/Split")
            graph.insert_before(ffn.nodes[0], split)
            flat.shape = ir.Shape(["batch", "sequence", "gate_up_width"])
            for old, new in zip((ffn.nodes[0].outputs[0], ffn.nodes[1].outputs[0]), split.outputs):
                new.dtype = old.dtype
                ir.convenience.replace_all_uses_with(old, new)
            for value in [*split.outputs, *(out for node in ffn.nodes[2:-1] for out in node.outputs)]:
                value.shape = ir.Shape(["batch", "sequence", "panel_ffn_width"])  # k, not the exporter's I
            # one of the two is empty: the decode path's [B, S, k] or the prefill path's [B, S, I]
            z = ir.node("Concat", [ffn.z, z_t], attributes={"axis": -1}, name=f"{prefix}/ffn_z")
            z.outputs[0].name = FFN_Z.format(layer=ffn.layer)
            z.outputs[0].dtype, z.outputs[0].shape = ffn.z.dtype, ir.Shape(["batch", "sequence", "ffn_width"])
            graph.insert_before(ffn.nodes[-1], z)
            graph.outputs.append(z.outputs[0])
            y = self._panel_matmul(graph, ffn.nodes[-1], z.outputs[0], down, rows_shape)
            ir.convenience.replace_all_uses_with(ffn.output, y)
            self.weights.append({"gate": ffn.w_gate, "up": ffn.w_up, "down": ffn.w_down})
        return ir.passes.PassResult(model, modified=True)

    @staticmethod
    def _transposed_gating(graph: ir.Graph, ffn: GatedFFN, hidden: int, rows_shape: ir.Value) -> ir.Value:
        """act(Wg^T x^T) * (Wu^T x^T) on the transposed weight input, as rows [B, S, width]."""
        prefix = f"glass/layers.{ffn.layer}/prefill_gating"
        weights = tensor_value(FFN_GATE_UP_T.format(layer=ffn.layer), ffn.w_gate.dtype, ["gate_up_width_t", hidden])
        graph.inputs.append(weights)
        flat = _const(f"{prefix}/flat", [-1, hidden])
        rows = ir.node("Reshape", [ffn.x, flat.outputs[0]])  # [B*S, H]
        columns = ir.node("Transpose", [rows.outputs[0]], attributes={"perm": [1, 0]})  # [H, B*S]
        product = ir.node("MatMul", [weights, columns.outputs[0]])  # [2 * width, B*S]
        split = ir.node("Split", [product.outputs[0]], attributes={"axis": 0, "num_outputs": 2}, num_outputs=2)
        nodes = [flat, rows, columns, product, split]
        # the FFN's own activation and gating, cloned onto the transposed path
        renamed = {ffn.nodes[0].outputs[0]: split.outputs[0], ffn.nodes[1].outputs[0]: split.outputs[1]}
        inner = set(ffn.nodes[2:-1])
        for node in [n for n in graph if n in inner]:
            copy = ir.node(node.op_type, [renamed.get(v, v) for v in node.inputs], attributes=dict(node.attributes),
                           domain=node.domain, num_outputs=len(node.outputs))
            renamed.update(zip(node.outputs, copy.outputs))
            nodes.append(copy)
        z_rows = ir.node("Transpose", [renamed[ffn.z]], attributes={"perm": [1, 0]})  # [B*S, width]
        z = ir.node("Reshape", [z_rows.outputs[0], rows_shape])
        nodes += [z_rows, z]
        for i, node in enumerate(nodes):
            node.name = node.name or f"{prefix}/{node.op_type}_{i}"
        graph.insert_before(ffn.nodes[-1], nodes)
        z.outputs[0].dtype = ffn.z.dtype
        return z.outputs[0]

    @staticmethod
    def _rows_shape(graph: ir.Graph, before: ir.Node) -> ir.Value:
        """[batch, sequence, -1], from the first FFN input's shape, for folding panels back into rows."""
        shape = ir.node("Shape", [before.inputs[0]], attributes={"start": 0, "end": 2}, name="glass/ffn_rows/Shape")
        rest = _const("glass/ffn_rows/rest", [-1])
        rows = ir.node("Concat", [shape.outputs[0], rest.outputs[0]], attributes={"axis": 0},
                       name="glass/ffn_rows/Concat")
        rows.outputs[0].name = "glass.ffn_rows_shape"
        graph.insert_before(before, [shape, rest, rows])
        return rows.outputs[0]

    @staticmethod
    def _panel_matmul(graph: ir.Graph, matmul: ir.Node, x: ir.Value, panels: ir.Value, rows_shape: ir.Value) -> ir.Value:
        """MatMul(x [B, S, K], W [K, N]) -> Reshape(Transpose(MatMul(x[:, None], panels [fb, N/w, K, w]))), placed
        where ``matmul`` is. The prompt's rows share each panel, read once, as one [S, K] x [K, w] product."""
        name = panels.name
        axis = _const(f"{name}/axis", [1])
        rows = ir.node("Unsqueeze", [x, axis.outputs[0]], name=f"{name}/Unsqueeze")  # [B, 1, S, K]
        product = ir.node("MatMul", [rows.outputs[0], panels], name=f"{name}/MatMul")  # [B, N/w, S, w]
        by_row = ir.node("Transpose", [product.outputs[0]], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}/Transpose")
        out = ir.node("Reshape", [by_row.outputs[0], rows_shape], name=f"{name}/Reshape")  # [B, S, N]
        graph.insert_before(matmul, [axis, rows, product, by_row, out])
        out.outputs[0].dtype, out.outputs[0].shape = matmul.outputs[0].dtype, matmul.outputs[0].shape
        return out.outputs[0]
