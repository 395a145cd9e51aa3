"""The two small graphs of the fast session layout, built from the ai.glass functions.

select.onnx  per prompt chunk: FFN activations -> running neuron statistics -> kept neurons per layer.
compact.onnx once per prompt: full FFN weights (bound from the weights file) + kept neurons -> compact weights.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from glass_onnx.passes import glass_ops
from glass_onnx.passes.ffn_inputs import FFN_DOWN, FFN_GATE_UP, FFN_Z
from glass_onnx.passes.io_names import (
    KEPT_NEURONS,
    PAST_NEURON_STATS,
    PRESENT_NEURON_STATS,
    tensor_value,
)
from glass_onnx.passes.neuron_selection import SelectNeuronsPass

TOKEN_MASK = "token_mask"  # [batch, sequence] int64: the attention mask's columns of this chunk
FULL_GATE_UP, FULL_DOWN = "ffn_full.{layer}.gate_up", "ffn_full.{layer}.down"  # as the decoder's prefill binds
PANEL_WIDTH = "glass.panel_width"  # [1] int64, divides k: kept neurons per gate/up panel


def _model(graph: ir.Graph, functions) -> ir.Model:
    model = ir.Model(graph, ir_version=10)
    for f in functions:
        glass_ops.add_function(model, f)
    return model


def build_select_model(prior_rank: np.ndarray, lam: float, k: int, fusion: str) -> ir.Model:
    """Inputs ffn.{l}.z, token_mask, past_neuron_stats.{l} (+ overridable prior/lam/k); outputs
    present_neuron_stats.{l} and kept_neurons.{l}, exactly as the reference prefill graph computes them
    (the selection is the same SelectNeuronsPass)."""
    layers, size = prior_rank.shape
    F = ir.DataType.FLOAT
    mask = tensor_value(TOKEN_MASK, ir.DataType.INT64, ["batch", "sequence"])
    graph = ir.Graph([mask], [], nodes=[], opset_imports={"": 23, glass_ops.DOMAIN: 1}, name="glass_select")
    tape = ir.tape.Tape(graph)
    for layer in range(layers):
        z = tensor_value(FFN_Z.format(layer=layer), F, ["batch", "sequence", size])
        past = tensor_value(PAST_NEURON_STATS.format(layer=layer), F, ["batch", size])
        present = tensor_value(PRESENT_NEURON_STATS.format(layer=layer), F, ["batch", size])
        tape.op_multi_out("AccumulateNeuronStats", [z, mask, past], domain=glass_ops.DOMAIN, outputs=[present],
                          name=f"glass/layers.{layer}/AccumulateNeuronStats")
        graph.inputs.extend([z, past])
        graph.outputs.append(present)
    graph.extend(tape.nodes)
    model = _model(graph, [glass_ops.AccumulateNeuronStats])
    SelectNeuronsPass(prior_rank, lam, k, fusion)(model)
    return model


def build_compact_model(layers: int, hidden: int, size: int) -> ir.Model:
    """Inputs ffn_full.{l}.gate_up [2I, H] and ffn_full.{l}.down [H / h, I, h] (the full weights the decoder binds
    for prefill), kept_neurons.{l}, and the panel width; outputs the compact ffn.{l}.gate_up
    [batch, 2k / width, H, width] and ffn.{l}.down [batch, H / h, k, h] that the decoder binds for decode."""
    F, I64 = ir.DataType.FLOAT, ir.DataType.INT64
    width = tensor_value(PANEL_WIDTH, I64, [1])
    graph = ir.Graph([width], [], nodes=[], opset_imports={"": 23, glass_ops.DOMAIN: 1}, name="glass_compact")
    tape = ir.tape.Tape(graph)
    for layer in range(layers):
        full = [tensor_value(FULL_GATE_UP.format(layer=layer), F, [2 * size, hidden]),
                tensor_value(FULL_DOWN.format(layer=layer), F, ["hidden_panels", size, "hidden_panel_width"])]
        kept = tensor_value(KEPT_NEURONS.format(layer=layer), I64, ["batch", "kept"])
        outs = [tensor_value(FFN_GATE_UP.format(layer=layer), F, ["batch", "gate_up_panels", hidden, "panel_width"]),
                tensor_value(FFN_DOWN.format(layer=layer), F, ["batch", "hidden_panels", "kept", "hidden_panel_width"])]
        tape.op_multi_out("GatherKeptPanels", [*full, kept, width], domain=glass_ops.DOMAIN, outputs=outs,
                          name=f"glass/layers.{layer}/GatherKeptPanels")
        graph.inputs.extend([*full, kept])
        graph.outputs.extend(outs)
    graph.extend(tape.nodes)
    return _model(graph, [glass_ops.GatherKeptPanels])
