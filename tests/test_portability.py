"""Portability gate: compiled graphs hold only standard ONNX ops, ai.glass functions (which inline to standard
ops) and the documented contrib list; `inspect` describes an artifact."""

import onnx
import pytest
from onnx import helper

from glass_onnx.tools.inspect_artifact import PORTABLE_CONTRIB_OPS, describe, non_portable_ops


@pytest.mark.parametrize("fusion", ["rank", "plackett-luce"])
def test_compiled_graphs_are_portable(tiny_compiled, tiny_dense, fusion):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5, fusion=fusion)
    graphs = sorted(artifact.glob("*.onnx")) + [tiny_dense / "model.onnx"]
    assert len(graphs) == 6  # prefill, decode, and the fast layout's decoder, select, compact
    for path in graphs:
        assert non_portable_ops(path) == [], path.name


def test_gate_flags_a_contrib_op(tmp_path):
    node = helper.make_node("FusedMatMul", ["a", "b"], ["c"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, 1, [2, 2]) for n in "ab"],
                              [helper.make_tensor_value_info("c", 1, [2, 2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23),
                                                      helper.make_opsetid("com.microsoft", 1)]),
              tmp_path / "m.onnx")
    assert "FusedMatMul" not in PORTABLE_CONTRIB_OPS
    assert non_portable_ops(tmp_path / "m.onnx") == ["com.microsoft.FusedMatMul"]


def test_inspect_describes_sessions_and_glass_nodes(tiny_compiled):
    text = describe(tiny_compiled(method="a-glass", sparsity=0.5))
    assert "keeps 48/96 FFN neurons" in text
    assert "AccumulateNeuronStats x3 (one per layer)" in text and "IndexedSwiGLU x3" in text
    assert "FusedNeuronOrder x1 (all layers)" in text and "ffn.{layer}.z x3 [batch, constant_rows, 96]" in text
    assert "kept_neurons.{layer} x3 [batch, kept_0]" in text and "NOT PORTABLE" not in text


def test_int4_graphs_are_portable_and_inspectable(tiny_compiled, tiny_dense):
    from glass_onnx.compiler.export import dense_artifact

    artifact = tiny_compiled(method="a-glass", sparsity=0.5, weights="int4")
    graphs = sorted(artifact.glob("*.onnx")) + [dense_artifact(str(tiny_dense), weights="int4")[0] / "model.onnx"]
    assert len(graphs) == 7  # prefill, decode; the fast layout's decoder, select, per-prompt decoder, head; the export
    for path in graphs:
        assert non_portable_ops(path) == [], path.name
    text = describe(artifact)
    assert "glass int4 artifact" in text and "IndexedSwiGLUInt4 x3 (one per layer)" in text
    assert "[fast compact_decoder] decode_compact.onnx" in text and "NOT PORTABLE" not in text
    assert "[fast head] head.onnx" in text and "outputs: hidden_states [batch, sequence, 64]" in text


@pytest.mark.parametrize("weights", ["fp32", "int4"])
def test_ep_parity_check_runs_both_layouts(tiny_compiled, weights, capsys):
    """The GPU check's parity tool, here CPU against CPU: both layouts, every logit and greedy token agreeing."""
    import json

    from glass_onnx.tools.ep_parity import main

    artifact = tiny_compiled(method="a-glass", sparsity=0.5, weights=weights)
    assert main([str(artifact), "--provider", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in results] == [True, True] and results[0]["greedy_tokens_agreeing"] == "16/16"
    fast = "FastDecoder" if weights == "fp32" else "CompactSessionDecoder"
    assert {r["layout"] for r in results} == {"Decoder", fast}
