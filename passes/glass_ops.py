"""The ``ai.glass`` custom ops, as ONNX model-local functions.

Each function inlines to standard ONNX ops, so every ORT binding and EP runs it, while Netron shows one named
node per layer. Each computes a formula of ``glass_math`` (numpy), which its docstring names and the tests check
it against.
"""

from __future__ import annotations

import onnx_ir as ir
from onnxscript import opset23 as op
from onnxscript import script, values

from glass_onnx.passes.glass_math import FUSIONS, PL_GAMMA_A, PL_GAMMA_B, PL_ITERATIONS

DOMAIN = "ai.glass"
VERSION = 1
glass = values.Opset(DOMAIN, VERSION)
ms = values.Opset("com.microsoft", 1)  # ONNX Runtime's contrib ops, for 4-bit weights
DOUBLE, INT64, UINT8 = ir.DataType.DOUBLE, ir.DataType.INT64, ir.DataType.UINT8  # the types the functions cast to


@script(glass, default_opset=op)
def AccumulateNeuronStats(z, token_mask, past_stats):
    """GRIFFIN's local statistic, accumulated over prompt chunks: past_stats + ``glass_math.local_statistic``.

    z: [batch, seq, I] input of the FFN down projection; token_mask: [batch, seq] (0 = padding);
    past_stats: [batch, I] running sum. Adds the sum over real tokens of z_t^2 / ||z_t||^2, i.e. the squared column
    norms of the row-normalised activations, so sqrt(result) is GRIFFIN's s and any chunking of the prompt gives
    the same result as one call.
    """
    sq = z * z
    row = op.Max(op.ReduceSum(sq, [-1], keepdims=1), op.CastLike(1e-30, sq))
    weight = op.Unsqueeze(op.CastLike(token_mask, sq), [-1]) / row  # [batch, seq, 1]: 1 / ||z_t||^2, 0 for padding
    # the weighted sum over tokens as one [1, seq] x [seq, I] product per sequence (MatMul outruns ReduceSum here)
    return past_stats + op.Squeeze(op.MatMul(op.Transpose(weight, perm=[0, 2, 1]), sq), [1])


@script(glass, default_opset=op)
def AscendingIds(ids, like):
    """The ids of each row of ``ids`` [batch, k] (distinct, in [0, I)), ascending; ``like`` is any [batch, I]
    tensor. Marks them in a [batch, I] mask and reads it back in order: linear, where a sort is not."""
    marks = op.ScatterElements(op.Expand(op.CastLike(0.0, like), op.Shape(like)),
                               ids, op.Expand(op.CastLike(1.0, like), op.Shape(ids)), axis=1)
    columns = op.Gather(op.NonZero(marks), op.Constant(value_int=1), axis=0)  # row-major: row by row, ascending
    return op.Reshape(columns, op.Shape(ids))


@script(glass, default_opset=op)
def FusedNeuronOrder(local_stats, prior_rank, lam, k):
    """The k most important neuron ids of weighted rank aggregation of the local and global rankings, most important
    first (``glass_math.fuse_rank``: its first k before the final sort).

    local_stats: [batch, I] (larger = more important); prior_rank: [I] or [batch, I] float ranks of the global
    prior (0 = most important); lam: scalar weight of the local ranking; k: [1] int64.
    f_j = lam * r_L(j) + (1 - lam) * r_G(j); ids by ascending f, ties broken by r_L (r_L itself breaks ties
    by the lower index). Output [batch, k] int64, so any first k' <= k columns are the k' kept neurons.
    """
    n = op.Shape(local_stats, start=-1)
    _, order_local = op.TopK(local_stats, n, axis=-1, largest=1, sorted=1)
    positions = op.CastLike(op.Range(0, op.Squeeze(n), 1), local_stats)
    rank_local = op.ScatterElements(op.Expand(op.CastLike(0.0, local_stats), op.Shape(local_stats)), order_local,
                                    op.Expand(positions, op.Shape(local_stats)), axis=1)
    lam_ = op.CastLike(lam, local_stats)
    fused = lam_ * rank_local + (op.CastLike(1.0, lam_) - lam_) * op.CastLike(prior_rank, local_stats)
    # in local-rank order TopK's lower-index-first rule breaks ties in f by r_L
    _, picked = op.TopK(op.GatherElements(fused, order_local, axis=1), k, axis=-1, largest=0, sorted=1)
    return op.GatherElements(order_local, picked, axis=1)


