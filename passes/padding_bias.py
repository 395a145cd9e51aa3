"""A causal-and-padding attention mask replaced by a padding-only bias: GroupQueryAttention is causal itself.

The exporter builds the attention mask from the attention mask input, the cache length and the new tokens'
positions: about 35 small nodes that run at every decode step. GroupQueryAttention already hides the future, so
where the mask means exactly "causal, and not a padding column", a bias that hides the padding columns is enough
(six nodes).

The meaning is checked, not read off the graph's shape: the mask's subgraph runs on probes (a left-padded prompt,
a chunk after it, a decode step, and a decode step at the last position of the context, which shows any sliding
window) and must equal that rule on every query that is not itself padding (padding queries' outputs are read by
nobody). A mask that differs (a sliding window, a bidirectional prefix, ...) stays as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from glass_onnx.passes.group_query_attention import MASKED, MS
from glass_onnx.passes.subgraph_eval import Subgraph
from glass_onnx.passes.values import constant, graph_input
from glass_onnx.runtime.protocol import ATTENTION_MASK, INPUT_IDS, POSITION_IDS

PADDING = 2  # left padding of the first probe row


def _probes(max_positions: int) -> list[tuple[int, int]]:
    """(past, new tokens) per probe: a prompt, a chunk, a decode step, a decode step at the end of the context."""
    return [(0, 6), (6, 3), (9, 1), (max_positions - 1, 1)]


def _probe_mask(past: int, new: int) -> np.ndarray:
    """The attention mask of a probe: batch 2, the first row left-padded."""
    mask = np.ones((2, past + new), np.int64)
    mask[0, :PADDING] = 0
    return mask


def _feeds(graph: ir.Graph, names: set[str], past: int, new: int) -> dict | None:
    """Inputs for one probe, or None for an input this pass cannot make."""
    mask = _probe_mask(past, new)
    feeds = {}
    for value in graph.inputs:
        if value.name not in names:
            continue
        if value.name == ATTENTION_MASK:
            feeds[value.name] = mask
        elif value.name == INPUT_IDS:
            feeds[value.name] = np.zeros((2, new), np.int64)
        elif value.name == POSITION_IDS:
            feeds[value.name] = (np.cumsum(mask, axis=1) - 1).clip(min=0)[:, -new:]
        elif value.shape is not None and len(value.shape) == 4 and all(isinstance(d, int) for d in value.shape[1::2]):
            feeds[value.name] = np.zeros((2, value.shape[1], past, value.shape[3]), np.float32)  # a KV cache
        else:
            return None
    return feeds


def _causal_and_padding(bias: np.ndarray, past: int, new: int) -> bool:
    total = past + new
    mask = _probe_mask(past, new).astype(bool)
    try:
        bias = np.broadcast_to(bias, (2, 1, new, total))
    except ValueError:
        return False
    visible = mask[:, None, None, :] & (np.arange(total) <= past + np.arange(new)[:, None])[None, None]
    real_queries = mask[:, past:][:, None, :, None]
    hidden = bias <= MASKED / 2
    return bool(np.all(((bias == 0) & visible | hidden & ~visible) | ~real_queries))


class PaddingBiasPass(ir.passes.InPlacePass):
    """Gives every GroupQueryAttention whose ``attention_bias`` means causal-and-padding the bias Where(attention_mask,
    0, MASKED) broadcast over the queries.

    Guarantees: graph inputs and outputs are unchanged; a mask is replaced only if it equals the causal-and-padding
    rule on every probe (module docstring), so non-padding queries attend to the same keys as before; any other
    mask is kept.
    """

    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        biases = {}
        for node in graph:
            if node.op_type == "GroupQueryAttention" and node.domain == MS and len(node.inputs) > 10 and \
                    node.inputs[10] is not None:
                biases.setdefault(id(node.inputs[10]), node.inputs[10])
        mask, ids = graph_input(graph, ATTENTION_MASK), graph_input(graph, INPUT_IDS)
        if not biases or mask is None or ids is None:
            return ir.passes.PassResult(model, modified=False)
        padding_bias, replaced = None, 0
        for bias in biases.values():
            if not self._means_causal_and_padding(model, bias):
                continue
            if padding_bias is None:
                padding_bias = self._padding_bias(graph, mask, ids, bias.dtype)
            for use in list(bias.uses()):
                if use.node.op_type == "GroupQueryAttention" and use.node.domain == MS and use.idx == 10:
                    use.node.replace_input_with(use.idx, padding_bias)
            replaced += 1
        if replaced:
            RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=replaced > 0)

    def _means_causal_and_padding(self, model: ir.Model, bias: ir.Value) -> bool:
        subgraph = Subgraph(model, [bias])
        for past, new in _probes(self.max_positions):
            feeds = _feeds(model.graph, subgraph.inputs, past, new)
            if feeds is None or not _causal_and_padding(subgraph(feeds)[0], past, new):
                return False
        return True

    @staticmethod
    def _padding_bias(graph: ir.Graph, mask: ir.Value, ids: ir.Value, dtype: ir.DataType | None) -> ir.Value:
        dtype = dtype or ir.DataType.FLOAT  # GroupQueryAttention's bias has the query's type: float unless stated
        np_dtype = dtype.numpy()
        zero, low = constant(np.array(0, np_dtype)), constant(np.array(MASKED, np_dtype))
        axes, one = constant([1, 2]), constant([1])
        real = ir.node("Cast", [mask], attributes={"to": ir.DataType.BOOL})
        columns = ir.node("Where", [real.outputs[0], zero.outputs[0], low.outputs[0]])  # [batch, total]
        rows = ir.node("Unsqueeze", [columns.outputs[0], axes.outputs[0]])  # [batch, 1, 1, total]
        new = ir.node("Shape", [ids], attributes={"start": 1, "end": 2})
        shape = ir.node("Concat", [one.outputs[0], one.outputs[0], new.outputs[0], one.outputs[0]],
                        attributes={"axis": 0})
        bias = ir.node("Expand", [rows.outputs[0], shape.outputs[0]])  # [batch, 1, new, total]
        nodes = [zero, low, axes, one, real, columns, rows, new, shape, bias]
        for i, n in enumerate(nodes):
            n.name = f"glass/padding_bias/{n.op_type}_{i}"
        graph.insert_before(next(iter(graph)), nodes)
        bias.outputs[0].name = "glass.padding_bias"
        bias.outputs[0].dtype = dtype
        return bias.outputs[0]
