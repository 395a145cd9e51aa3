"""GLASS compile on the other architectures' tiny random models: Qwen2 (biased attention projections, untied head),
Qwen3 (per-head q/k norms), Mistral, Gemma-3 (gelu-tanh GLU, sliding-window layers, scaled embeddings), Gemma-2
(soft caps), Phi-3 (fused gate_up projection) and StableLM (LayerNorm, partial rotary). At sparsity 0 both layouts
reproduce the dense export; at 50% both keep glass_math's selection on the prefill's own statistic and decode
alike, with fp32 weights and with int4."""

import numpy as np
import pytest
from conftest import compile_tiny

from glass_onnx.passes import glass_math
from glass_onnx.runtime import load_manifest, open_decoder

PROMPT = np.array([[5, 17, 42, 99, 7, 250, 311, 12, 64, 128, 3, 77]])
LAYOUTS = ("reference", "fast")


@pytest.fixture(scope="module", params=["qwen2", "qwen3", "mistral", "gemma3_text", "gemma2", "phi3", "stablelm"])
def arch_dense(request, tmp_path_factory):
    from tiny_models import save_tiny_model

    from glass_onnx.compiler.export import export_dense

    root = tmp_path_factory.mktemp(request.param)
    return export_dense(str(save_tiny_model(root / "hf", request.param)), root / "dense")


def greedy_logits(artifact, layout="auto", steps=6):
    """Prefill logits, then each greedy decode step's, as one list."""
    decoder = open_decoder(artifact, layout=layout)
    state = decoder.new_state()
    out = [decoder.prefill(state, PROMPT)[0, -1]]
    for _ in range(steps):
        out.append(decoder.decode(state, np.array([[int(np.argmax(out[-1]))]]))[0, -1])
    return decoder, state, out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_glass_at_sparsity_zero_reproduces_the_dense_export(arch_dense, tmp_path, layout):
    artifact = compile_tiny(arch_dense, tmp_path / "a0", method="a-glass", sparsity=0.0)
    _, _, dense = greedy_logits(arch_dense)
    _, _, glass = greedy_logits(artifact, layout)
    assert max(np.abs(a - b).max() for a, b in zip(glass, dense)) < 1e-4


def test_both_layouts_keep_the_reference_selection_and_decode_alike(arch_dense, tmp_path):
    artifact = compile_tiny(arch_dense, tmp_path / "a50", method="a-glass", sparsity=0.5)
    glass = load_manifest(artifact)["glass"]
    prior_rank = np.load(artifact / "prior.npz")["rank"]
    runs = {layout: greedy_logits(artifact, layout) for layout in LAYOUTS}
    stats = np.stack([v.numpy() for v in runs["reference"][1].neuron_stats], axis=1)[0]
    expected = glass_math.select(stats, prior_rank, glass["lam"], glass["k"], glass["fusion"])
    for layout, (decoder, state, _) in runs.items():
        assert np.array_equal(np.stack(decoder.kept_neurons(state), axis=1)[0], expected), layout
    reference, fast = runs["reference"][2], runs["fast"][2]
    assert max(np.abs(a - b).max() for a, b in zip(reference, fast)) < 1e-4
    _, _, dense = greedy_logits(arch_dense)
    assert np.abs(reference[-1] - dense[-1]).max() > 1e-3  # sparsity really prunes


def test_int4_compiles_and_both_layouts_agree(arch_dense, tmp_path):
    """int4 on every architecture (a packed, biased q/k/v, Qwen2's, once failed to compile): the kept blocks are the
    same in both layouts, which decode alike up to MatMulNBits' int8 activations."""
    artifact = compile_tiny(arch_dense, tmp_path / "int4", method="a-glass", sparsity=0.5, weights="int4")
    fast, reference = open_decoder(artifact), open_decoder(artifact, layout="reference")
    s_fast, s_ref = fast.new_state(), reference.new_state()
    fast.prefill(s_fast, PROMPT)
    reference.prefill(s_ref, PROMPT)
    assert all(np.array_equal(a, b) for a, b in zip(fast.kept_neurons(s_fast), reference.kept_neurons(s_ref)))
    for token in (3, 99, 250):
        a, b = fast.decode(s_fast, np.array([[token]])), reference.decode(s_ref, np.array([[token]]))
        assert np.abs(a - b).max() < 0.03 * np.abs(b).max()