@script(glass, default_opset=op)
def FuseNeuronRanking(local_stats, prior_rank, lam, k):
    """Weighted rank aggregation of the local and global neuron rankings (``glass_math.fuse_rank``); returns the k
    kept neuron ids [batch, k], ascending. Inputs as FusedNeuronOrder."""
    return AscendingIds(FusedNeuronOrder(local_stats, prior_rank, lam, k), local_stats)


@script(glass, default_opset=op)
def FusedNeuronOrderPL(local_stats, prior_rank, lam, k):
    """Plackett-Luce MAP consensus of the local and global rankings (``glass_math.fuse_plackett_luce``): the k
    neuron ids of largest worth, largest first.

    Worths w maximise lam * log PL(local ranking | w) + (1 - lam) * log PL(global ranking | w) + log Gamma(w; a, b),
    found with a fixed number of Hunter's MM updates in float64:
    w_j = (a - 1 + c_j) / (b + sum_r weight_r * sum_{stages s <= pos_r(j), s < I-1} 1 / sum_{m at or after s} w_m),
    where c_j is the weight of the rankings in which j is not last. Orders by w, ties broken by r_L.
    Inputs and output as FusedNeuronOrder.
    """
    n = op.Shape(local_stats, start=-1)
    shape = op.Shape(local_stats)
    _, order_local = op.TopK(local_stats, n, axis=-1, largest=1, sorted=1)
    _, order_prior = op.TopK(op.Expand(prior_rank, shape), n, axis=-1, largest=0, sorted=1)
    positions = op.Cast(op.Range(0, op.Squeeze(n), 1), to=DOUBLE)
    zeros = op.Expand(op.Cast(0.0, to=DOUBLE), shape)
    rank_local = op.ScatterElements(zeros, order_local, op.Expand(positions, shape), axis=1)
    rank_prior = op.ScatterElements(zeros, order_prior, op.Expand(positions, shape), axis=1)
    last = op.Cast(op.Squeeze(n), to=DOUBLE) - 1.0
    not_last = op.Cast(op.Less(positions, last), to=DOUBLE)  # stages 0 .. I-2 are real choices
    lam_ = op.Cast(lam, to=DOUBLE)
    one = op.CastLike(1.0, lam_)
    wins = (lam_ * op.Cast(op.Less(rank_local, last), to=DOUBLE)
            + (one - lam_) * op.Cast(op.Less(rank_prior, last), to=DOUBLE))
    numerator = op.CastLike(PL_GAMMA_A - 1.0, lam_) + wins
    gamma_b = op.CastLike(PL_GAMMA_B, lam_)
    index_local = op.Cast(rank_local, to=INT64)
    index_prior = op.Cast(rank_prior, to=INT64)
    worth = op.Expand(op.Cast(1.0, to=DOUBLE), shape)
    for _ in range(PL_ITERATIONS):
        tail_local = op.CumSum(op.GatherElements(worth, order_local, axis=1), op.Constant(value_int=1), reverse=1)
        tail_prior = op.CumSum(op.GatherElements(worth, order_prior, axis=1), op.Constant(value_int=1), reverse=1)
        seen_local = op.GatherElements(op.CumSum(not_last / tail_local, op.Constant(value_int=1)), index_local, axis=1)
        seen_prior = op.GatherElements(op.CumSum(not_last / tail_prior, op.Constant(value_int=1)), index_prior, axis=1)
        worth = numerator / (gamma_b + lam_ * seen_local + (one - lam_) * seen_prior)
    _, picked = op.TopK(op.GatherElements(worth, order_local, axis=1), k, axis=-1, largest=1, sorted=1)
    return op.GatherElements(order_local, picked, axis=1)


@script(glass, default_opset=op)
def FuseNeuronRankingPL(local_stats, prior_rank, lam, k):
    """Plackett-Luce MAP consensus of the local and global rankings (``glass_math.fuse_plackett_luce``); returns the
    k kept neuron ids [batch, k], ascending. Inputs as FusedNeuronOrder."""
    return AscendingIds(FusedNeuronOrderPL(local_stats, prior_rank, lam, k), local_stats)


