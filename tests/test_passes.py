"""Graph passes on small hand-built graphs: what each rewrites (checked by running both graphs in ONNX Runtime),
and what each must leave alone."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from glass_onnx.passes import GroupQueryAttentionPass, OmitUnusedOutputsPass, SkipNormPass, SplitFusedGateUpPass
from glass_onnx.passes.group_query_attention import ATTENTION, MS
from glass_onnx.passes.subgraph_eval import Subgraph

F = ir.DataType.FLOAT


def value(name, shape, dtype=F):
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))


def typed(node, shape, dtype=F):
    """The node, its first output given a type and shape (as the exporter gives every value)."""
    node.outputs[0].type, node.outputs[0].shape = ir.TensorType(dtype), ir.Shape(shape)
    return node


def model(nodes, inputs, outputs, initializers=(), opsets=None):
    graph = ir.Graph(inputs, outputs, nodes=nodes, initializers=list(initializers),
                     opset_imports=opsets or {"": 23, MS: 1}, name="hand_built")
    return ir.Model(graph, ir_version=10)


def run(m: ir.Model, feeds: dict) -> list[np.ndarray]:
    proto = ir.serde.serialize_model(m)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ops(m: ir.Model) -> list[str]:
    return [n.op_type for n in m.graph]


@pytest.mark.parametrize("norm, fused_op", [("RMSNormalization", "SkipSimplifiedLayerNormalization"),
                                             ("LayerNormalization", "SkipLayerNormalization")])
def test_skip_norm_fuses_a_residual_add_but_not_a_broadcast_one(norm, fused_op):
    def build():
        a, b, bias = value("a", [1, 3, 8]), value("b", [1, 3, 8]), value("bias", [8])
        scale = ir.Value(name="scale", shape=ir.Shape([8]), type=ir.TensorType(F),
                         const_value=ir.tensor(np.linspace(0.5, 1.5, 8, dtype=np.float32), name="scale"))
        beta = ir.Value(name="beta", shape=ir.Shape([8]), type=ir.TensorType(F),
                        const_value=ir.tensor(np.linspace(-0.2, 0.3, 8, dtype=np.float32), name="beta"))
        params = [scale, beta] if norm == "LayerNormalization" else [scale]
        residual, broadcast = typed(ir.node("Add", [a, b]), [1, 3, 8]), typed(ir.node("Add", [a, bias]), [1, 3, 8])
        norms = [typed(ir.node(norm, [x.outputs[0], *params], attributes={"axis": -1, "epsilon": 1e-5}), [1, 3, 8])
                 for x in (residual, broadcast)]
        readers = [ir.node("Identity", [n.outputs[0]]) for n in norms]  # the next layer
        total = ir.node("Identity", [residual.outputs[0]])  # the residual stream read on
        outputs = [n.outputs[0] for n in (*readers, total)]
        for i, out in enumerate(outputs):
            out.name, out.type, out.shape = f"y{i}", ir.TensorType(F), ir.Shape([1, 3, 8])
        return model([residual, broadcast, *norms, *readers, total], [a, b, bias], outputs, params)

    rng = np.random.default_rng(0)
    feeds = {"a": rng.normal(size=(1, 3, 8)).astype(np.float32), "b": rng.normal(size=(1, 3, 8)).astype(np.float32),
             "bias": rng.normal(size=8).astype(np.float32)}
    fused = build()
    assert SkipNormPass()(fused).modified
    assert sorted(ops(fused)) == sorted(["Add", "Identity", "Identity", "Identity", norm, fused_op])
    for want, got in zip(run(build(), feeds), run(fused, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_split_gate_up_takes_a_fused_projection_apart_but_not_a_three_way_or_shared_one():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 12)).astype(np.float32)

    def build(parts=2, shared=False):
        x = value("x", [1, 3, 8])
        weight = ir.Value(name="gate_up", shape=ir.Shape([8, 12]), type=ir.TensorType(F),
                          const_value=ir.tensor(w, name="gate_up"))
        fused = typed(ir.node("MatMul", [x, weight]), [1, 3, 12])
        split = ir.node("Split", [fused.outputs[0]], attributes={"axis": -1, "num_outputs": parts}, num_outputs=parts)
        for out in split.outputs:
            out.type, out.shape = ir.TensorType(F), ir.Shape([1, 3, 12 // parts])
        nodes = [fused, split]
        if shared:  # the same weight read by a second projection
            nodes.append(typed(ir.node("MatMul", [x, weight]), [1, 3, 12]))
        outputs = [o for n in nodes[1:] for o in n.outputs]
        for i, out in enumerate(outputs):
            out.name = f"y{i}"
        return model(nodes, [x], outputs, [weight])

    feeds = {"x": rng.normal(size=(1, 3, 8)).astype(np.float32)}
    split = build()
    assert SplitFusedGateUpPass()(split).modified
    assert ops(split) == ["MatMul", "MatMul"] and list(split.graph.initializers) == ["gate_up.part0", "gate_up.part1"]
    for want, got in zip(run(build(), feeds), run(split, feeds)):
        np.testing.assert_array_equal(got, want)
    for kept in (build(parts=3), build(shared=True)):
        assert not SplitFusedGateUpPass()(kept).modified


def _attention(softcap: float | None = None):
    """Attention over a concatenated KV cache, as the exporter writes it: q [1, 4, 2, 16], 2 kv heads, past and new
    keys/values concatenated on the sequence axis, a causal boolean mask."""
    q, k, v = value("q", [1, 4, 2, 16]), value("k", [1, 4, 2, 16]), value("v", [1, 4, 2, 16])
    past_k, past_v = (value("past_key_values.0.key", [1, 4, "past", 16]),
                      value("past_key_values.0.value", [1, 4, "past", 16]))
    mask = value("attention_mask", [1, "total"], ir.DataType.INT64)
    causal = value("causal", [1, 1, 2, "total"], ir.DataType.BOOL)
    keys = typed(ir.node("Concat", [past_k, k], attributes={"axis": 2}), [1, 4, "total", 16])
    values = typed(ir.node("Concat", [past_v, v], attributes={"axis": 2}), [1, 4, "total", 16])
    attributes = {"softcap": softcap} if softcap is not None else {}
    attention = typed(ir.node("Attention", [q, keys.outputs[0], values.outputs[0], causal], attributes=attributes),
                      [1, 4, 2, 16])
    projection = typed(ir.node("Identity", [attention.outputs[0]]), [1, 4, 2, 16])  # the output projection
    projection.outputs[0].name = "out"
    keys.outputs[0].name, values.outputs[0].name = "present.0.key", "present.0.value"
    return model([keys, values, attention, projection], [q, k, v, past_k, past_v, mask, causal],
                 [projection.outputs[0], keys.outputs[0], values.outputs[0]])


@pytest.mark.parametrize("softcap", [None, 1.0])  # 1.0 bends these scores (Gemma-2's cap is 50)
def test_group_query_attention_rewrites_cached_attention_and_keeps_its_meaning(softcap):
    rng = np.random.default_rng(1)
    past = 3
    feeds = {"q": rng.normal(size=(1, 4, 2, 16)), "k": rng.normal(size=(1, 4, 2, 16)),
             "v": rng.normal(size=(1, 4, 2, 16)), "past_key_values.0.key": rng.normal(size=(1, 4, past, 16)),
             "past_key_values.0.value": rng.normal(size=(1, 4, past, 16))}
    feeds = {name: array.astype(np.float32) for name, array in feeds.items()}
    feeds["attention_mask"] = np.ones((1, past + 2), np.int64)
    feeds["causal"] = (np.arange(past + 2)[None, :] <= past + np.arange(2)[:, None])[None, None]
    fused = _attention(softcap)
    assert GroupQueryAttentionPass()(fused).modified
    assert "GroupQueryAttention" in ops(fused) and "Attention" not in ops(fused)
    assert fused.metadata_props[ATTENTION] == "GroupQueryAttention"
    gqa = next(n for n in fused.graph if n.op_type == "GroupQueryAttention")
    assert gqa.attributes.get_float("softcap", 0.0) == (softcap or 0.0)
    for want, got in zip(run(_attention(softcap), feeds), run(fused, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if softcap:  # the cap changes the result, so the comparison above saw it
        assert np.abs(run(_attention(), feeds)[0] - run(fused, feeds)[0]).max() > 1e-2


def test_past_length_read_with_a_negative_shape_start_comes_from_the_masks():
    """Shape(past, start=-2) = [past length, head_dim]: after the rewrite a fixed-capacity buffer bound as the past
    (longer than the past) still yields the true past length, from the masks' widths."""
    past = value("past_key_values.0.key", [1, 2, "past", 16])
    mask, ids = value("attention_mask", [1, "total"], ir.DataType.INT64), value("input_ids", [1, "sequence"],
                                                                                 ir.DataType.INT64)
    shape = typed(ir.node("Shape", [past], attributes={"start": -2}), [2], ir.DataType.INT64)
    used = typed(ir.node("Identity", [shape.outputs[0]]), [2], ir.DataType.INT64)
    used.outputs[0].name = "past_shape"
    reader = ir.node("GroupQueryAttention", [value("qkv", [1, 1, 64]), None, None, past, past],
                     attributes={"num_heads": 4, "kv_num_heads": 2}, domain=MS, num_outputs=3)
    m = model([shape, used, reader], [past, mask, ids], [used.outputs[0]])
    assert GroupQueryAttentionPass._past_length_from_masks(m.graph, mask)
    buffer = np.zeros((1, 2, 10, 16), np.float32)  # capacity 10, 4 tokens in it
    (got,) = Subgraph(m, [m.graph.outputs[0]])({"past_key_values.0.key": buffer,
                                                  "attention_mask": np.ones((1, 7), np.int64),
                                                  "input_ids": np.ones((1, 3), np.int64)})
    np.testing.assert_array_equal(got, [4, 16])


