"""The int4 fast layout's per-prompt decoder: every FFN's MatMulNBits read compact 4-bit weights of the prompt's kept
neuron blocks only.

MatMulNBits runs its fast path only on weights it has prepacked, which ONNX Runtime does for constant initializers
when a session is created. So the compact weights are initializers whose data a runtime supplies from memory as it
creates this session for a prompt (their external-data location is ``per-prompt``, never a file), and the rest of
the graph is the dense int4 decoder, its weights read from the artifact's weights file (BENCHMARKS.md, int4 design
study: why a session per prompt).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.passes.glass_math import layer_budgets
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import COMPACT_INT4, PER_PROMPT


def per_prompt_tensor(name: str, dtype: ir.DataType, shape: list[int]) -> ir.ExternalTensor:
    """A tensor whose data a runtime supplies when it creates the session."""
    length = int(np.prod(shape)) * dtype.itemsize
    return ir.ExternalTensor(PER_PROMPT, 0, length, dtype, shape=ir.Shape(shape), name=name)


class CompactInt4FFNPass(ir.passes.InPlacePass):
    """Points every int4 FFN at compact per-prompt weights of k neurons (whole 32-neuron blocks; k may differ by
    layer), named by
    ``protocol.COMPACT_INT4``: gate and up as one MatMulNBits on B [2k, H / 32, 16] and scales [2k, H / 32] (the kept
    neurons' gate rows, then their up rows) split in two, down on B [H, k / 32, 16] and scales [H, k / 32] (its kept
    blocks); the full FFN weights leave the graph.

    Guarantees: bound to those slices, every FFN computes the dense int4 FFN restricted to the kept neurons; graph
    inputs and outputs are unchanged.
    """

    def __init__(self, k):
        super().__init__()
        self.k = k  # one number, or one per layer

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        budgets = layer_budgets(self.k, len(ffns))
        if not all(ffn.int4 for ffn in ffns) or any(k % 32 for k in budgets):
            raise GlassError("the per-prompt int4 decoder needs int4 FFNs and whole 32-neuron blocks")
        order = {node: i for i, node in enumerate(graph)}
        for ffn in ffns:
            hidden, k, layer = ffn.gate.k, budgets[ffn.layer], ffn.layer
            gate, up, down = ffn.nodes[0], ffn.nodes[1], ffn.nodes[-1]

            def weight(part: str, dtype: ir.DataType, shape: list[int], layer: int = layer) -> ir.Value:
                name = COMPACT_INT4[part].format(layer=layer)
                value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype),
                                 const_value=per_prompt_tensor(name, dtype, shape))
                graph.register_initializer(value)
                return value

            attributes = {name: a.value for name, a in gate.attributes.items()}
            attributes["N"] = 2 * k
            both = ir.node("MatMulNBits", [ffn.x, weight("gate_up_q", ir.DataType.UINT8, [2 * k, hidden // 32, 16]),
                                           weight("gate_up_scales", ir.DataType.FLOAT, [2 * k, hidden // 32])],
                           attributes=attributes, domain=gate.domain, name=f"glass/layers.{layer}/gate_up")
            split = ir.node("Split", [both.outputs[0]], attributes={"axis": -1, "num_outputs": 2}, num_outputs=2,
                            name=f"glass/layers.{layer}/gate_up_split")
            graph.insert_before(min(gate, up, key=order.__getitem__), [both, split])
            for old, new in ((gate.outputs[0], split.outputs[0]), (up.outputs[0], split.outputs[1])):
                new.dtype = old.dtype
                ir.convenience.replace_all_uses_with(old, new)
            graph.remove([gate, up], safe=True)
            down.replace_input_with(1, weight("down_q", ir.DataType.UINT8, [hidden, k // 32, 16]))
            down.replace_input_with(2, weight("down_scales", ir.DataType.FLOAT, [hidden, k // 32]))
            down.attributes["K"] = ir.AttrInt64("K", k)
            for value in (out for node in ffn.nodes[2:-1] for out in node.outputs):  # [.., I] -> [.., k]
                value.shape = None
        for name in [n for n, v in graph.initializers.items() if not v.uses()]:
            graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=True)
