"""One QKV projection per layer, with the rotary embedding inside GroupQueryAttention.

After ``GroupQueryAttentionPass`` each layer still projects q, k and v with three MatMuls and rotates q and k with two
``RotaryEmbedding`` nodes fed by per-layer Cos and Sin. GroupQueryAttention reads a packed [q | k | v] query and
rotates it itself from cos/sin tables (``do_rotary``), which is how onnxruntime-genai builds the same model: four
nodes fewer per layer and one wider MatMul instead of three narrow ones (BENCHMARKS.md).

The tables are the exporter's own cos/sin subgraph evaluated with ONNX Runtime at positions 0 .. max_positions - 1,
so every scaling rule the model traced (linear, NTK, Llama-3, ...) is kept value for value.

Positions: GroupQueryAttention counts them from cache slots (slot 0 at the first prompt token of every row), not from
``position_ids``. A left-padded row's tokens thus sit ``padding`` positions further than Hugging Face numbers them,
the same shift for its queries and keys; rotary attention depends on position differences only, so its logits stay
the same (up to float rounding). ``position_ids`` is then read by nothing and leaves the graph's inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from glass_onnx.passes.group_query_attention import MS, is_head_split, producer
from glass_onnx.passes.subgraph_eval import Subgraph
from glass_onnx.passes.values import constant_ints, graph_input, initializer
from glass_onnx.runtime.protocol import INPUT_IDS, POSITION_IDS


@dataclasses.dataclass
class Projection:
    """x @ weight (+ bias), with constant weight [in, out] and bias [out]; of a fused projection (Phi-3's qkv), the
    output columns ``columns`` only."""

    x: ir.Value
    weight: ir.Value
    bias: ir.Value | None
    columns: slice = dataclasses.field(default_factory=lambda: slice(None))

    @property
    def width(self) -> int:
        return len(range(self.weight.shape[1])[self.columns])

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(weight, bias) of these columns."""
        weight = self.weight.const_value.numpy()[:, self.columns]
        return weight, None if self.bias is None else self.bias.const_value.numpy()[self.columns]


@dataclasses.dataclass
class RotaryAttention:
    """A GroupQueryAttention reading separately projected q, k, v, with q and k rotated by RotaryEmbedding."""

    gqa: ir.Node
    q: Projection
    k: Projection
    v: Projection
    head_dim: int
    rotary_dim: int  # the leading dims of each head that are rotated: head_dim, or fewer (partial rotary)
    interleaved: int
    rotary_inputs: list[ir.Value]  # cos and sin of q's rotary, then of k's


def _only_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _slice_args(node: ir.Node) -> list[list[int] | None]:
    """A Slice's constant starts, ends, axes and steps (None where absent or not constant)."""
    return [constant_ints(node.inputs[i]) if len(node.inputs) > i else None for i in range(1, 5)]


def _projection(value: ir.Value) -> Projection | None:
    """The projection ``value`` is: MatMul(x, weight) (+ bias), both constant, or a slice of its last axis; or
    None."""
    part = producer(value, "Slice")
    if part is not None:
        start, end, axes, steps = _slice_args(part)
        whole = _projection(part.inputs[0])
        last = len(whole.x.shape) - 1 if whole is not None and whole.x.shape is not None else -1
        if whole is None or whole.columns != slice(None) or start is None or end is None or \
                axes not in ([-1], [last]) or steps not in (None, [1]):
            return None
        return dataclasses.replace(whole, columns=slice(start[0], end[0]))
    add, bias = producer(value, "Add"), None
    if add is not None:
        matmul_out, bias = add.inputs
        if bias is None or bias.const_value is None or bias.shape is None or len(bias.shape) != 1 or \
                not _only_use(matmul_out):
            return None
        value = matmul_out
    matmul = producer(value, "MatMul")
    if matmul is None:
        return None
    x, weight = matmul.inputs
    if weight is None or weight.const_value is None or weight.shape is None or len(weight.shape) != 2:
        return None
    return Projection(x, weight, bias)


def _rotary(value: ir.Value) -> ir.Node | None:
    """The RotaryEmbedding producing ``value`` on 3-d input with [batch, seq, dim / 2] cos and sin, rotating whole
    heads."""
    node = producer(value, "RotaryEmbedding")
    if node is None or len(node.inputs) != 3 or node.attributes.get_int("rotary_embedding_dim", 0) or \
            node.inputs[0] is None or node.inputs[0].shape is None or len(node.inputs[0].shape) != 3:
        return None
    return node if _only_use(node.outputs[0]) and _only_use(node.inputs[0]) else None


def _unwrap(value: ir.Value | None, ops: tuple[str, str]) -> ir.Value | None:
    """x for ``value`` = ops[0](ops[1](x, ...), ...), a Reshape and a Transpose swapping axes 1 and 2 (a split of the
    last axis into heads, or the merge back); or None."""
    for op_type in ops:
        node = producer(value, op_type)
        if node is None or op_type == "Transpose" and not is_head_split(node):
            return None
        value = node.inputs[0]
    return value


@dataclasses.dataclass
class Rotation:
    """A RotaryEmbedding of a projection's output, over whole heads (``dims`` None) or over the first ``dims`` of
    each, the rest of the head passed through up to ``end``."""

    node: ir.Node
    projection: ir.Value
    dims: int | None = None
    end: int | None = None


def _partial_rotary(value: ir.Value) -> Rotation | None:
    """The Rotation when ``value``, a [batch, seq, heads * D] GroupQueryAttention input, is a projection split into
    heads with the first r dims of each head rotated, as the exporter writes partial rotary (StableLM, Phi-4-mini):
    merge(Concat(Rotary(t[..., :r]), t[..., r:end])), t = split(projection); or None."""
    concat = producer(_unwrap(value, ("Reshape", "Transpose")), "Concat")
    if concat is None or len(concat.inputs) != 2 or concat.attributes.get_int("axis", 0) not in (-1, 3):
        return None
    rotary, rest = producer(concat.inputs[0], "RotaryEmbedding"), producer(concat.inputs[1], "Slice")
    if rotary is None or rest is None or len(rotary.inputs) != 3 or \
            rotary.attributes.get_int("rotary_embedding_dim", 0):
        return None
    head = producer(rotary.inputs[0], "Slice")
    if head is None or head.inputs[0] is not rest.inputs[0]:
        return None
    (h_start, h_end, h_axes, h_steps), (r_start, r_end, r_axes, r_steps) = _slice_args(head), _slice_args(rest)
    if h_start != [0] or h_end is None or r_start != h_end or r_end is None or h_axes not in ([-1], [3]) or \
            r_axes != h_axes or h_steps not in (None, [1]) or r_steps not in (None, [1]):
        return None
    projection = _unwrap(head.inputs[0], ("Transpose", "Reshape"))
    return Rotation(rotary, projection, h_end[0], r_end[0]) if projection is not None else None


def _rotated(value: ir.Value) -> Rotation | None:
    """The rotary producing ``value``, over whole heads or part of each; or None."""
    whole = _rotary(value)
    return Rotation(whole, whole.inputs[0]) if whole is not None else _partial_rotary(value)


class _Signature:
    """Structural keys of values, so that the exporter's per-layer copies of Cos(positions * inv_freq) share one
    table."""

    def __init__(self):
        self.keys: dict[int, object] = {}

    def __call__(self, value: ir.Value | None):
        if value is None:
            return None
        if id(value) not in self.keys:
            node = value.producer()
            if node is None:
                key = ("value", value.name)  # graph input or initializer
            else:
                attributes = tuple(sorted((k, self._attribute(a.value)) for k, a in node.attributes.items()))
                key = (node.op_type, node.domain, attributes, tuple(self(i) for i in node.inputs), value.index())
            self.keys[id(value)] = key
        return self.keys[id(value)]

    @staticmethod
    def _attribute(value):
        if hasattr(value, "numpy"):  # a tensor attribute (Constant)
            array = value.numpy()
            return (str(array.dtype), array.shape, array.tobytes())
        return repr(value)


def _rotary_tables(model: ir.Model, values: list[ir.Value], positions: str, count: int) -> list[np.ndarray | None]:
    """Runs the subgraph computing ``values`` (the cos and sin inputs of RotaryEmbedding, [batch, seq, dim / 2])
    at positions 0 .. count - 1; Nones when it reads anything but ``positions``."""
    subgraph = Subgraph(model, values)
    if subgraph.inputs != {positions}:
        return [None] * len(values)
    tables = subgraph({positions: np.arange(count, dtype=np.int64)[None]})
    return [t.reshape(count, -1) if t.ndim == 3 and t.shape[:2] == (1, count) else None for t in tables]


class PackedAttentionPass(ir.passes.InPlacePass):
    """Rewrites GroupQueryAttention(Rotary(x Wq + bq), Rotary(x Wk + bk), x Wv + bv, ...) into
    GroupQueryAttention(x [Wq | Wk | Wv] + [bq | bk | bv], do_rotary=1, cos and sin tables as initializers).

    Guarantees: graph outputs are unchanged; logits equal the original's up to float rounding for unpadded rows, and
    for left-padded rows by rotary's shift invariance (module docstring), for sequences up to ``max_positions``;
    ``position_ids`` is removed from the inputs once nothing but Shape reads it (which then reads input_ids' shape).
    A rotary over the first r dims of each head (partial rotary: StableLM, Phi-4-mini) becomes GroupQueryAttention's
    own, whose tables of width r / 2 rotate those dims and leave the rest. A layer whose projections are not
    constant MatMuls of one input, whose rotated width r has r / 2 not a multiple of 8 (ONNX Runtime's requirement),
    or whose cos/sin depend on anything but ``position_ids`` is left as it is.
    """

    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        matches = [m for n in graph if (m := self._match(n)) is not None]
        signature = _Signature()
        wanted = {signature(v): v for m in matches for v in m.rotary_inputs}
        arrays = {}
        if wanted:
            arrays = dict(zip(wanted, _rotary_tables(model, list(wanted.values()), POSITION_IDS, self.max_positions)))
        initializers: dict[object, ir.Value] = {}

        def table(value: ir.Value) -> ir.Value:
            """One initializer per distinct table (a Gemma-style model has one per rotary base)."""
            key = signature(value)
            if key not in initializers:
                initializers[key] = initializer(graph, f"glass.rotary.table_{len(initializers)}",
                                                np.ascontiguousarray(arrays[key], np.float32))
            return initializers[key]

        fused = 0
        for m in matches:
            cos, sin, k_cos, k_sin = (arrays.get(signature(v)) for v in m.rotary_inputs)
            if any(t is None or t.shape != (self.max_positions, m.rotary_dim // 2) for t in (cos, sin)) or \
                    k_cos is None or k_sin is None or not np.array_equal(cos, k_cos) or not np.array_equal(sin, k_sin):
                continue  # q and k rotated differently: GroupQueryAttention takes one table pair
            if m.rotary_dim // 2 % 8:
                continue  # ONNX Runtime's GroupQueryAttention wants the tables' width a multiple of 8
            self._rewrite(graph, m, table(m.rotary_inputs[0]), table(m.rotary_inputs[1]))
            fused += 1
        if fused:
            RemoveUnusedNodesPass()(model)
            self._drop_positions(graph)
        return ir.passes.PassResult(model, modified=fused > 0)

    @staticmethod
    def _drop_positions(graph: ir.Graph) -> None:
        """Removes ``position_ids`` from the inputs when only its shape is still read: that shape is input_ids' by
        contract ([batch, sequence]), and the exporter may have taken batch and sequence sizes from either."""
        positions, ids = graph_input(graph, POSITION_IDS), graph_input(graph, INPUT_IDS)
        if positions is None or ids is None or any(u.node.op_type != "Shape" for u in positions.uses()):
            return
        for use in list(positions.uses()):
            use.node.replace_input_with(use.idx, ids)
        graph.inputs.remove(positions)

    @staticmethod
    def _match(node: ir.Node) -> RotaryAttention | None:
        if node.op_type != "GroupQueryAttention" or node.domain != MS or node.attributes.get_int("do_rotary", 0):
            return None
        q, k, v = node.inputs[:3]
        if q is None or k is None or v is None or any(x is not None for x in node.inputs[7:10]):
            return None
        rq, rk = _rotated(q), _rotated(k)
        if rq is None or rk is None or rq.dims != rk.dims or \
                rq.node.attributes.get_int("interleaved", 0) != rk.node.attributes.get_int("interleaved", 0):
            return None
        projections = [_projection(rq.projection), _projection(rk.projection), _projection(v)]
        if any(p is None for p in projections) or len({id(p.x) for p in projections}) != 1:
            return None
        pq, pk, pv = projections
        if not _only_use(v) or len({p.bias is None for p in projections}) != 1:
            return None  # all three biased or none
        heads, kv_heads = node.attributes.get_int("num_heads"), node.attributes.get_int("kv_num_heads")
        head_dim = pq.width // heads
        if pq.width != heads * head_dim or pk.width != kv_heads * head_dim or pv.width != pk.width:
            return None
        rotary_dim = rq.dims or head_dim
        if rotary_dim > head_dim or rq.dims is not None and min(rq.end, rk.end) < head_dim:
            return None  # the part passed through must run to the end of the head
        return RotaryAttention(node, pq, pk, pv, head_dim, rotary_dim, rq.node.attributes.get_int("interleaved", 0),
                               [*rq.node.inputs[1:3], *rk.node.inputs[1:3]])

    @staticmethod
    def _rewrite(graph: ir.Graph, m: RotaryAttention, cos: ir.Value, sin: ir.Value) -> None:
        gqa, x = m.gqa, m.q.x
        (wq, bq), (wk, bk), (wv, bv) = (p.arrays() for p in (m.q, m.k, m.v))
        name = gqa.name or "attention"

        weights = initializer(graph, f"{m.q.weight.name}.qkv", np.concatenate([wq, wk, wv], axis=-1))
        matmul = ir.node("MatMul", [x, weights], name=f"{name}/qkv")
        nodes, qkv = [matmul], matmul.outputs[0]
        if bq is not None:
            biases = initializer(graph, f"{m.q.bias.name}.qkv_bias", np.concatenate([bq, bk, bv], axis=-1))
            add = ir.node("Add", [qkv, biases], name=f"{name}/qkv_bias")
            nodes.append(add)
            qkv = add.outputs[0]
        width = sum(w.shape[1] for w in (wq, wk, wv))
        for node in nodes:  # the MatMul's output too: a later pass may write it out as value info
            node.outputs[0].dtype = m.q.weight.dtype
            node.outputs[0].shape = ir.Shape([*x.shape[:-1], width]) if x.shape is not None else None
        graph.insert_before(gqa, nodes)
        attributes = {k: a.value for k, a in gqa.attributes.items()}
        attributes.update(do_rotary=1, rotary_interleaved=m.interleaved)
        inputs = list(gqa.inputs)
        inputs[0:3] = [qkv, None, None]
        inputs[7:9] = [cos, sin]
        fused = ir.node("GroupQueryAttention", inputs, attributes=attributes, domain=MS, num_outputs=3,
                        name=gqa.name)
        graph.insert_before(gqa, fused)
        for new, old in zip(fused.outputs, gqa.outputs):
            new.dtype, new.shape = old.dtype, old.shape
            old_name, old.name = old.name, f"{old.name}.unpacked"
            new.name = old_name
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        graph.remove(gqa, safe=True)
