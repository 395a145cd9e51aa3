"""The two small graphs of the fast session layout, built from the ai.glass functions.

select.onnx  per prompt chunk: FFN activations -> running neuron statistics -> kept neurons per layer.
compact.onnx once per prompt: full FFN weights (bound from the weights file) + kept neurons -> compact weights.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes import glass_ops
from glass_onnx.passes.ffn_inputs import FFN_DOWN, FFN_GATE, FFN_UP, FFN_Z
from glass_onnx.passes.io_names import KEEP, KEPT_NEURONS, LAM, PAST_NEURON_STATS, PRESENT_NEURON_STATS, PRIOR_RANK

TOKEN_MASK = "token_mask"  # [batch, sequence] int64: the attention mask's columns of this chunk
FULL_GATE, FULL_UP, FULL_DOWN = "ffn_full.{layer}.gate", "ffn_full.{layer}.up", "ffn_full.{layer}.down"


def _value(name: str, dtype: ir.DataType, dims: list) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(dims))


def _model(graph: ir.Graph, functions) -> ir.Model:
    model = ir.Model(graph, ir_version=10)
    for f in functions:
        glass_ops.add_function(model, f)
    return model


def build_select_model(prior_rank: np.ndarray, lam: float, k: int, fusion: str) -> ir.Model:
    """Inputs ffn.{l}.z, token_mask, past_neuron_stats.{l} (+ overridable prior/lam/k); outputs
    present_neuron_stats.{l} and kept_neurons.{l}, exactly as the reference prefill graph computes them."""
    layers, size = prior_rank.shape
    F, I64 = ir.DataType.FLOAT, ir.DataType.INT64
    mask = _value(TOKEN_MASK, I64, ["batch", "sequence"])
    prior = _value(PRIOR_RANK, F, [layers, size])
    prior.const_value = ir.tensor(np.ascontiguousarray(prior_rank, np.float32), name=PRIOR_RANK)
    lam_v = _value(LAM, F, [])
    lam_v.const_value = ir.tensor(np.array(lam, np.float32), name=LAM)
    k_v = _value(KEEP, I64, [1])
    k_v.const_value = ir.tensor(np.array([k], np.int64), name=KEEP)
    graph = ir.Graph([mask], [], nodes=[], initializers=[prior, lam_v, k_v], opset_imports={"": 23, glass_ops.DOMAIN: 1},
                     name="glass_select")
    tape = ir.tape.Tape(graph)
    stats_inputs, outputs = [], []
    fuse = glass_ops.FUSIONS[fusion].name
    for layer in range(layers):
        z = _value(FFN_Z.format(layer=layer), F, ["batch", "sequence", size])
        past = _value(PAST_NEURON_STATS.format(layer=layer), F, ["batch", size])
        present = _value(PRESENT_NEURON_STATS.format(layer=layer), F, ["batch", size])
        kept = _value(KEPT_NEURONS.format(layer=layer), I64, ["batch", "kept"])
        stats_inputs += [z, past]
        tape.op_multi_out("AccumulateNeuronStats", [z, mask, past], domain=glass_ops.DOMAIN, outputs=[present],
                          name=f"glass/layers.{layer}/AccumulateNeuronStats")
        index = tape.initializer(ir.tensor(np.array(layer, np.int64), name=f"glass.layer.{layer}"))
        layer_prior = tape.op("Gather", [prior, index], attributes={"axis": 0})
        tape.op_multi_out(fuse, [present, layer_prior, lam_v, k_v], domain=glass_ops.DOMAIN, outputs=[kept],
                          name=f"glass/layers.{layer}/{fuse}")
        outputs += [present, kept]
    graph.inputs.extend(stats_inputs + [prior, lam_v, k_v])
    graph.outputs.extend(outputs)
    graph.extend(tape.nodes)
    return _model(graph, [glass_ops.AccumulateNeuronStats, glass_ops.FUSIONS[fusion]])


def build_compact_model(layers: int, hidden: int, size: int) -> ir.Model:
    """Inputs ffn_full.{l}.gate|up [1, H, I], ffn_full.{l}.down [1, I, H] (the same tensors the decoder binds for
    prefill), kept_neurons.{l}; outputs the compact ffn.{l}.gate|up [batch, H, k] and ffn.{l}.down [batch, k, H]
    that the decoder binds for decode."""
    F, I64 = ir.DataType.FLOAT, ir.DataType.INT64
    graph = ir.Graph([], [], nodes=[], opset_imports={"": 23, glass_ops.DOMAIN: 1}, name="glass_compact")
    tape = ir.tape.Tape(graph)
    axis = tape.initializer(ir.tensor(np.array([0], np.int64), name="glass.squeeze_axis"))
    for layer in range(layers):
        full = [_value(FULL_GATE.format(layer=layer), F, [1, hidden, size]),
                _value(FULL_UP.format(layer=layer), F, [1, hidden, size]),
                _value(FULL_DOWN.format(layer=layer), F, [1, size, hidden])]
        weights = [tape.op("Squeeze", [w, axis]) for w in full]
        kept = _value(KEPT_NEURONS.format(layer=layer), I64, ["batch", "kept"])
        outs = [_value(FFN_GATE.format(layer=layer), F, ["batch", hidden, "kept"]),
                _value(FFN_UP.format(layer=layer), F, ["batch", hidden, "kept"]),
                _value(FFN_DOWN.format(layer=layer), F, ["batch", "kept", hidden])]
        tape.op_multi_out("GatherKeptWeights", [*weights, kept], domain=glass_ops.DOMAIN, outputs=outs,
                          name=f"glass/layers.{layer}/GatherKeptWeights")
        graph.inputs.extend([*full, kept])
        graph.outputs.extend(outs)
    graph.extend(tape.nodes)
    return _model(graph, [glass_ops.GatherKeptWeights])