@script(glass, default_opset=op)
def ProjectKept(x, kept, w):
    """x @ w[:, kept] for each sequence: x [batch, seq, H], kept [batch, k] int64, w [H, I] -> [batch, seq, k].

    Rows of w^T are gathered by neuron (the transpose of a constant weight folds away when the session loads).
    """
    rows = op.Gather(op.Transpose(w, perm=[1, 0]), kept, axis=0)
    return op.MatMul(x, op.Transpose(rows, perm=[0, 2, 1]))


@script(glass, default_opset=op)
def IndexedSwiGLU(x, kept, w_gate, w_up, w_down):
    """SwiGLU FFN over the kept neurons only: down(silu(x W_gate[:, kept]) * (x W_up[:, kept])).

    x: [batch, seq, H]; kept: [batch, k] int64; w_gate, w_up: [H, I]; w_down: [I, H]. Equals the dense FFN
    when kept holds every neuron.
    """
    gate = ProjectKept(x, kept, w_gate)
    return op.MatMul(gate * op.Sigmoid(gate) * ProjectKept(x, kept, w_up), op.Gather(w_down, kept, axis=0))


@script(glass, default_opset=op)
def IndexedGeGLU(x, kept, w_gate, w_up, w_down):
    """GeGLU FFN (tanh-approximated GELU, as Gemma) over the kept neurons only; shapes as IndexedSwiGLU."""
    gate = op.Gelu(ProjectKept(x, kept, w_gate), approximate="tanh")
    return op.MatMul(gate * ProjectKept(x, kept, w_up), op.Gather(w_down, kept, axis=0))


@script(glass, default_opset=op)
def IndexedGeGLUErf(x, kept, w_gate, w_up, w_down):
    """GeGLU FFN (exact erf GELU) over the kept neurons only; shapes as IndexedSwiGLU."""
    gate = op.Gelu(ProjectKept(x, kept, w_gate))
    return op.MatMul(gate * ProjectKept(x, kept, w_up), op.Gather(w_down, kept, axis=0))


@script(glass, default_opset=op)
def ProjectKeptInt4(x, kept, b, scales):
    """x @ W[:, kept] for a 4-bit W [K, N] as MatMulNBits holds it (B [N, K / 32, 16], scales [N, K / 32]): the kept
    neurons' rows of B, dequantised exactly by GatherBlockQuantized. x [batch, seq, K], kept [batch, k] -> [batch,
    seq, k]."""
    rows = op.Reshape(b, op.Concat(op.Shape(b, start=0, end=1), op.Constant(value_ints=[-1]), axis=0))  # [N, K / 2]
    kept_rows = ms.GatherBlockQuantized(rows, kept, scales, bits=4, block_size=32, gather_axis=0, quantize_axis=1)
    return op.MatMul(x, op.Transpose(kept_rows, perm=[0, 2, 1]))


@script(glass, default_opset=op)
def KeptInt4Inputs(b, scales, kept):
    """W[kept, :] [batch, k, N] of a 4-bit W [K, N] as MatMulNBits holds it (B [N, K / 32, 16], scales [N, K / 32]),
    for kept input features (the down projection's neurons), exactly: input feature j's code is the low (j even) or
    high nibble of byte j // 2 of each row of B, its scale that of block j // 32."""
    rows = op.Reshape(b, op.Concat(op.Shape(b, start=0, end=1), op.Constant(value_ints=[-1]), axis=0))  # [N, K / 2]
    two = op.Constant(value_int=2)
    packed = op.Gather(rows, op.Div(kept, two), axis=1)  # [N, batch, k]
    shift = op.Cast(op.Mod(kept, two) * op.Constant(value_int=4), to=UINT8)
    low_nibble = op.Constant(value=ir.tensor(15, ir.DataType.UINT8))
    codes = op.BitwiseAnd(op.BitShift(packed, shift, direction="RIGHT"), low_nibble)
    block_scales = op.Gather(scales, op.Div(kept, op.Constant(value_int=32)), axis=1)  # [N, batch, k]
    weights = (op.Cast(codes, to=ir.DataType.FLOAT) - op.Constant(value_float=8.0)) * block_scales
    return op.Transpose(weights, perm=[1, 2, 0])


@script(glass, default_opset=op)
def IndexedSwiGLUInt4(x, kept, gate_b, gate_scales, up_b, up_scales, down_b, down_scales):
    """IndexedSwiGLU over 4-bit weights, each given as MatMulNBits' B and scales: only the kept neurons' codes are
    read, dequantised exactly; the products run in float."""
    gate = ProjectKeptInt4(x, kept, gate_b, gate_scales)
    up = ProjectKeptInt4(x, kept, up_b, up_scales)
    return op.MatMul(gate * op.Sigmoid(gate) * up, KeptInt4Inputs(down_b, down_scales, kept))


