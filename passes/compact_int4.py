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
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import COMPACT_INT4, PER_PROMPT


def per_prompt_tensor(name: str, dtype: ir.DataType, shape: list[int]) -> ir.ExternalTensor:
    """A tensor whose data a runtime supplies when it creates the session."""
    length = int(np.prod(shape)) * dtype.itemsize
    return ir.ExternalTensor(PER_PROMPT, 0, length, dtype, shape=ir.Shape(shape), name=name)


class CompactInt4FFNPass(ir.passes.InPlacePass):
    """Points every int4 FFN at compact per-prompt weights of k neurons (whole 32-neuron blocks): gate and up B
    [k, H / 32, 16] and scales [k, H / 32], down B [H, k / 32, 16] and scales [H, k / 32], named by
    ``protocol.COMPACT_INT4``; the full FFN weights leave the graph.

    Guarantees: bound to the kept neurons' rows of gate and up and the kept blocks of down (as the runtime slices them),
    every FFN computes the dense int4 FFN restricted to those neurons; graph inputs and outputs are unchanged.
    """

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        if not all(ffn.int4 for ffn in ffns) or self.k % 32:
            raise GlassError("the per-prompt int4 decoder needs int4 FFNs and whole 32-neuron blocks")
        for ffn in ffns:
            hidden, k = ffn.gate.k, self.k
            rows = ([k, hidden // 32, 16], [k, hidden // 32])  # gate and up: the kept neurons' rows
            shapes = {"gate": rows, "up": rows, "down": ([hidden, k // 32, 16], [hidden, k // 32])}
            nodes = {"gate": ffn.nodes[0], "up": ffn.nodes[1], "down": ffn.nodes[-1]}
            for part, (q_shape, s_shape) in shapes.items():
                node = nodes[part]
                for index, what, dtype, shape in ((1, "q", ir.DataType.UINT8, q_shape),
                                                  (2, "scales", ir.DataType.FLOAT, s_shape)):
                    name = COMPACT_INT4[f"{part}_{what}"].format(layer=ffn.layer)
                    value = ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype),
                                     const_value=per_prompt_tensor(name, dtype, shape))
                    graph.register_initializer(value)
                    node.replace_input_with(index, value)
                node.attributes["K" if part == "down" else "N"] = ir.AttrInt64("K" if part == "down" else "N", k)
            for value in (out for node in ffn.nodes[:-1] for out in node.outputs):  # [.., I] -> [.., k]
                value.shape = None
        for name in [n for n, v in graph.initializers.items() if not v.uses()]:
            graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=True)
