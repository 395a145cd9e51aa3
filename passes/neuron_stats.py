"""Prefill pass: accumulate GLASS's local neuron statistic in every FFN."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes import glass_ops
from glass_onnx.passes.ffn_pattern import find_gated_ffns
from glass_onnx.passes.values import graph_input, tensor_value
from glass_onnx.runtime.protocol import ATTENTION_MASK, INPUT_IDS, PAST_NEURON_STATS, PRESENT_NEURON_STATS


class AccumulateNeuronStatsPass(ir.passes.InPlacePass):
    """Adds, per FFN layer l, input ``past_neuron_stats.l`` and output ``present_neuron_stats.l`` [batch, I].

    Guarantees: every existing output is computed exactly as before; present = past + the
    ``ai.glass.AccumulateNeuronStats`` of this call's FFN activations over the non-padded tokens of this call
    (the last ``sequence`` columns of ``attention_mask``), so chaining calls over prompt chunks equals one call.

    With ``default_zeros`` the past inputs get zero defaults (batch 1), for runtimes that feed only the inputs they
    know (onnxruntime-genai). It is off by default: some bindings (onnxruntime-node) hide and ignore inputs that have
    a default, which would make chunked prefill impossible there.
    """

    def __init__(self, default_zeros: bool = False):
        super().__init__()
        self.default_zeros = default_zeros

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        ids, mask = graph_input(graph, INPUT_IDS), graph_input(graph, ATTENTION_MASK)
        op_type = glass_ops.add_function(model, glass_ops.AccumulateNeuronStats)
        tape = ir.tape.Tape(graph)
        seq = tape.op("Shape", [ids], attributes={"start": 1, "end": 2})
        start = tape.op("Neg", [seq])
        end = tape.initializer(ir.tensor([2**62], dtype=ir.DataType.INT64, name="glass.slice_end"))
        axis = tape.initializer(ir.tensor([1], dtype=ir.DataType.INT64, name="glass.slice_axis"))
        token_mask = tape.op("Slice", [mask, start, end, axis], name="glass/token_mask")
        batch = ids.shape[0]
        for ffn in ffns:
            size = ffn.intermediate_size
            past = tensor_value(PAST_NEURON_STATS.format(layer=ffn.layer), ir.DataType.FLOAT, [batch, size])
            present = tensor_value(PRESENT_NEURON_STATS.format(layer=ffn.layer), ir.DataType.FLOAT, [batch, size])
            if self.default_zeros:
                past.const_value = ir.tensor(np.zeros((1, size), np.float32), name=past.name)
                graph.register_initializer(past)
            graph.inputs.append(past)
            tape.op_multi_out(op_type, [ffn.z, token_mask, past], domain=glass_ops.DOMAIN, outputs=[present],
                              name=f"glass/layers.{ffn.layer}/AccumulateNeuronStats")
            graph.outputs.append(present)
        graph.extend(tape.nodes)
        return ir.passes.PassResult(model, modified=True)