@script(glass, default_opset=op)
def IndexedGeGLUInt4(x, kept, gate_b, gate_scales, up_b, up_scales, down_b, down_scales):
    """IndexedGeGLU (tanh GELU) over 4-bit weights; inputs as IndexedSwiGLUInt4."""
    gate = op.Gelu(ProjectKeptInt4(x, kept, gate_b, gate_scales), approximate="tanh")
    return op.MatMul(gate * ProjectKeptInt4(x, kept, up_b, up_scales), KeptInt4Inputs(down_b, down_scales, kept))


@script(glass, default_opset=op)
def IndexedGeGLUErfInt4(x, kept, gate_b, gate_scales, up_b, up_scales, down_b, down_scales):
    """IndexedGeGLU (erf GELU) over 4-bit weights; inputs as IndexedSwiGLUInt4."""
    gate = op.Gelu(ProjectKeptInt4(x, kept, gate_b, gate_scales))
    return op.MatMul(gate * ProjectKeptInt4(x, kept, up_b, up_scales), KeptInt4Inputs(down_b, down_scales, kept))


INDEXED_FFN = {"silu": IndexedSwiGLU, "gelu_tanh": IndexedGeGLU, "gelu": IndexedGeGLUErf}
INDEXED_FFN_INT4 = {"silu": IndexedSwiGLUInt4, "gelu_tanh": IndexedGeGLUInt4, "gelu": IndexedGeGLUErfInt4}
FUSION_OPS = dict(zip(FUSIONS, (FuseNeuronRanking, FuseNeuronRankingPL)))  # glass_math's fusion names
FUSION_ORDER_OPS = dict(zip(FUSIONS, (FusedNeuronOrder, FusedNeuronOrderPL)))


def function_protos(function) -> list:
    """The FunctionProto of an ai.glass function, preceded by those of the ai.glass functions it calls."""
    proto = function.to_function_proto()
    called = [globals()[n.op_type] for n in proto.node if n.domain == DOMAIN]
    found = [p for f in dict.fromkeys(called) for p in function_protos(f)]
    return list({p.name: p for p in [*found, proto]}.values())


def add_function(model: ir.Model, function) -> str:
    """Attach an ai.glass function, and the ai.glass functions it calls, to the model (once); return its op type."""
    model.opset_imports.setdefault(DOMAIN, VERSION)
    if function.name.endswith("Int4"):
        model.opset_imports.setdefault(ms.domain, ms.version)
    for proto in function_protos(function):
        model.functions.setdefault((DOMAIN, proto.name, ""), ir.serde.deserialize_function(proto))
    return function.name


@script(glass, default_opset=op)
def GatherKeptPanels(w_gate_up_t, w_down, kept, width, hidden_width):
    """Compact FFN weights of the kept neurons, one set per sequence, in panels for decode.

    w_gate_up_t: [2I, H], the gate then the up weights transposed; w_down: [I, H] (a neuron's weights are
    contiguous rows of both); kept: [batch, k] int64; width: [1], dividing k; hidden_width: [1], dividing H.
    Returns gate_up [batch, 2k / width, H, width] (gate panels, then up panels) and down
    [batch, H / hidden_width, k, hidden_width]. Panel j of gate holds the gate columns of kept neurons
    j*width .. (j+1)*width - 1, contiguous, so a one-token matmul streams each panel once, as ONNX Runtime does
    with prepacked constants.
    """
    size = op.Div(op.Shape(w_gate_up_t, start=0, end=1), op.Constant(value_ints=[2]))
    rows = op.Gather(w_gate_up_t, op.Concat(kept, kept + size, axis=-1), axis=0)  # [batch, 2k, H]
    groups = op.Concat(op.Constant(value_ints=[0, -1]), width, op.Shape(w_gate_up_t, start=1), axis=0)
    gate_up = op.Transpose(op.Reshape(rows, groups), perm=[0, 1, 3, 2])
    hidden_panels = op.Concat(op.Constant(value_ints=[0, 0, -1]), hidden_width, axis=0)
    down = op.Transpose(op.Reshape(op.Gather(w_down, kept, axis=0), hidden_panels), perm=[0, 2, 1, 3])
    return gate_up, down
