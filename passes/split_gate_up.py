"""A fused gate/up projection taken apart, so that every gated FFN has the shape ``find_gated_ffns`` reads.

Phi-3 computes its FFN's gate and up in one Linear (``gate_up_proj``, [H, 2I]) and chunks the result; the exporter
writes MatMul -> Split. GLASS restricts the gate and up columns of the kept neurons, so each needs a weight of its
own: the MatMul becomes two, one per half of the columns. Nothing else changes, so every other pass (statistics,
selection, the compact layouts, int4) sees the FFN as it sees Llama's.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.values import constant_ints, initializer


class SplitFusedGateUpPass(ir.passes.InPlacePass):
    """Rewrites MatMul(x, W [K, N]) whose only reader is a Split of the last axis into two parts as two MatMuls,
    x @ W[:, :a] and x @ W[:, a:], one per Split output.

    Guarantees: graph inputs and outputs are unchanged and every value is computed from the same products (each
    output column's dot product is the one it was). Only a 2-D float initializer is split; a weight that
    something else reads too, a Split into more than two parts, or of another axis is left as it is.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for matmul in [n for n in graph if n.op_type == "MatMul" and n.domain == ""]:
            sizes = self._split_sizes(matmul)
            if sizes is None:
                continue
            split, fused = matmul.outputs[0].uses()[0].node, matmul.inputs[1]
            weight = fused.const_value.numpy()
            name = matmul.name or "gate_up"
            parts, start = [], 0
            for i, (size, out) in enumerate(zip(sizes, split.outputs)):
                w = initializer(graph, f"{fused.name}.part{i}", np.ascontiguousarray(weight[:, start:start + size]))
                start += size
                part = ir.node("MatMul", [matmul.inputs[0], w], name=f"{name}/part{i}")
                part.outputs[0].dtype, part.outputs[0].shape = out.dtype, out.shape
                parts.append(part)
                ir.convenience.replace_all_uses_with(out, part.outputs[0], replace_graph_outputs=True)
            names = [out.name for out in split.outputs]
            graph.insert_before(matmul, parts)
            graph.remove([split, matmul], safe=True)
            graph.initializers.pop(fused.name)  # read by the fused MatMul alone (_split_sizes)
            for part, output_name in zip(parts, names):
                if part.outputs[0].is_graph_output():  # a graph output keeps its name
                    part.outputs[0].name = output_name
            count += 1
        return ir.passes.PassResult(model, modified=count > 0)

    @staticmethod
    def _split_sizes(matmul: ir.Node) -> list[int] | None:
        """The column counts of the Split that alone reads this MatMul on a constant weight, or None."""
        w, out = matmul.inputs[1], matmul.outputs[0]
        # an initializer, which the rewrite replaces by the two halves' (a Constant node's output would not be one)
        if w is None or not w.is_initializer() or w.const_value is None or w.shape is None or len(w.shape) != 2:
            return None
        if w.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16) or len(w.uses()) != 1:
            return None
        uses = out.uses()
        if out.is_graph_output() or len(uses) != 1 or uses[0].node.op_type != "Split" or uses[0].node.domain != "":
            return None
        split = uses[0].node
        if len(split.outputs) != 2 or out.shape is None or uses[0].idx != 0:
            return None
        axis = split.attributes.get_int("axis", 0)
        if axis not in (-1, len(out.shape) - 1):
            return None
        n = int(w.shape[1])
        if len(split.inputs) > 1 and split.inputs[1] is not None:
            sizes = constant_ints(split.inputs[1])
            if sizes is None:
                return None
        else:  # num_outputs: equal parts, the last one smaller when N is odd
            sizes = [(n + 1) // 2, n - (n + 1) // 2]
        return sizes if len(sizes) == 2 and sum(sizes) == n and min(sizes) > 0 else None
