"""int4 weights on the tiny model: the quantised export against torch with the same dequantised weights, genai's graph
form (MatMulNBits everywhere, one 4-bit copy of a tied embedding), and the quantiser's round trip."""

import numpy as np
import onnx
import pytest
import torch
from torch_reference import dequantised_torch_model, permuted_dequantised_twin

from glass_onnx.passes.quantize_weights import Int4Settings, dequantize_int4, quantize_int4
from glass_onnx.runtime import Decoder, load_manifest


@pytest.fixture(scope="module")
def tiny_int4(tiny_dense):
    from glass_onnx.compiler.export import dense_artifact

    return dense_artifact(str(tiny_dense), weights="int4")[0]


def test_quantiser_round_trip_is_within_a_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(96, 40)).astype(np.float32)
    packed, scales = quantize_int4(w, Int4Settings())
    assert packed.shape == (40, 3, 16) and packed.dtype == np.uint8 and scales.shape == (40, 3)
    back = dequantize_int4(packed, scales, 96)
    step = np.abs(scales).repeat(32, axis=1).T  # [K, N]
    # symmetric codes -8 .. 7 with the block's largest magnitude at -8: a value of the other sign past 7 steps clips
    assert np.all(np.abs(back - w) <= step + 1e-6) and np.mean(np.abs(back - w) <= step / 2 + 1e-6) > 0.95
    assert np.array_equal(quantize_int4(back, Int4Settings())[0], packed)  # quantised values stay put


def test_int4_export_is_genai_form(tiny_int4, tiny_dense):
    manifest = load_manifest(tiny_int4)
    assert manifest["weights"] == "int4" and manifest["quantization"]["block_size"] == 32
    assert load_manifest(tiny_dense)["weights"] == "fp32"
    graph = onnx.load(tiny_int4 / "model.onnx", load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert "MatMul" not in ops and ops.count("MatMulNBits") == 5 * 3 + 1  # qkv, o, gate, up, down per layer; head
    assert ops.count("GatherBlockQuantized") == 1  # the tied embedding reads the head's 4-bit data
    nbits = next(n for n in graph.node if n.op_type == "MatMulNBits")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nbits.attribute}
    assert attributes["bits"] == 4 and attributes["block_size"] == 32 and attributes["accuracy_level"] == 4
    sizes = {p.name: p.stat().st_size for p in tiny_int4.iterdir()}
    assert sizes["model.onnx.data"] < 0.3 * {p.name: p.stat().st_size for p in tiny_dense.iterdir()}["model.onnx.data"]


def test_int4_export_matches_torch_with_the_same_weights(tiny_int4, tiny_model):
    """ORT's int4 graph against torch running the dequantised weights: equal up to MatMulNBits' int8 activations."""
    twin = dequantised_torch_model(tiny_model)
    decoder = Decoder(tiny_int4)
    ids = np.random.default_rng(1).integers(3, 400, (1, 12))
    state = decoder.new_state()
    logits = decoder.prefill(state, ids)
    with torch.no_grad():
        out = twin(torch.tensor(ids), use_cache=True)
        plain = tiny_model(torch.tensor(ids)).logits.numpy()
    want = out.logits.numpy()
    scale = np.abs(want).max()
    assert np.abs(logits - want).max() < 0.02 * scale  # int8 activations (accuracy_level 4), per block of 32
    assert np.abs(logits - want).max() < 0.25 * np.abs(plain - want).max()  # far closer than fp32 is
    for _ in range(4):
        token = np.array([[int(np.argmax(logits[0, -1]))]])
        logits = decoder.decode(state, token)
        with torch.no_grad():
            out = twin(torch.tensor(token), cache=out.cache, use_cache=True)
        assert np.abs(logits - out.logits.numpy()).max() < 0.02 * scale


PROMPT = np.array([[5, 17, 42, 99, 7, 250, 311, 12, 64, 128, 3, 77, 200, 31]])


