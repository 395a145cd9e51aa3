"""Residual Add + normalisation as one ONNX Runtime Skip*Normalization node.

Twice per decoder layer a residual is added and the sum normalised. ONNX Runtime's
``com.microsoft.SkipSimplifiedLayerNormalization`` (after RMSNormalization) and ``SkipLayerNormalization`` (after
LayerNormalization: StableLM) have CPU, CUDA, DirectML and WebGPU kernels and return both the normalised sum and the
sum itself, so each pair becomes one node: at decode time a small model's step is bounded by its node count as much
as by its arithmetic (BENCHMARKS.md).
"""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes.group_query_attention import MS

# the norm -> its fused form, which takes (a, b, scale[, bias]) as the norm takes (a + b, scale[, bias])
FUSED = {"RMSNormalization": "SkipSimplifiedLayerNormalization", "LayerNormalization": "SkipLayerNormalization"}


class SkipNormPass(ir.passes.InPlacePass):
    """Fuses RMSNormalization(Add(a, b), scale [hidden]) over the last axis, where a and b have the same shape, into
    SkipSimplifiedLayerNormalization(a, b, scale), and LayerNormalization(Add(a, b), scale [hidden], bias [hidden])
    into SkipLayerNormalization(a, b, scale, bias); later readers of the sum read the fused node's fourth output.

    Guarantees: graph inputs and outputs are unchanged and every value equals the original's up to float
    rounding. An Add that broadcasts, is a graph output, or a norm over other axes is left as it is.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        count = 0
        for norm in [n for n in graph if n.op_type in FUSED and n.domain == ""]:
            add = norm.inputs[0].producer() if norm.inputs[0] is not None else None
            if add is None or add.op_type != "Add" or add.domain != "" or not self._fusable(norm, add):
                continue
            op = FUSED[norm.op_type]
            fused = ir.node(op, [add.inputs[0], add.inputs[1], *norm.inputs[1:]],
                            attributes={"epsilon": norm.attributes.get_float("epsilon", 1e-5)}, domain=MS,
                            num_outputs=4, name=f"{norm.name or 'norm'}/{op}")
            graph.insert_before(norm, fused)
            normed, total = fused.outputs[0], fused.outputs[3]
            for new, old in ((normed, norm.outputs[0]), (total, add.outputs[0])):
                new.dtype, new.shape = old.dtype, old.shape
                ir.convenience.replace_all_uses_with(old, new)
            graph.remove([norm, add], safe=True)
            count += 1
        if count:
            model.opset_imports.setdefault(MS, 1)
            graph.sort()  # a reader of the sum placed between the Add and its norm now follows the fused node
        return ir.passes.PassResult(model, modified=count > 0)

    @staticmethod
    def _fusable(norm: ir.Node, add: ir.Node) -> bool:
        a, b = add.inputs
        scale = norm.inputs[1] if len(norm.inputs) > 1 else None
        if a is None or b is None or a.shape is None or b.shape is None or scale is None:
            return False
        # the fused ops take a [hidden] gamma (and beta) only
        if any(p is not None and (p.shape is None or len(p.shape) != 1) for p in norm.inputs[1:]):
            return False
        if list(a.shape) != list(b.shape) or add.outputs[0].is_graph_output() or norm.outputs[0].is_graph_output():
            return False
        axis = norm.attributes.get_int("axis", -1)
        return axis in (-1, len(a.shape) - 1) and norm.attributes.get_int("stash_type", 1) == 1
