"""Give the exporter's symbolic dims (s44, s70, ...) the names a reader expects: batch, sequence, ..."""

from __future__ import annotations

import re

import onnx_ir as ir


class NameDynamicDimsPass(ir.passes.InPlacePass):
    """Renames symbolic dims of the decoder's inputs and outputs by their role.

    Guarantees: only dim names change, consistently across all inputs and outputs: input_ids/position_ids
    [batch, sequence]; attention_mask [batch, total_sequence]; past KV [batch, kv_heads, past_sequence, head_dim];
    present KV [batch, kv_heads, total_sequence, head_dim]; logits [batch, sequence, vocab].
    """

    ROLES = (
        (r"^(input_ids|position_ids)$", {0: "batch", 1: "sequence"}),
        (r"^attention_mask$", {0: "batch", 1: "total_sequence"}),
        (r"^past_key_values\.\d+\.(key|value)$", {0: "batch", 2: "past_sequence"}),
        (r"^present\.\d+\.(key|value)$", {0: "batch", 2: "total_sequence"}),
        (r"^logits$", {0: "batch", 1: "sequence"}),
    )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for value in [*model.graph.inputs, *model.graph.outputs]:
            for pattern, dims in self.ROLES:
                if value.shape is None or not re.match(pattern, value.name or ""):
                    continue
                shape = list(value.shape)
                for axis, name in dims.items():
                    if axis < len(shape) and not isinstance(shape[axis], int):
                        shape[axis] = ir.SymbolicDim(name)
                        modified = True
                value.shape = ir.Shape(shape)
        return ir.passes.PassResult(model, modified=modified)