def test_int4_dense_method_reproduces_the_int4_dense_export(tiny_int4, tiny_compiled):
    artifact = tiny_compiled(method="dense", sparsity=0.0, weights="int4")
    assert load_manifest(artifact)["weights"] == "int4" and load_manifest(artifact)["glass"]["block"] == 32
    order = np.load(artifact / "prior.npz")["order"]
    assert np.array_equal(order, np.tile(np.arange(96), (3, 1)))  # dense keeps every neuron: no reordering
    dense, glass = Decoder(tiny_int4), Decoder(artifact)
    a_state, b_state = dense.new_state(), glass.new_state()
    a, b = dense.prefill(a_state, PROMPT), glass.prefill(b_state, PROMPT)
    assert np.array_equal(a, b)  # the same 4-bit graph, plus the statistics
    for _ in range(6):
        token = np.array([[int(np.argmax(a[0, -1]))]])
        a, b = dense.decode(a_state, token), glass.decode(b_state, token)
        # the reference decode reads the kept (here: all) codes and multiplies in float; MatMulNBits in int8
        assert np.abs(a - b).max() < 0.02 * np.abs(a).max()


@pytest.mark.parametrize("method", ["a-glass", "griffin"])
def test_int4_blocks_selected_as_the_math_says_and_decode_as_the_sliced_model(tiny_compiled, tiny_model, method):
    from torch_reference import local_stats, sparse_continuation_logits

    from glass_onnx.passes import glass_math

    artifact = tiny_compiled(method=method, sparsity=0.5, weights="int4")
    glass = load_manifest(artifact)["glass"]
    prior = np.load(artifact / "prior.npz")
    decoder = Decoder(artifact)
    state = decoder.new_state()
    decoder.prefill(state, PROMPT)
    kept = np.stack(decoder.kept_neurons(state), axis=1)[0]  # [layers, k], in the artifact's neuron order
    assert kept.shape == (3, glass["k"]) and np.all(kept.reshape(3, -1, 32) % 32 == np.arange(32))  # whole blocks
    ort_stats = np.stack([v.numpy() for v in state.neuron_stats], axis=1)[0]
    assert np.array_equal(kept, glass_math.select(ort_stats, prior["rank"], glass["lam"], glass["k"], block=32))
    twin = permuted_dequantised_twin(tiny_model, prior["order"])
    ref_stats = local_stats(twin, PROMPT)[0]
    assert np.abs(ort_stats - ref_stats).max() < 0.05 * ref_stats.max()  # MatMulNBits' int8 activations in ORT
    ref_kept = glass_math.select(ref_stats, prior["rank"], glass["lam"], glass["k"], block=32)
    sums = ref_stats.reshape(3, -1, 32).sum(-1)
    for layer in range(3):
        differ = np.setxor1d(kept[layer] // 32, ref_kept[layer] // 32)
        assert len(differ) == 0 or np.ptp(sums[layer][differ]) < 0.05 * sums[layer].max(), (layer, differ)
    continuation = np.array([[8, 9, 10, 300, 301, 5]])
    logits = decoder.decode(state, continuation)[0]
    ref = sparse_continuation_logits(twin, PROMPT[0], continuation[0], kept)
    assert np.abs(logits - ref).max() < 0.03 * np.abs(ref).max()


def test_int4_fast_layout_is_the_int4_dense_model_at_sparsity_zero(tiny_int4, tiny_compiled):
    """The per-prompt decode session over every block: the very MatMulNBits of the dense int4 model."""
    from glass_onnx.runtime import open_decoder

    artifact = tiny_compiled(method="dense", sparsity=0.0, weights="int4")
    fast, dense = open_decoder(artifact), Decoder(tiny_int4)
    assert type(fast).__name__ == "CompactSessionDecoder"
    s_fast, s_dense = fast.new_state(capacity=24), dense.new_state(capacity=24)
    a, b = fast.prefill(s_fast, PROMPT), dense.prefill(s_dense, PROMPT)
    assert np.array_equal(a, b)
    for _ in range(6):
        token = np.array([[int(np.argmax(b[0, -1]))]])
        a, b = fast.decode(s_fast, token), dense.decode(s_dense, token)
        assert np.array_equal(a, b)


def test_int4_fast_layout_agrees_with_the_reference_layout(tiny_compiled):
    from glass_onnx.runtime import Generator, GlassError, open_decoder

    artifact = tiny_compiled(method="a-glass", sparsity=0.5, weights="int4")
    fast, ref = open_decoder(artifact), open_decoder(artifact, layout="reference")
    s_fast, s_ref = fast.new_state(), ref.new_state()
    a, b = fast.prefill(s_fast, PROMPT), ref.prefill(s_ref, PROMPT)
    assert np.array_equal(a, b)  # the same prompt graph
    assert all(np.array_equal(x, y) for x, y in zip(fast.kept_neurons(s_fast), ref.kept_neurons(s_ref)))
    for token in (3, 99, 250):
        a, b = fast.decode(s_fast, np.array([[token]])), ref.decode(s_ref, np.array([[token]]))
        # both multiply the kept neurons' 4-bit weights: MatMulNBits with int8 activations here, float there
        assert np.abs(a - b).max() < 0.03 * np.abs(b).max()
    prompt = PROMPT[0].tolist()
    assert Generator(artifact).generate(prompt, 10).tokens == Generator(artifact, layout="reference").generate(
        prompt, 10).tokens
    batch = fast.new_state(batch=2)
    fast.prefill(batch, np.concatenate([PROMPT, PROMPT]))
    with pytest.raises(GlassError, match="one sequence at a time"):
        fast.decode(batch, np.array([[3], [4]]))


def test_int4_fast_layout_decodes_on_the_masked_prompt_session_until_its_own_is_ready(tiny_compiled):
    """Built in the background, the compact session takes over from the prompt's session with the FFNs masked to the
    kept neurons: both are the same sparse model."""
    from glass_onnx.runtime import open_decoder

    artifact = tiny_compiled(method="a-glass", sparsity=0.5, weights="int4")
    background, direct = open_decoder(artifact), open_decoder(artifact)
    background.build_in_background, direct.build_in_background = True, False
    s_bg, s_direct = background.new_state(capacity=24), direct.new_state(capacity=24)
    background.prefill(s_bg, PROMPT), direct.prefill(s_direct, PROMPT)
    background.prepare_decode(s_bg)
    masked = s_bg.plan
    assert masked.session is background.decoder_session and masked.successor is not None
    first = background.decode(s_bg, np.array([[3]]))  # on the masked prompt session, or already the compact one
    masked.successor.result()
    second = background.decode(s_bg, np.array([[99]]))
    assert s_bg.plan is not masked and s_bg.plan.session is not background.decoder_session
    want = [direct.decode(s_direct, np.array([[t]])) for t in (3, 99)]
    assert np.abs(first - want[0]).max() < 1e-4 and np.abs(second - want[1]).max() < 1e-4


@pytest.mark.parametrize("method", ["random", "global-a", "global-i", "i-glass"])
def test_every_method_compiles_to_int4_and_decodes_on_its_blocks(tiny_compiled, method):
    """The static sets and I-GLASS too: whole blocks of the artifact's neuron order, the fast layout equal to the
    reference layout's tokens."""
    from glass_onnx.runtime import Generator, open_decoder

    artifact = tiny_compiled(method=method, sparsity=0.5, weights="int4")
    glass, prior = load_manifest(artifact)["glass"], np.load(artifact / "prior.npz")
    assert glass["block"] == 32 and glass["k"] == 64  # 48 neurons rounded up to whole blocks
    assert all(np.array_equal(np.sort(o), np.arange(96)) for o in prior["order"])  # a permutation per layer
    decoder = open_decoder(artifact)
    state = decoder.new_state()
    decoder.prefill(state, PROMPT)
    kept = np.stack(decoder.kept_neurons(state), axis=1)[0]
    assert np.all(kept.reshape(3, -1, 32) % 32 == np.arange(32))
    prompt = PROMPT[0].tolist()
    assert Generator(artifact).generate(prompt, 6).tokens == Generator(artifact, layout="reference").generate(
        prompt, 6).tokens
