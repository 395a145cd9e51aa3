"""The two small graphs of the fast session layout, built from the ai.glass functions.

select.onnx  per prompt chunk: FFN activations -> running neuron statistics -> kept neurons per layer.
compact.onnx once per layer and prompt: one layer's full FFN weights (read from the weights file) + its kept
             neurons -> its compact weights.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes import glass_ops
from glass_onnx.passes.neuron_selection import SelectNeuronsPass
from glass_onnx.passes.values import tensor_value
from glass_onnx.runtime.protocol import (
    COMPACT_DOWN,
    COMPACT_FULL_DOWN,
    COMPACT_FULL_GATE_UP,
    COMPACT_GATE_UP,
    COMPACT_HIDDEN_PANEL_WIDTH,
    COMPACT_KEPT,
    COMPACT_PANEL_WIDTH,
    FFN_Z,
    PAST_NEURON_STATS,
    PRESENT_NEURON_STATS,
    TOKEN_MASK,
)


def _model(graph: ir.Graph, functions) -> ir.Model:
    model = ir.Model(graph, ir_version=10)
    for f in functions:
        glass_ops.add_function(model, f)
    return model


def build_select_model(prior_rank: np.ndarray, lam: float, k, fusion: str, block: int = 1) -> ir.Model:
    """Inputs ffn.{l}.z, token_mask, past_neuron_stats.{l} (+ overridable prior/lam/k); outputs
    present_neuron_stats.{l} and kept_neurons.{l}, exactly as the reference prefill graph computes them
    (the selection is the same SelectNeuronsPass)."""
    layers, size = prior_rank.shape[0], prior_rank.shape[1] * block
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
    SelectNeuronsPass(prior_rank, lam, k, fusion, block)(model)
    return model


def build_compact_model(hidden: int, size: int, hidden_panel: int) -> ir.Model:
    """One layer's compaction, run once per layer and prompt: inputs ffn_full.gate_up [2I, H] and ffn_full.down
    [I, H] (the full weights, read from the weights file), kept_neurons [batch, k], the panel width w and the hidden
    panel width h (an input with ``hidden_panel`` as its default); outputs the compact ffn.gate_up
    [batch, 2k / w, H, w] and ffn.down [batch, H / h, k, h] that the decoder binds for decode."""
    F, I64 = ir.DataType.FLOAT, ir.DataType.INT64
    width = tensor_value(COMPACT_PANEL_WIDTH, I64, [1])
    full = [tensor_value(COMPACT_FULL_GATE_UP, F, [2 * size, hidden]),
            tensor_value(COMPACT_FULL_DOWN, F, [size, hidden])]
    kept = tensor_value(COMPACT_KEPT, I64, ["batch", "kept"])
    # a default, so runtimes that bind no h get the compiled one
    panel = tensor_value(COMPACT_HIDDEN_PANEL_WIDTH, I64, [1])
    panel.const_value = ir.tensor(np.array([hidden_panel], np.int64), name=COMPACT_HIDDEN_PANEL_WIDTH)
    outs = [tensor_value(COMPACT_GATE_UP, F, ["batch", "gate_up_panels", hidden, "panel_width"]),
            tensor_value(COMPACT_DOWN, F, ["batch", "hidden_panels", "kept", "hidden_panel_width"])]
    graph = ir.Graph([*full, kept, width, panel], outs, nodes=[], initializers=[panel],
                     opset_imports={"": 23, glass_ops.DOMAIN: 1}, name="glass_compact")
    tape = ir.tape.Tape(graph)
    tape.op_multi_out("GatherKeptPanels", [*full, kept, width, panel], domain=glass_ops.DOMAIN, outputs=outs,
                      name="glass/GatherKeptPanels")
    graph.extend(tape.nodes)
    return _model(graph, [glass_ops.GatherKeptPanels])
