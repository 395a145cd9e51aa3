"""One matmul for a layer's query, key and value projections, where GroupQueryAttention reads them."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import is_constant


def _projection(value: ir.Value) -> ir.Node | None:
    """The MatMul(x, W const [H, N]) that ``value`` is, seen through a rotary embedding."""
    node = value.producer() if value is not None else None
    if node is not None and node.op_type == "RotaryEmbedding" and node.domain == "":
        node = node.inputs[0].producer()
    if node is None or node.op_type != "MatMul" or node.domain != "":
        return None
    w = node.inputs[1]
    ok = is_constant(w) and w.const_value is not None and w.shape is not None and len(w.shape) == 2
    return node if ok and len(node.outputs[0].uses()) == 1 else None


class PackQKVPass(ir.passes.InPlacePass):
    """Replaces the three projections feeding each GroupQueryAttention with one MatMul on the concatenated
    weights [H, Nq + Nk + Nv] and a Split.

    Guarantees: every output is unchanged up to float rounding (the same dot products, in one larger matmul);
    layers whose projections do not share one input or have other consumers are left as they are.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, packed = model.graph, 0
        for gqa in [n for n in graph if n.op_type == "GroupQueryAttention"]:
            projections = [_projection(v) for v in gqa.inputs[:3]]
            if None in projections or len({id(p.inputs[0]) for p in projections}) != 1:
                continue
            weights = [p.inputs[1].const_value.numpy() for p in projections]
            if len({w.shape[0] for w in weights}) != 1:
                continue
            name = f"{projections[0].inputs[1].name}.qkv"
            packed_weight = ir.Value(name=name, const_value=ir.tensor(np.concatenate(weights, axis=1), name=name),
                                     type=ir.TensorType(projections[0].inputs[1].dtype),
                                     shape=ir.Shape([weights[0].shape[0], sum(w.shape[1] for w in weights)]))
            graph.register_initializer(packed_weight)
            prefix = (gqa.name or "attention").rsplit("/", 1)[0]
            matmul = ir.node("MatMul", [projections[0].inputs[0], packed_weight], name=f"{prefix}/qkv_proj")
            sizes = ir.node("Constant", [], attributes={"value": ir.tensor(np.array([w.shape[1] for w in weights], np.int64))},
                            name=f"{prefix}/qkv_sizes")
            split = ir.node("Split", [matmul.outputs[0], sizes.outputs[0]], attributes={"axis": -1}, num_outputs=3,
                            name=f"{prefix}/qkv_split")
            first = min(projections, key=lambda p: list(graph).index(p))
            graph.insert_before(first, [matmul, sizes, split])
            for projection, part in zip(projections, split.outputs):
                part.dtype, part.shape = projection.outputs[0].dtype, projection.outputs[0].shape
                ir.convenience.replace_all_uses_with(projection.outputs[0], part)
            packed += 1
        return ir.passes.PassResult(model, modified=packed > 0)
