"""GLASS compile on a tiny random model: exactness at sparsity 0, selection equal to the torch reference,
chunked prefill, and sparse decode equal to GRIFFIN-style weight slicing."""

import numpy as np
import pytest
import torch_reference as reference

from glass_onnx.passes import glass_math
from glass_onnx.runtime import Decoder, Generator, load_manifest, open_decoder

PROMPT = np.array([[5, 17, 42, 99, 7, 250, 311, 12, 64, 128, 3, 77, 200, 31]])


LAYOUTS = ["reference", "fast"]


def prefill(artifact, prompt=PROMPT, chunks=1, layout="reference"):
    decoder = open_decoder(artifact, layout=layout)
    state = decoder.new_state()
    for part in np.array_split(prompt, chunks, axis=1):
        logits = decoder.prefill(state, part)
    return decoder, state, logits


def stats_of(state):
    return np.stack([v.numpy() for v in state.neuron_stats], axis=1)  # [batch, layers, I]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sparsity_zero_reproduces_dense_logits(tiny_dense, tiny_compiled, layout):
    compiled = tiny_compiled(method="dense", sparsity=0.0)
    dense_dec, dense_state, dense_logits = prefill(tiny_dense)
    dec, state, logits = prefill(compiled, layout=layout)
    assert np.abs(logits - dense_logits).max() < 1e-4
    tokens = []
    for _ in range(12):
        token = np.array([[int(np.argmax(logits[0, -1]))]])
        tokens.append(int(token[0, 0]))
        assert int(np.argmax(dense_logits[0, -1])) == tokens[-1]
        logits, dense_logits = dec.decode(state, token), dense_dec.decode(dense_state, token)
        assert np.abs(logits - dense_logits).max() < 1e-4


