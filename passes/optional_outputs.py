"""Optional outputs that nothing reads, left unnamed so that kernels skip them.

An ONNX node computes every output that has a name. ``SkipSimplifiedLayerNormalization`` has two statistics
outputs (mean, inverse standard deviation) that only training reads; naming them costs a third of the op's time in a
decode step (BENCHMARKS.md). Passes that name every value (``NameFixPass``) must run before this one.
"""

from __future__ import annotations

import onnx_ir as ir

# (domain, op type) -> positions of outputs that are optional and never needed at inference
OPTIONAL_OUTPUTS = {
    ("com.microsoft", "SkipSimplifiedLayerNormalization"): (1, 2),
    ("com.microsoft", "SkipLayerNormalization"): (1, 2),
}


class OmitUnusedOutputsPass(ir.passes.InPlacePass):
    """Clears the name of every optional output in ``OPTIONAL_OUTPUTS`` that no node reads and the graph does not
    return.

    Guarantees: graph inputs, outputs and every value that is read are unchanged.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            for index in OPTIONAL_OUTPUTS.get((node.domain, node.op_type), ()):
                if index < len(node.outputs):
                    value = node.outputs[index]
                    if value.name and not value.uses() and not value.is_graph_output():
                        value.name = ""
                        modified = True
        return ir.passes.PassResult(model, modified=modified)
