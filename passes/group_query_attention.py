"""Attention with a KV cache as one ONNX Runtime GroupQueryAttention node per layer.

The exporter writes each layer's attention as about thirty nodes: the new keys and values are concatenated to
the past, repeated to the query heads (Unsqueeze, Expand, Reshape), and transposed in and out of the standard
Attention op. At decode time those small nodes, not arithmetic, dominate a small model's step. ONNX Runtime's
``com.microsoft.GroupQueryAttention`` (CPU, CUDA and WebGPU kernels) appends to the cache and shares the kv heads
itself; rotary embeddings move to the [batch, sequence, heads * head_dim] layout GroupQueryAttention reads.

The exporter's boolean mask (causal + padding + sliding window) becomes the op's additive ``attention_bias``, and
every row is given the full total length, so left-padded batches and sliding windows keep their meaning. The
graph then reads the past length from the masks (total minus new tokens), never from the cache tensors, so a
runtime may bind fixed-capacity cache buffers that GroupQueryAttention extends in place (``kv_buffers``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from glass_onnx.passes.values import constant, graph_input
from glass_onnx.runtime.protocol import ATTENTION_MASK, INPUT_IDS

MS = "com.microsoft"
MASKED = float(np.finfo(np.float32).min)  # finite: a fully masked (padding) row stays NaN-free
# model metadata the pass leaves for the exporter's manifest (a pass returns its facts in the model)
ATTENTION = "glass.attention"  # "GroupQueryAttention" once a layer is rewritten
KV_BUFFERS = "glass.kv_buffers"  # "true" when a runtime may bind fixed-capacity cache buffers, else "false"


@dataclasses.dataclass
class CacheConcat:
    """The exporter's cache update: Concat(past, new) along the sequence axis."""

    concat: ir.Node
    past: ir.Value  # a graph input [batch, kv_heads, past_sequence, head_dim]
    new: ir.Value  # this call's keys or values [batch, kv_heads, sequence, head_dim]


@dataclasses.dataclass
class CachedAttention:
    """A standard Attention over a concatenated KV cache, with the head counts GroupQueryAttention needs."""

    node: ir.Node
    keys: CacheConcat
    values: CacheConcat
    heads: int
    kv_heads: int
    head_dim: int


def producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    """The standard-domain ``op_type`` node producing ``value``, or None."""
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type and node.domain == "" else None


def _cache_concat(value: ir.Value) -> CacheConcat | None:
    """The cache Concat(past, new) that ``value`` is, possibly repeated to the query heads by Unsqueeze -> Expand ->
    Reshape, or None."""
    reshape = producer(value, "Reshape")
    if reshape is not None:
        expand = producer(reshape.inputs[0], "Expand")
        unsqueeze = producer(expand.inputs[0], "Unsqueeze") if expand is not None else None
        if unsqueeze is None:
            return None
        value = unsqueeze.inputs[0]
    concat = producer(value, "Concat")
    if concat is None or len(concat.inputs) != 2 or concat.attributes.get_int("axis", 0) not in (2, -2):
        return None
    past, new = concat.inputs
    return CacheConcat(concat, past, new) if past is not None and past.is_graph_input() else None


def _known(shape: ir.Shape | None) -> bool:
    """Every dim a number or a named symbol, so that equal shapes are the same shape."""
    return shape is not None and all(isinstance(d, int) or d.value is not None for d in shape)


def is_head_split(node: ir.Node | None) -> bool:
    """Transpose(perm 0 2 1 3) of a 4-d tensor: [batch, seq, heads, dim] <-> [batch, heads, seq, dim]."""
    return node is not None and node.op_type == "Transpose" and node.domain == "" and \
        list(node.attributes.get_ints("perm", [])) == [0, 2, 1, 3]