@pytest.mark.parametrize("method,fusion", [("griffin", "rank"), ("a-glass", "rank"), ("i-glass", "rank"),
                                           ("global-a", "rank"), ("random", "rank"), ("a-glass", "plackett-luce")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_selection_equals_torch_reference(tiny_compiled, tiny_model, method, fusion, layout):
    artifact = tiny_compiled(method=method, sparsity=0.5, fusion=fusion)
    glass = load_manifest(artifact)["glass"]
    prior_rank = np.load(artifact / "prior.npz")["rank"]
    decoder, state, _ = prefill(artifact, layout=layout)
    kept = np.stack(decoder.kept_neurons(state), axis=1)[0]  # [layers, k]
    assert kept.shape == (3, glass["k"])
    # 1. the fusion op on ORT's own statistic equals the torch selection exactly
    ort_stats = stats_of(state)[0]
    assert np.array_equal(kept, glass_math.select(ort_stats, prior_rank, glass["lam"], glass["k"], fusion))
    # 2. the statistic equals torch's, and so does the whole selection (up to float near-ties)
    ref_stats = reference.local_stats(tiny_model, PROMPT)[0]
    np.testing.assert_allclose(ort_stats, ref_stats, rtol=1e-4, atol=1e-6)
    ref_kept = glass_math.select(ref_stats, prior_rank, glass["lam"], glass["k"], fusion)
    for layer in range(3):
        differ = np.setxor1d(kept[layer], ref_kept[layer])
        values = np.sort(ref_stats[layer][differ])
        assert len(differ) == 0 or np.allclose(values[0], values[-1], rtol=1e-4), f"layer {layer}: {differ}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunked_prefill_selects_the_same_neurons(tiny_compiled, layout):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    one, state_one, logits_one = prefill(artifact, layout=layout)
    three, state_three, logits_three = prefill(artifact, chunks=3, layout=layout)
    np.testing.assert_allclose(stats_of(state_three), stats_of(state_one), rtol=1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(one.kept_neurons(state_one), three.kept_neurons(state_three)))
    np.testing.assert_allclose(logits_three[:, -1], logits_one[:, -1], atol=1e-4)


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sparse_decode_equals_sliced_torch_model(tiny_compiled, tiny_model, sparsity, layout):
    artifact = tiny_compiled(method="griffin", sparsity=sparsity)
    decoder, state, _ = prefill(artifact, layout=layout)
    kept = np.stack(decoder.kept_neurons(state), axis=1)[0]
    continuation = np.array([[8, 9, 10, 300, 301, 5]])
    logits = decoder.decode(state, continuation)  # teacher-forced, several tokens per call
    ref = reference.sparse_continuation_logits(tiny_model, PROMPT[0], continuation[0], kept)
    assert np.abs(logits[0] - ref).max() < 1e-3
    # and one token at a time gives the same
    decoder2, state2, _ = prefill(artifact, layout=layout)
    steps = np.concatenate([decoder2.decode(state2, continuation[:, i : i + 1])[0] for i in range(6)])
    assert np.abs(steps - ref).max() < 1e-3


def test_sparse_changes_logits_and_generates(tiny_compiled):
    artifact = tiny_compiled(method="a-glass", sparsity=0.75)
    generator = Generator(artifact)
    result = generator.generate(PROMPT[0].tolist(), max_new_tokens=8)
    assert len(result.tokens) == 8
    dense = tiny_compiled(method="dense", sparsity=0.0)
    d1 = Decoder(artifact)
    st = d1.new_state()
    d1.prefill(st, PROMPT)
    dd = Decoder(dense)
    sd = dd.new_state()
    dd.prefill(sd, PROMPT)
    token = np.array([[8]])
    assert np.abs(d1.decode(st, token) - dd.decode(sd, token)).max() > 1e-3  # sparsity really prunes


def test_compiled_graphs_pass_the_checker_and_share_weights(tiny_compiled):
    import onnx

    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    for name in ("prefill.onnx", "decode.onnx"):
        onnx.checker.check_model(str(artifact / name), full_check=True)
    files = {p.name for p in artifact.iterdir()}
    assert "weights.bin" in files and not any(f.endswith(".data") for f in files)
    prefill_model = onnx.load(artifact / "prefill.onnx", load_external_data=False)
    decode_model = onnx.load(artifact / "decode.onnx", load_external_data=False)
    assert {f.name for f in prefill_model.functions} == {"AccumulateNeuronStats", "FusedNeuronOrder", "AscendingIds"}
    assert {f.name for f in decode_model.functions} == {"IndexedSwiGLU", "ProjectKept"}
    ops = [n.op_type for n in decode_model.graph.node if n.domain == "ai.glass"]
    assert ops == ["IndexedSwiGLU"] * 3
    fast = load_manifest(artifact)["fast"]
    for name in (fast["decoder"], fast["select"], fast["compact"]):
        onnx.checker.check_model(str(artifact / name), full_check=True)
    decoder_model = onnx.load(artifact / fast["decoder"], load_external_data=False)
    # the fast decoder keeps the FFN weights as (prepacked) constants and takes the compact ones as inputs
    names = {i.name for i in decoder_model.graph.input}
    assert names >= {f"ffn.{layer}.{p}" for layer in range(3) for p in ("gate_up", "down")}
    assert sum(sorted(i.dims) == [64, 96] for i in decoder_model.graph.initializer) == 9
    compact_model = onnx.load(artifact / fast["compact"], load_external_data=False)
    assert [n.op_type for n in compact_model.graph.node] == ["GatherKeptPanels"]
    # the norms' statistics outputs stay unnamed (not computed) after every pipeline renames values
    for graph in (prefill_model.graph, decode_model.graph, decoder_model.graph):
        norms = [n for n in graph.node if n.op_type == "SkipSimplifiedLayerNormalization"]
        assert len(norms) == 6 and all(list(n.output)[1:3] == ["", ""] for n in norms)
    entry = fast["ffn_weights"][0]
    assert (len(fast["ffn_weights"]) == 3 and entry["gate_up"]["shape"] == [192, 64]
            and entry["down"]["shape"] == [96, 64])


def test_fast_layout_is_the_default_and_matches_the_reference(tiny_compiled):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    assert type(open_decoder(artifact)).__name__ == "FastDecoder"
    fast, ref = Generator(artifact), Generator(artifact, layout="reference")
    assert (fast.generate(PROMPT[0].tolist(), max_new_tokens=10).tokens
            == ref.generate(PROMPT[0].tolist(), max_new_tokens=10).tokens)


@pytest.mark.parametrize("keep", [10, 33])  # panels of 2 and of 1 neuron
def test_fast_layout_decodes_any_kept_count_like_the_reference(tiny_compiled, keep):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    overrides = {"glass.k": np.array([keep], np.int64)}
    logits = {}
    for layout in LAYOUTS:
        decoder = open_decoder(artifact, layout=layout)
        state = decoder.new_state()
        decoder.prefill(state, PROMPT, overrides=overrides)
        logits[layout] = [decoder.decode(state, np.array([[t]])) for t in (3, 99, 250)]
    for fast, ref in zip(logits["fast"], logits["reference"]):
        assert np.abs(fast - ref).max() < 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lam_and_k_can_be_overridden_per_run(tiny_compiled, layout):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    decoder = open_decoder(artifact, layout=layout)
    state = decoder.new_state()
    decoder.prefill(state, PROMPT, overrides={"glass.k": np.array([10], np.int64),
                                              "glass.lam": np.array(1.0, np.float32)})
    kept = decoder.kept_neurons(state)
    assert kept[0].shape == (1, 10)
    stats = stats_of(state)[0]
    griffin = glass_math.select(stats, np.zeros_like(stats, dtype=np.float32), 1.0, 10)
    assert np.array_equal(np.stack(kept, 1)[0], griffin)
