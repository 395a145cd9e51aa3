"""The dense warm-up: the first W generated tokens run through prefill (dense, counted in the statistic), then
decode goes sparse on the neurons chosen from the prompt and those W tokens."""

import numpy as np
import pytest

from glass_onnx.passes import glass_math
from glass_onnx.runtime import Generator, GlassError, load_manifest, open_decoder

PROMPT = "The lighthouse keeper climbed the stairs"
W = 3


def stats(state):
    return np.stack([v.numpy()[0] for v in state.neuron_stats])


@pytest.mark.parametrize("layout,weights", [("reference", "fp32"), ("fast", "fp32"), ("fast", "int4")])
def test_warmup_tokens_are_dense_and_choose_the_neurons(tiny_dense, tiny_compiled, layout, weights):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5, weights=weights)
    generator = Generator(artifact, layout=layout)
    prompt = generator.encode(PROMPT, chat=False)
    warm = generator.generate(prompt, 10, ignore_eos=True, warmup=W).tokens
    # the prompt's and the W warm-up tokens' logits are the dense model's: its prefill graph's, step by step (an
    # int4 artifact's neurons are permuted before quantising, so its dense model is its own), the export's for fp32
    reference = open_decoder(artifact, layout="reference")
    state = reference.new_state()
    logits, dense = reference.prefill(state, np.array([prompt])), []
    for _ in range(W + 1):
        dense.append(int(np.argmax(logits[0, -1])))
        logits = reference.prefill(state, np.array([dense[-1:]]))
    assert warm[: W + 1] == dense
    if weights == "fp32":
        assert Generator(tiny_dense).generate(prompt, W + 1, ignore_eos=True).tokens == dense

    # the kept neurons: GLASS's selection over the prompt and the W warm-up tokens, as if they were all prompt
    decoder = open_decoder(artifact, layout=layout)
    state = decoder.new_state()
    logits = decoder.prefill_prompt(state, np.array([prompt]), warmup=W)
    steps = []
    for _ in range(9):
        steps.append(int(np.argmax(logits[0, -1])))
        logits = decoder.decode(state, np.array([[steps[-1]]]))
    assert steps == warm[:9]
    whole = decoder.new_state()
    decoder.prefill(whole, np.array([prompt + warm[:W]]))
    np.testing.assert_allclose(stats(state), stats(whole), rtol=1e-4, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(decoder.kept_neurons(state), decoder.kept_neurons(whole)))
    if weights == "fp32":  # neuron by neuron, in the model's order: GLASS's selection in numpy
        glass = load_manifest(artifact)["glass"]
        want = glass_math.select(stats(whole), np.load(artifact / "prior.npz")["rank"], glass["lam"],
                                 glass["k_per_layer"])
        assert all(np.array_equal(k[0], w) for k, w in zip(decoder.kept_neurons(state), want))
    cold_state = decoder.new_state()
    decoder.prefill_prompt(cold_state, np.array([prompt]))
    if weights == "fp32":  # (the tiny int4 artifact chooses among 3 blocks: the same ones, here)
        assert not all(np.array_equal(a, b)
                       for a, b in zip(decoder.kept_neurons(state), decoder.kept_neurons(cold_state)))


def test_teacher_forcing_splits_at_the_warmup(tiny_compiled):
    """One multi-token decode call (eval's teacher forcing) gives the logits of stepping token by token."""
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    decoder = open_decoder(artifact, layout="reference")
    prompt = np.array([[5, 17, 33, 41, 8, 90]])
    tokens = np.array([[12, 7, 60, 3, 99, 21, 14]])
    state = decoder.new_state()
    decoder.prefill_prompt(state, prompt, warmup=W)
    forced = decoder.decode(state, tokens)
    state = decoder.new_state()
    decoder.prefill_prompt(state, prompt, warmup=W)
    stepped = np.concatenate([decoder.decode(state, tokens[:, i : i + 1]) for i in range(tokens.shape[1])], 1)
    np.testing.assert_allclose(forced, stepped, rtol=1e-4, atol=1e-4)
    assert state.warmup_left == 0


def test_the_artifact_carries_its_default_warmup(tiny_dense, tmp_path):
    from conftest import compile_tiny

    artifact = compile_tiny(tiny_dense, tmp_path / "warm", method="a-glass", sparsity=0.5, warmup=W)
    generator = Generator(artifact)
    assert load_manifest(artifact)["glass"]["warmup_tokens"] == W and generator.warmup == W
    prompt = generator.encode(PROMPT, chat=False)
    assert generator.generate(prompt, 8, ignore_eos=True).tokens == \
        generator.generate(prompt, 8, ignore_eos=True, warmup=W).tokens
    with pytest.raises(GlassError, match="--warmup must be 0 or more"):
        generator.generate(prompt, 4, warmup=-1)
    from glass_onnx.compiler.compile import CompileOptions

    with pytest.raises(GlassError, match="--warmup must be 0 or more"):
        CompileOptions(warmup=-2)