def test_unused_optional_outputs_lose_their_names_read_ones_keep_them():
    x, skip = value("x", [1, 2, 8]), value("skip", [1, 2, 8])
    gamma = ir.Value(name="gamma", shape=ir.Shape([8]), type=ir.TensorType(F),
                     const_value=ir.tensor(np.ones(8, np.float32), name="gamma"))
    norm = ir.node("SkipSimplifiedLayerNormalization", [x, skip, gamma], domain=MS, num_outputs=4)
    for out, name in zip(norm.outputs, ("normed", "mean", "inv_std", "sum")):
        out.name = name
    reads_mean = ir.node("Identity", [norm.outputs[1]])
    reads_mean.outputs[0].name = "mean_copy"
    m = model([norm, reads_mean], [x, skip], [norm.outputs[0], reads_mean.outputs[0], norm.outputs[3]], [gamma])
    assert OmitUnusedOutputsPass()(m).modified
    assert [out.name for out in norm.outputs] == ["normed", "mean", "", "sum"]
    assert not OmitUnusedOutputsPass()(m).modified


def softcapped_head_model():
    """x -> Mul(w_in) -> RMS-like Mul (the hidden states) -> MatMul(W) -> Div, Tanh, Mul (a soft-cap) -> logits."""
    rng = np.random.default_rng(3)
    x = value("x", ["batch", "sequence", 8])
    scale = ir.Value(name="scale", const_value=ir.tensor(rng.normal(size=8).astype(np.float32)))
    w = ir.Value(name="w", const_value=ir.tensor(rng.normal(size=(8, 12)).astype(np.float32)))
    cap = ir.Value(name="cap", const_value=ir.tensor(np.array(3.0, np.float32)))
    hidden = typed(ir.node("Mul", [x, scale]), ["batch", "sequence", 8])
    project = typed(ir.node("MatMul", [hidden.outputs[0], w]), ["batch", "sequence", 12])
    div = typed(ir.node("Div", [project.outputs[0], cap]), ["batch", "sequence", 12])
    tanh = typed(ir.node("Tanh", [div.outputs[0]]), ["batch", "sequence", 12])
    mul = typed(ir.node("Mul", [tanh.outputs[0], cap]), ["batch", "sequence", 12])
    mul.outputs[0].name = "logits"
    return model([hidden, project, div, tanh, mul], [x], [mul.outputs[0]], [scale, w, cap])


