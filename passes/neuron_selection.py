"""Prefill pass: fuse each layer's local statistic with the global prior and output the kept neurons."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from glass_onnx.passes import glass_ops
from glass_onnx.passes.glass_math import check_fusion, layer_budgets
from glass_onnx.passes.values import tensor_value
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import KEEP, KEPT_NEURONS, LAM, PRESENT_NEURON_STATS, PRIOR_RANK


class SelectNeuronsPass(ir.passes.InPlacePass):
    """Adds output ``kept_neurons.l`` [batch, k_l] int64 (ascending neuron ids) per layer.

    Requires ``present_neuron_stats.l`` outputs (AccumulateNeuronStatsPass). The prior ranks [layers, I], lam and
    the per-layer budgets k [layers] become initializers that are also graph inputs, so a caller may override them
    per run (evaluation sweeps lam and k without recompiling). ``fusion`` picks the ai.glass op: "rank"
    (FusedNeuronOrder) or "plackett-luce" (FusedNeuronOrderPL). Every layer is ranked at once for the largest k;
    layer l keeps the first k_l of its ranking, so any budgets give ``glass_math.select``'s sets. With ``block`` > 1
    the candidates are blocks of that many consecutive neurons (``glass_math.select``): the statistic is summed per
    block, the prior ranks are the blocks' [layers, I / block], k (still counted in neurons) keeps k / block blocks,
    and the output lists their neurons.
    """

    def __init__(self, prior_rank: np.ndarray, lam: float, k, fusion: str = "rank", block: int = 1):
        super().__init__()
        check_fusion(fusion)
        self.prior_rank = np.ascontiguousarray(prior_rank, dtype=np.float32)
        layers, candidates = self.prior_rank.shape
        self.k = layer_budgets(k, layers)
        if any(k_l % block or not block <= k_l <= candidates * block for k_l in self.k):
            raise GlassError(f"per-layer budgets {self.k} are not whole numbers of {block}-neuron blocks between "
                             f"{block} and {candidates * block}; choose a sparsity that is")
        self.lam, self.fusion, self.block = lam, fusion, block

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
        op_type = glass_ops.add_function(model, glass_ops.FUSION_ORDER_OPS[self.fusion])
        ascending = glass_ops.add_function(model, glass_ops.AscendingIds)
        tape = ir.tape.Tape(graph)

        made: dict[str, ir.Value] = {}

        def const(name: str, values) -> ir.Value:
            if name not in made:
                made[name] = tape.initializer(ir.tensor(np.array(values, np.int64), name=f"glass.{name}"))
            return made[name]

        prior = tape.initializer(ir.tensor(self.prior_rank, name=PRIOR_RANK))
        lam = tape.initializer(ir.tensor(np.array(self.lam, dtype=np.float32), name=LAM))
        k = tape.initializer(ir.tensor(np.array(self.k, dtype=np.int64), name=KEEP))
        graph.inputs.extend([prior, lam, k])  # overridable defaults
        batch = stats[0].shape[0] if stats[0].shape is not None else "batch"
        # every layer in one ranking: rows layer-major, [layers * batch, I], each layer's prior repeated per sequence
        # (the sorts of all layers in one TopK each, one set of nodes, not one per layer)
        stacked = tape.op("Concat", stats, attributes={"axis": 0}, name="glass/stack_layers")
        sequences = tape.op("Shape", [stats[0]], attributes={"start": 0, "end": 1})
        per_row = tape.op("Concat", [const("layers", [layers]), sequences, const("candidates", [candidates])],
                          attributes={"axis": 0})
        axis_1 = const("axis_1", [1])
        priors = tape.op("Reshape", [tape.op("Expand", [tape.op("Unsqueeze", [prior, axis_1]), per_row]),
                                     const("rows_shape", [-1, candidates])])
        if self.block > 1:  # candidates are blocks: their summed statistic, k / block of them, then their neurons
            stacked = tape.op("ReduceSum", [tape.op("Reshape", [stacked, const("block_shape", [0, -1, self.block])]),
                                            const("axis_last", [-1])], attributes={"keepdims": 0},
                              name="glass/block_stats")
            k = tape.op("Div", [k, const("block", [self.block])])
        widest = tape.op("ReduceMax", [k], attributes={"keepdims": 1})
        order = tape.op(op_type, [stacked, priors, lam, widest], domain=glass_ops.DOMAIN, name=f"glass/{op_type}")
        split = {"axis": 0, "num_outputs": layers}
        orders = tape.op_multi_out("Split", [order], attributes=split, num_outputs=layers, name="glass/by_layer")
        likes = tape.op_multi_out("Split", [stacked], attributes=split, num_outputs=layers)
        for layer in range(layers):
            k_l = tape.op("Slice", [k, const(f"layer_{layer}", [layer]), const(f"layer_{layer + 1}", [layer + 1])])
            firsts = tape.op("Slice", [orders[layer], const("zero", [0]), k_l, axis_1])
            kept_value = tensor_value(KEPT_NEURONS.format(layer=layer), ir.DataType.INT64, [batch, f"kept_{layer}"])
            ids = tape.op(ascending, [firsts, likes[layer]], domain=glass_ops.DOMAIN,
                          name=f"glass/layers.{layer}/kept", output=None if self.block > 1 else kept_value)
            if self.block > 1:
                first = tape.op("Mul", [tape.op("Unsqueeze", [ids, const("axis_last", [-1])]),
                                        const("block", [self.block])])
                tape.op("Reshape", [tape.op("Add", [first, const("block_offsets", np.arange(self.block))]),
                                    const("neurons_shape", [0, -1])], name=f"glass/layers.{layer}/block_neurons",
                        output=kept_value)
            graph.outputs.append(kept_value)
        graph.extend(tape.nodes)
        return ir.passes.PassResult(model, modified=True)
