"""Prefill pass: fuse each layer's local statistic with the global prior and output the kept neurons."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes import glass_ops
from glass_onnx.passes.glass_math import check_fusion
from glass_onnx.passes.values import tensor_value
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import KEEP, KEPT_NEURONS, LAM, PRESENT_NEURON_STATS, PRIOR_RANK


class SelectNeuronsPass(ir.passes.InPlacePass):
    """Adds output ``kept_neurons.l`` [batch, k] int64 (ascending neuron ids) per layer.

    Requires ``present_neuron_stats.l`` outputs (AccumulateNeuronStatsPass). The prior ranks [layers, I], lam and
    k become initializers that are also graph inputs, so a caller may override them per run (evaluation sweeps
    lam and k without recompiling). ``fusion`` picks the ai.glass op: "rank" (FuseNeuronRanking) or
    "plackett-luce" (FuseNeuronRankingPL). With ``block`` > 1 the candidates are blocks of that many consecutive
    neurons (``glass_math.select``): the statistic is summed per block, the prior ranks are the blocks' [layers,
    I / block], k (still counted in neurons) keeps k / block blocks, and the output lists their neurons.
    """

    def __init__(self, prior_rank: np.ndarray, lam: float, k: int, fusion: str = "rank", block: int = 1):
        super().__init__()
        check_fusion(fusion)
        if k % block:
            raise GlassError(f"k = {k} is not a whole number of {block}-neuron blocks; choose a sparsity that is")
        self.prior_rank = np.ascontiguousarray(prior_rank, dtype=np.float32)
        self.lam, self.k, self.fusion, self.block = lam, k, fusion, block

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        outputs = {v.name: v for v in graph.outputs}
        layers, candidates = self.prior_rank.shape
        size = candidates * self.block
        stats = [outputs.get(PRESENT_NEURON_STATS.format(layer=i)) for i in range(layers)]
        if any(s is None for s in stats) or f"{PRESENT_NEURON_STATS.format(layer=layers)}" in outputs:
            raise GlassError(f"the prior has {layers} layers but the graph's FFN statistics do not match; "
                             "use a prior computed for this model")
        if stats[0].shape is not None and stats[0].shape[-1] != size:
            raise GlassError(f"the prior has {size} neurons per layer, the model's FFN has {stats[0].shape[-1]}; "
                             "use a prior computed for this model")
        op_type = glass_ops.add_function(model, glass_ops.FUSION_OPS[self.fusion])
        tape = ir.tape.Tape(graph)
        prior = tape.initializer(ir.tensor(self.prior_rank, name=PRIOR_RANK))
        lam = tape.initializer(ir.tensor(np.array(self.lam, dtype=np.float32), name=LAM))
        k = tape.initializer(ir.tensor(np.array([self.k], dtype=np.int64), name=KEEP))
        graph.inputs.extend([prior, lam, k])  # overridable defaults
        batch = stats[0].shape[0] if stats[0].shape is not None else "batch"
        # every layer in one ranking: rows layer-major, [layers * batch, I], each layer's prior repeated per sequence
        # (two TopKs over all rows instead of three per layer: the same sorts, one set of nodes, not one per layer)
        stacked = tape.op("Concat", stats, attributes={"axis": 0}, name="glass/stack_layers")
        sequences = tape.op("Shape", [stats[0]], attributes={"start": 0, "end": 1})
        layers_ = tape.initializer(ir.tensor(np.array([layers], np.int64), name="glass.layers"))
        size_ = tape.initializer(ir.tensor(np.array([candidates], np.int64), name="glass.candidates"))
        per_row = tape.op("Concat", [layers_, sequences, size_], attributes={"axis": 0})
        one = tape.initializer(ir.tensor(np.array([1], np.int64), name="glass.axis_1"))
        rows = tape.initializer(ir.tensor(np.array([-1, candidates], np.int64), name="glass.rows_shape"))
        priors = tape.op("Reshape", [tape.op("Expand", [tape.op("Unsqueeze", [prior, one]), per_row]), rows])
        if self.block > 1:  # candidates are blocks: their summed statistic, k / block of them, then their neurons
            block = tape.initializer(ir.tensor(np.array([self.block], np.int64), name="glass.block"))
            by_block = tape.initializer(ir.tensor(np.array([0, -1, self.block], np.int64), name="glass.block_shape"))
            minus_one = tape.initializer(ir.tensor(np.array([-1], np.int64), name="glass.axis_last"))
            stacked = tape.op("ReduceSum", [tape.op("Reshape", [stacked, by_block]), minus_one],
                              attributes={"keepdims": 0}, name="glass/block_stats")
            blocks = tape.op(op_type, [stacked, priors, lam, tape.op("Div", [k, block])], domain=glass_ops.DOMAIN,
                             name=f"glass/{op_type}")
            offsets = tape.initializer(ir.tensor(np.arange(self.block, dtype=np.int64), name="glass.block_offsets"))
            first = tape.op("Mul", [tape.op("Unsqueeze", [blocks, minus_one]), block])
            neurons = tape.initializer(ir.tensor(np.array([0, -1], np.int64), name="glass.neurons_shape"))
            kept_rows = tape.op("Reshape", [tape.op("Add", [first, offsets]), neurons], name="glass/block_neurons")
        else:
            kept_rows = tape.op(op_type, [stacked, priors, lam, k], domain=glass_ops.DOMAIN, name=f"glass/{op_type}")
        kept = [tensor_value(KEPT_NEURONS.format(layer=layer), ir.DataType.INT64, [batch, "kept"])
                for layer in range(layers)]
        tape.op_multi_out("Split", [kept_rows], attributes={"axis": 0, "num_outputs": layers}, outputs=kept,
                          name="glass/unstack_layers")
        graph.outputs.extend(kept)
        graph.extend(tape.nodes)
        return ir.passes.PassResult(model, modified=True)
