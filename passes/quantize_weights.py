"""Block-wise 4-bit weights, as onnxruntime-genai builds them: every MatMul on a constant weight becomes ONNX Runtime's
``com.microsoft.MatMulNBits``, and a token embedding that the LM head is tied to becomes a ``GatherBlockQuantized``
over the very same 4-bit data (one copy, as genai's ``shared_embeddings``).

The quantiser is ONNX Runtime's own (``MatMulNBitsQuantizer``'s MLAS routine, symmetric, blocks along K), so a weight
quantises exactly as genai's int4 build quantises it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from glass_onnx.passes.group_query_attention import MS
from glass_onnx.passes.values import constant, initializer

WEIGHTS = "glass.weights"  # model metadata: "int4", once the pass ran


@dataclasses.dataclass(frozen=True)
class Int4Settings:
    block_size: int = 32  # weights per scale, along K
    accuracy_level: int = 4  # MatMulNBits computes with int8-quantised activations on CPU (genai's CPU default)

    def describe(self) -> dict:
        """The manifest's ``quantization``: what the weights are and which quantiser made them."""
        return {"bits": 4, "block_size": self.block_size, "symmetric": True, "accuracy_level": self.accuracy_level,
                "quantizer": "onnxruntime MatMulNBitsQuantizer (MLAS)"}


def quantize_int4(weight: np.ndarray, settings: Int4Settings) -> tuple[np.ndarray, np.ndarray]:
    """A float weight [K, N] (y = x @ weight) as MatMulNBits' B: uint8 [N, K / block, block / 2] and scales
    [N, K / block], by ONNX Runtime's quantiser (symmetric: the zero point is the implicit 8)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=settings.block_size, is_symmetric=True,
                                          accuracy_level=settings.accuracy_level)
    packed, scales, _ = DefaultWeightOnlyQuantizer(config).qbits_block_quant(np.ascontiguousarray(weight, np.float32))
    return packed, scales


def dequantize_int4(packed: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The float weight [K, N] that MatMulNBits' B and scales stand for (the inverse of ``quantize_int4``)."""
    low, high = packed & 0x0F, packed >> 4
    codes = np.stack([low, high], axis=-1).reshape(packed.shape[0], packed.shape[1], -1).astype(np.float32) - 8
    return (codes * scales[..., None]).reshape(packed.shape[0], -1)[:, :k].T


def _constant_weight(value: ir.Value | None) -> tuple[np.ndarray, ir.Value] | None:
    """(weight [K, N], the initializer it comes from) for a constant 2-D MatMul weight, read through a Transpose of an
    initializer (the exporter's tied LM head)."""
    if value is None:
        return None
    node = value.producer()
    if node is not None and node.op_type == "Transpose" and node.domain == "" and len(node.inputs) == 1:
        source = node.inputs[0]
        if source.const_value is not None and len(source.shape or ()) == 2:
            return source.const_value.numpy().T, source
        return None
    if value.const_value is not None and len(value.shape or ()) == 2:
        return value.const_value.numpy(), value
    return None


def _replace(graph: ir.Graph, old: ir.Node, new: list[ir.Node]) -> None:
    """Put ``new`` where ``old`` was; the last new node's output takes over the old output's readers and name."""
    graph.insert_before(old, new)
    before, after = old.outputs[0], new[-1].outputs[0]
    after.dtype, after.shape = before.dtype, before.shape
    ir.convenience.replace_all_uses_with(before, after, replace_graph_outputs=True)
    name, before.name = before.name, f"{before.name}.float"
    after.name = name
    graph.remove(old, safe=True)


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Rewrites MatMul(x, W) with a constant 2-D W [K, N] (K a multiple of the block size) into MatMulNBits(x, B,
    scales), and Gather(E, ids) with E the initializer a quantised MatMul read transposed into GatherBlockQuantized on
    that MatMul's B; records ``glass.weights = int4`` in the model's metadata.

    Guarantees: graph inputs and outputs are unchanged; each rewritten MatMul computes x @ dequantize_int4(B, scales),
    ONNX Runtime's int4 rounding of W; other nodes are left as they are.
    """

    def __init__(self, settings: Int4Settings = Int4Settings()):
        super().__init__()
        self.settings = settings

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph, s = model.graph, self.settings
        tied: dict[int, tuple[ir.Value, ir.Value]] = {}  # id(initializer read transposed) -> (B, scales)
        count = 0
        for node in [n for n in graph if n.op_type == "MatMul" and n.domain == ""]:
            found = _constant_weight(node.inputs[1])
            if found is None or found[0].shape[0] % s.block_size:
                continue
            weight, source = found
            k, n = weight.shape
            packed, scales = quantize_int4(weight, s)
            name = source.name or f"weight_{count}"
            b = initializer(graph, f"{name}.int4", packed)
            scale = initializer(graph, f"{name}.int4_scales", scales.astype(np.float32))
            if source is not node.inputs[1]:
                tied[id(source)] = (b, scale)
            rewritten = ir.node("MatMulNBits", [node.inputs[0], b, scale], domain=MS, name=node.name,
                                attributes={"K": k, "N": n, "bits": 4, "block_size": s.block_size,
                                            "accuracy_level": s.accuracy_level})
            _replace(graph, node, [rewritten])
            count += 1
        for node in [n for n in graph if n.op_type == "Gather" and n.domain == ""]:
            data = node.inputs[0]
            if data is None or id(data) not in tied or node.attributes.get_int("axis", 0) != 0:
                continue
            b, scale = tied[id(data)]
            rows = constant([b.shape[0], b.shape[1] * b.shape[2]], f"{node.name}/packed_rows")
            flat = ir.node("Reshape", [b, rows.outputs[0]], name=f"{node.name}/packed")
            gather = ir.node("GatherBlockQuantized", [flat.outputs[0], node.inputs[1], scale], domain=MS,
                             name=node.name, attributes={"bits": 4, "block_size": s.block_size, "gather_axis": 0,
                                                         "quantize_axis": 1})
            _replace(graph, node, [rows, flat, gather])
        if count:
            model.opset_imports.setdefault(MS, 1)
            model.metadata_props[WEIGHTS] = "int4"
            from onnx_ir.passes.common import RemoveUnusedNodesPass

            RemoveUnusedNodesPass()(model)
            for name in [n for n, v in graph.initializers.items() if not v.uses() and not v.is_graph_input()]:
                graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=count > 0)
