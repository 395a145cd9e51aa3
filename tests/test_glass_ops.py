"""Each ai.glass function, run alone in ONNX Runtime, against the numpy GLASS math (passes/glass_math.py)."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from glass_onnx.passes import glass_math, glass_ops

DTYPES = {np.float32: onnx.TensorProto.FLOAT, np.int64: onnx.TensorProto.INT64, np.float64: onnx.TensorProto.DOUBLE,
          np.uint8: onnx.TensorProto.UINT8}


def run_function(function, *arrays, out=np.float32, rank=2, outputs=1):
    names = [f"in{i}" for i in range(len(arrays))]
    out_names = ["out"] if outputs == 1 else [f"out{i}" for i in range(outputs)]
    node = helper.make_node(function.name, names, out_names, domain=glass_ops.DOMAIN)
    graph = helper.make_graph(
        [node], "one_op",
        [helper.make_tensor_value_info(n, DTYPES[a.dtype.type], a.shape) for n, a in zip(names, arrays)],
        [helper.make_tensor_value_info(n, DTYPES[out], [None] * rank) for n in out_names],
    )
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid(glass_ops.DOMAIN, 1)],
                              functions=glass_ops.function_protos(function))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run(None, dict(zip(names, arrays)))
    return results[0] if outputs == 1 else results


def test_accumulate_neuron_stats_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 5, 16)).astype(np.float32)
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], np.int64)
    past = rng.random((2, 16)).astype(np.float32)
    got = run_function(glass_ops.AccumulateNeuronStats, z, mask, past)
    want = past + glass_math.local_statistic(z, mask.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_accumulate_in_chunks_equals_one_call():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1, 9, 32)).astype(np.float32)
    mask = np.ones((1, 9), np.int64)
    zero = np.zeros((1, 32), np.float32)
    whole = run_function(glass_ops.AccumulateNeuronStats, z, mask, zero)
    state = zero
    for chunk in (slice(0, 3), slice(3, 7), slice(7, 9)):
        state = run_function(glass_ops.AccumulateNeuronStats, z[:, chunk], mask[:, chunk], state)
    np.testing.assert_allclose(state, whole, rtol=1e-5)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
def test_rank_fusion_matches_numpy(lam):
    rng = np.random.default_rng(2)
    n, k = 64, 20
    local = rng.random((2, n)).astype(np.float32)
    local[1, :10] = 0.5  # exact ties in the local statistic
    prior_rank = rng.permutation(n).astype(np.float32)
    got = run_function(glass_ops.FuseNeuronRanking, local, prior_rank, np.array(lam, np.float32),
                       np.array([k], np.int64), out=np.int64)
    for b in range(2):
        np.testing.assert_array_equal(got[b], glass_math.fuse_rank(local[b], prior_rank, lam, k))


@pytest.mark.parametrize("fusion", ["FuseNeuronRanking", "FuseNeuronRankingPL"])
def test_rank_fusion_takes_one_prior_per_row_as_stacked_layers_do(fusion):
    rng = np.random.default_rng(4)
    n, k = 40, 12
    local = rng.random((3, n)).astype(np.float32)
    priors = np.stack([rng.permutation(n) for _ in range(3)]).astype(np.float32)
    function = getattr(glass_ops, fusion)
    lam, keep = np.array(0.5, np.float32), np.array([k], np.int64)
    stacked = run_function(function, local, priors, lam, keep, out=np.int64)
    for row in range(3):
        alone = run_function(function, local[row:row + 1], priors[row], lam, keep, out=np.int64)
        np.testing.assert_array_equal(stacked[row], alone[0])
        assert np.all(np.diff(stacked[row]) > 0)


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8])
def test_plackett_luce_fusion_matches_numpy(lam):
    rng = np.random.default_rng(3)
    n, k = 48, 16
    local = rng.random((1, n)).astype(np.float32)
    prior_rank = rng.permutation(n).astype(np.float32)
    got = run_function(glass_ops.FuseNeuronRankingPL, local, prior_rank, np.array(lam, np.float32),
                       np.array([k], np.int64), out=np.int64)
    np.testing.assert_array_equal(got[0], glass_math.fuse_plackett_luce(local[0], prior_rank, lam, k))


def test_plackett_luce_follows_a_ranking_both_lists_agree_on():
    n = 32
    local = np.linspace(1, 0, n, dtype=np.float32)[None]  # neuron 0 most important
    prior_rank = np.arange(n, dtype=np.float32)  # same order
    got = run_function(glass_ops.FuseNeuronRankingPL, local, prior_rank, np.array(0.5, np.float32),
                       np.array([8], np.int64), out=np.int64)
    np.testing.assert_array_equal(got[0], np.arange(8))


def masked_ffn(activation, x, kept, wg, wu, wd):
    """numpy: the dense GLU FFN of each batch row with every neuron outside that row's ``kept`` zeroed."""
    act = {
        "silu": lambda g: g / (1 + np.exp(-g)),
        "gelu_tanh": lambda g: 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3))),
        "gelu": lambda g: 0.5 * g * (1 + np.vectorize(math.erf)(g / math.sqrt(2))),
    }[activation]
    mask = np.zeros((len(kept), wg.shape[1]), np.float32)
    np.put_along_axis(mask, kept, 1, axis=1)
    return (act(x @ wg) * (x @ wu) * mask[:, None]) @ wd


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh", "gelu"])
def test_indexed_ffn_equals_dense_ffn_on_kept_neurons(activation):
    rng = np.random.default_rng(4)
    h, i, k = 12, 40, 15
    x = rng.normal(size=(2, 3, h)).astype(np.float32)
    wg, wu = rng.normal(size=(2, h, i)).astype(np.float32)
    wd = rng.normal(size=(i, h)).astype(np.float32)
    kept = np.stack([np.sort(rng.choice(i, k, replace=False)) for _ in range(2)]).astype(np.int64)
    got = run_function(glass_ops.INDEXED_FFN[activation], x, kept, wg, wu, wd, rank=3)
    np.testing.assert_allclose(got, masked_ffn(activation, x, kept, wg, wu, wd), rtol=1e-4, atol=1e-4)