def test_lm_head_splits_off_with_its_soft_cap_and_composes_back():
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    from glass_onnx.passes import DetachLMHeadPass, LMHeadOnlyPass

    feeds = {"x": np.random.default_rng(4).normal(size=(2, 3, 8)).astype(np.float32)}
    want = run(softcapped_head_model(), feeds)[0]
    body, head = softcapped_head_model(), softcapped_head_model()
    for passes, m in (([DetachLMHeadPass(), RemoveUnusedNodesPass()], body),
                      ([LMHeadOnlyPass(), RemoveUnusedNodesPass()], head)):
        ir.passes.PassManager(passes)(m)
    assert ops(body) == ["Mul"] and [v.name for v in body.graph.outputs] == ["hidden_states"]
    assert ops(head) == ["MatMul", "Div", "Tanh", "Mul"] and [v.name for v in head.graph.inputs] == ["hidden_states"]
    assert set(head.graph.initializers) == {"w", "cap"}
    hidden = run(body, feeds)[0]
    np.testing.assert_array_equal(run(head, {"hidden_states": hidden})[0], want)


def test_lm_head_must_be_a_projection_of_the_hidden_states():
    import pytest

    from glass_onnx.passes import DetachLMHeadPass
    from glass_onnx.runtime.errors import GlassError

    x, y = value("x", ["batch", "sequence", 8]), value("y", ["batch", "sequence", 8])
    add = typed(ir.node("Add", [x, y]), ["batch", "sequence", 8])  # two dynamic inputs: no single head input
    add.outputs[0].name = "logits"
    with pytest.raises(GlassError, match="logits do not come from one projection"):
        DetachLMHeadPass()(model([add], [x, y], [add.outputs[0]]))