class GroupQueryAttentionPass(ir.passes.InPlacePass):
    """Rewrites every standard ``Attention`` that reads a concatenated KV cache into GroupQueryAttention.

    Guarantees: graph inputs and outputs are unchanged (``present.*`` keep their names, shapes and meaning);
    logits equal the original graph's up to float rounding, for any batch, padding, prompt chunking and sliding
    window the mask encodes; a soft cap (Gemma-2) carries over. An Attention not fed by a Concat(past, new) cache,
    or with an option GroupQueryAttention lacks (qk output modes), is left as it is. When a layer is rewritten the
    model's metadata says so (``glass.attention``) and whether the cache inputs may be fixed-capacity buffers
    (``glass.kv_buffers``: every cache input is read only by GroupQueryAttention and for its batch size).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        mask_input = graph_input(graph, ATTENTION_MASK)
        attentions = [n for n in graph if n.op_type == "Attention" and n.domain == ""]
        if mask_input is None or not attentions:
            return ir.passes.PassResult(model, modified=False)
        lengths, biases, fused = None, {}, 0
        for node in attentions:
            match = self._match(node)
            if match is None:
                continue
            if lengths is None:
                lengths = self._lengths(graph, mask_input, node)
            mask = node.inputs[3]
            if id(mask) not in biases:
                biases[id(mask)] = self._bias(graph, mask, node)
            self._rewrite(graph, match, *lengths, biases[id(mask)])
            fused += 1
        if fused:
            model.opset_imports.setdefault(MS, 1)
            RemoveUnusedNodesPass()(model)  # the replaced Concat chains still read the cache inputs
            model.metadata_props[ATTENTION] = "GroupQueryAttention"
            model.metadata_props[KV_BUFFERS] = str(self._past_length_from_masks(graph, mask_input)).lower()
        return ir.passes.PassResult(model, modified=fused > 0)

    @classmethod
    def _past_length_from_masks(cls, graph: ir.Graph, mask: ir.Value) -> bool:
        """Rewrites Shape(past)[2] (the exporter's past length) as width(attention_mask) - width(input_ids)."""
        ids = graph_input(graph, INPUT_IDS)
        pasts = [v for v in graph.inputs if any(u.node.op_type == "GroupQueryAttention" for u in v.uses())]
        if ids is None or not pasts:
            return False
        length = None
        for past in pasts:
            for use in list(past.uses()):
                node = use.node
                if node.op_type == "GroupQueryAttention":
                    continue
                if node.op_type != "Shape":
                    return False  # read some other way: leave the cache tensors' shape meaningful
                start = node.attributes.get_int("start", 0)
                end = node.attributes.get_int("end", 4) if "end" in node.attributes else 4
                start, end = start + 4 if start < 0 else start, min(end + 4 if end < 0 else end, 4)
                if not start <= 2 < end:
                    continue  # batch, heads or head size: the same in a buffer
                if length is None:
                    length = cls._length_nodes(graph, mask, ids, next(iter(graph)))
                pieces = []
                for lo, hi in ((start, 2), (3, end)):
                    if lo < hi:
                        piece = ir.node("Shape", [past], attributes={"start": lo, "end": hi})
                        graph.insert_before(node, piece)
                        pieces.append(piece.outputs[0])
                    if lo == start:
                        pieces.append(length)
                joined = ir.node("Concat", pieces, attributes={"axis": 0}) if len(pieces) > 1 else None
                if joined is not None:
                    graph.insert_before(node, joined)
                ir.convenience.replace_all_uses_with(node.outputs[0], joined.outputs[0] if joined else length)
        return True

    @staticmethod
    def _length_nodes(graph: ir.Graph, mask: ir.Value, ids: ir.Value, before: ir.Node) -> ir.Value:
        total = ir.node("Shape", [mask], attributes={"start": 1, "end": 2}, name="glass/past_length/total")
        new = ir.node("Shape", [ids], attributes={"start": 1, "end": 2}, name="glass/past_length/new")
        past = ir.node("Sub", [total.outputs[0], new.outputs[0]], name="glass/past_length/Sub")
        past.outputs[0].name = "glass.past_length"
        graph.insert_before(before, [total, new, past])
        return past.outputs[0]

    @staticmethod
    def _match(node: ir.Node) -> CachedAttention | None:
        if len(node.inputs) != 4 or node.inputs[3] is None or len(node.outputs) != 1:
            return None  # no mask (would need is_causal semantics) or already has a cache of its own
        if node.attributes.get_int("qk_matmul_output_mode", 0) != 0:
            return None
        q, k, v = node.inputs[:3]
        keys, values = _cache_concat(k), _cache_concat(v)
        if keys is None or values is None or q.shape is None or keys.new.shape is None or len(q.shape) != 4:
            return None
        heads, kv_heads, head_dim = q.shape[1], keys.new.shape[1], q.shape[3]
        if not all(isinstance(d, int) for d in (heads, kv_heads, head_dim)) or heads % kv_heads:
            return None
        return CachedAttention(node, keys, values, heads, kv_heads, head_dim)

    @staticmethod
    def _lengths(graph: ir.Graph, mask: ir.Value, before: ir.Node) -> tuple[ir.Value, ir.Value]:
        """seqlens_k [batch] and total_sequence_length [] (int32): every row spans the mask's full width, so
        GroupQueryAttention never treats left padding as right padding; the bias masks the padding."""
        one, zero = constant([1]), constant([0])
        shape = ir.node("Shape", [mask])
        total = ir.node("Gather", [shape.outputs[0], one.outputs[0]], attributes={"axis": 0})  # [1]
        batch = ir.node("Gather", [shape.outputs[0], zero.outputs[0]], attributes={"axis": 0})  # [1]
        last = ir.node("Sub", [total.outputs[0], one.outputs[0]])
        rows = ir.node("Expand", [last.outputs[0], batch.outputs[0]])
        seqlens = ir.node("Cast", [rows.outputs[0]], attributes={"to": ir.DataType.INT32})
        scalar = ir.node("Squeeze", [total.outputs[0]])
        total32 = ir.node("Cast", [scalar.outputs[0]], attributes={"to": ir.DataType.INT32})
        nodes = [one, zero, shape, total, batch, last, rows, seqlens, scalar, total32]
        for i, n in enumerate(nodes):
            n.name = f"glass/attention_lengths/{n.op_type}_{i}"
        graph.insert_before(before, nodes)
        seqlens.outputs[0].name, total32.outputs[0].name = "glass.seqlens_k", "glass.total_sequence_length"
        return seqlens.outputs[0], total32.outputs[0]

    @staticmethod
    def _bias(graph: ir.Graph, mask: ir.Value, before: ir.Node) -> ir.Value:
        """The additive float bias for a mask; a float mask already is one."""
        if mask.dtype != ir.DataType.BOOL:
            return mask
        zero, low = constant(np.array(0.0, np.float32)), constant(np.array(MASKED, np.float32))
        where = ir.node("Where", [mask, zero.outputs[0], low.outputs[0]])
        for i, n in enumerate((zero, low, where)):
            n.name = f"glass/attention_bias/{n.op_type}_{i}_{mask.name}"
        graph.insert_before(before, [zero, low, where])
        return where.outputs[0]

    @staticmethod
    def _to_bsh(graph: ir.Graph, value: ir.Value, heads: int, before: ir.Node, name: str) -> ir.Value:
        """[batch, heads, seq, dim] -> [batch, seq, heads * dim], reusing the exporter's layout where it can:
        a rotary embedding on Transpose(Reshape(x)) is applied to x itself (RotaryEmbedding reads 3-d input)."""
        rotary = producer(value, "RotaryEmbedding")
        split = rotary.inputs[0].producer() if rotary is not None else value.producer()
        if is_head_split(split) and (reshape := producer(split.inputs[0], "Reshape")) is not None and \
                reshape.inputs[0].shape is not None and len(reshape.inputs[0].shape) == 3:
            flat = reshape.inputs[0]
            if rotary is None:
                return flat
            if not rotary.attributes.get_int("rotary_embedding_dim", 0) and len(rotary.inputs) == 3:
                attributes = {"interleaved": rotary.attributes.get_int("interleaved", 0), "num_heads": heads}
                node = ir.node("RotaryEmbedding", [flat, *rotary.inputs[1:]], attributes=attributes,
                               name=f"{name}/rotary")
                graph.insert_before(before, node)
                return node.outputs[0]
        transpose = ir.node("Transpose", [value], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}/to_bsd")
        shape = constant([0, 0, -1], f"{name}/bsh_shape")
        reshape = ir.node("Reshape", [transpose.outputs[0], shape.outputs[0]], name=f"{name}/to_bsh")
        graph.insert_before(before, [transpose, shape, reshape])
        return reshape.outputs[0]

    def _rewrite(self, graph: ir.Graph, match: CachedAttention, seqlens: ir.Value, total: ir.Value,
                 bias: ir.Value) -> None:
        node, heads, head_dim = match.node, match.heads, match.head_dim
        name = node.name or "attention"
        q = self._to_bsh(graph, node.inputs[0], heads, node, f"{name}/q")
        k = self._to_bsh(graph, match.keys.new, match.kv_heads, node, f"{name}/k")
        v = self._to_bsh(graph, match.values.new, match.kv_heads, node, f"{name}/v")
        scale = node.attributes.get_float("scale", 1.0 / float(np.sqrt(head_dim)))
        attributes = {"num_heads": heads, "kv_num_heads": match.kv_heads, "scale": scale}
        softcap = node.attributes.get_float("softcap", 0.0)
        if softcap:  # the same meaning in both ops: applied to the scaled scores, before the mask is added
            attributes["softcap"] = softcap
        gqa = ir.node(
            "GroupQueryAttention",
            [q, k, v, match.keys.past, match.values.past, seqlens, total, None, None, None, bias],
            attributes=attributes, domain=MS, num_outputs=3, name=f"{name}/GroupQueryAttention")
        graph.insert_before(node, gqa)
        out, present_key, present_value = gqa.outputs
        out.dtype = node.outputs[0].dtype
        out.shape = ir.Shape([q.shape[0], q.shape[1], heads * head_dim]) if q.shape is not None else None
        for present, cache in ((present_key, match.keys), (present_value, match.values)):
            old = cache.concat.outputs[0]
            present.dtype, present.shape = old.dtype, old.shape
            name_, old.name = old.name, f"{old.name}.unfused"
            present.name = name_
            ir.convenience.replace_all_uses_with(old, present, replace_graph_outputs=True)
        merged = self._merged_heads(node.outputs[0])
        if merged is not None:  # the exporter's Transpose -> Reshape back to [batch, seq, hidden]: GQA's own layout
            ir.convenience.replace_all_uses_with(merged, out)
            return
        shape = constant([0, 0, heads, head_dim], f"{name}/bshd_shape")
        split = ir.node("Reshape", [out, shape.outputs[0]], name=f"{name}/to_bshd")
        back = ir.node("Transpose", [split.outputs[0]], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}/to_bhsd")
        graph.insert_before(node, [shape, split, back])
        back.outputs[0].dtype, back.outputs[0].shape = node.outputs[0].dtype, node.outputs[0].shape
        ir.convenience.replace_all_uses_with(node.outputs[0], back.outputs[0])

    @staticmethod
    def _merged_heads(value: ir.Value) -> ir.Value | None:
        """The [batch, seq, heads * dim] value the exporter makes of an attention output, if it does (through a
        Reshape to the same shape first, as Phi-3's and StableLM's exports have it)."""
        uses = list(value.uses())
        if len(uses) == 1 and uses[0].node.op_type == "Reshape" and not value.is_graph_output() and \
                _known(value.shape) and uses[0].node.outputs[0].shape == value.shape:
            value = uses[0].node.outputs[0]
            uses = list(value.uses())
        if len(uses) != 1 or not is_head_split(uses[0].node) or value.is_graph_output():
            return None
        transposed = uses[0].node.outputs[0]
        after = list(transposed.uses())
        if len(after) != 1 or after[0].node.op_type != "Reshape" or transposed.is_graph_output():
            return None
        merged = after[0].node.outputs[0]
        return merged if merged.shape is not None and len(merged.shape) == 3 else None
