"""Residual Add + RMSNormalization as one ONNX Runtime SkipSimplifiedLayerNormalization."""

from __future__ import annotations

import onnx_ir as ir

MS = "com.microsoft"


class SkipRMSNormPass(ir.passes.InPlacePass):
    """Replaces ``s = Add(a, b); y = RMSNormalization(s, gamma)`` (last axis) with
    ``y, _, _, s = SkipSimplifiedLayerNormalization(a, b, gamma)``: one pass over the hidden state instead of two.

    Guarantees: y and s are unchanged up to float rounding; an Add whose operands differ in shape (broadcasting)
    or a normalization over other axes is left as it is.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, fused = model.graph, 0
        for norm in [n for n in graph if n.op_type == "RMSNormalization" and n.domain == ""]:
            add = norm.inputs[0].producer()
            if add is None or add.op_type != "Add" or add.domain != "" or norm.attributes.get_int("axis", -1) != -1:
                continue
            a, b = add.inputs
            if a.shape is None or b.shape is None or a.shape != b.shape or norm.inputs[0].is_graph_output():
                continue
            epsilon = norm.attributes.get_float("epsilon", 1e-5)
            skip = ir.node("SkipSimplifiedLayerNormalization", [a, b, norm.inputs[1]], attributes={"epsilon": epsilon},
                           domain=MS, num_outputs=4, name=f"{norm.name}/skip")
            graph.insert_before(norm, skip)
            y, _, _, total = skip.outputs
            y.dtype, y.shape = norm.outputs[0].dtype, norm.outputs[0].shape
            total.dtype, total.shape = add.outputs[0].dtype, add.outputs[0].shape
            ir.convenience.replace_all_uses_with(norm.outputs[0], y)
            ir.convenience.replace_all_uses_with(add.outputs[0], total)
            fused += 1
        if fused:
            model.opset_imports.setdefault(MS, 1)
        return ir.passes.PassResult(model, modified=fused > 0)