def test_gather_kept_panels_matches_numpy():
    rng = np.random.default_rng(5)
    h, i, k, width, hidden_width = 8, 20, 6, 2, 4
    wg, wu = rng.normal(size=(2, h, i)).astype(np.float32)
    wd = rng.normal(size=(i, h)).astype(np.float32)
    kept = np.stack([rng.choice(i, k, replace=False) for _ in range(2)]).astype(np.int64)
    gate_up, down = run_function(glass_ops.GatherKeptPanels, np.concatenate([wg.T, wu.T]), wd, kept,
                                 np.array([width]), np.array([hidden_width]), rank=4, outputs=2)
    assert gate_up.shape == (2, 2 * k // width, h, width) and down.shape == (2, h // hidden_width, k, hidden_width)
    for b in range(2):
        for j in range(k // width):
            np.testing.assert_array_equal(gate_up[b, j], wg[:, kept[b, j * width:(j + 1) * width]])
            np.testing.assert_array_equal(gate_up[b, k // width + j], wu[:, kept[b, j * width:(j + 1) * width]])
        for j in range(h // hidden_width):
            np.testing.assert_array_equal(down[b, j], wd[kept[b], j * hidden_width:(j + 1) * hidden_width])


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh", "gelu"])
def test_indexed_int4_ffn_equals_the_dequantised_ffn_on_kept_neurons(activation):
    """The int4 indexed FFN reads only the kept neurons' 4-bit codes, exactly (checked against their dequantisation)."""
    from glass_onnx.passes.quantize_weights import Int4Settings, dequantize_int4, quantize_int4

    rng = np.random.default_rng(6)
    h, i, k = 64, 96, 37  # any kept set: neuron by neuron, across 4-bit blocks
    x = rng.normal(size=(2, 3, h)).astype(np.float32)
    wg, wu = rng.normal(size=(2, h, i)).astype(np.float32)
    wd = rng.normal(size=(i, h)).astype(np.float32)
    quantised = [quantize_int4(w, Int4Settings()) for w in (wg, wu, wd)]
    wg, wu, wd = (dequantize_int4(b, s, w.shape[0]) for (b, s), w in zip(quantised, (wg, wu, wd)))
    kept = np.stack([np.sort(rng.choice(i, k, replace=False)) for _ in range(2)]).astype(np.int64)
    arrays = [a for pair in quantised for a in pair]
    got = run_function(glass_ops.INDEXED_FFN_INT4[activation], x, kept, *arrays, rank=3)
    np.testing.assert_allclose(got, masked_ffn(activation, x, kept, wg, wu, wd), rtol=1e-4, atol=1e-3)
