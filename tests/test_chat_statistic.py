"""GLASS's prompt statistic leaves out the chat template's shared opening (system block, user header)."""

import numpy as np

from glass_onnx.passes import glass_math
from glass_onnx.runtime import Generator, load_manifest, open_decoder


def greedy(decoder, state, logits, n):
    tokens = []
    for _ in range(n):
        tokens.append(int(np.argmax(logits[0, -1])))
        logits = decoder.decode(state, np.array([[tokens[-1]]]))
    return tokens


def test_the_statistic_restarts_after_the_template_opening(tiny_compiled):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    generator = Generator(artifact, layout="reference")
    prompt = generator.encode("Why is the sky blue?", chat=True)
    opening = generator.codec.template_prefix_length(prompt)
    assert 0 < opening < len(prompt) and generator.codec.template_prefix_length(
        generator.encode("Why is the sky blue?", chat=False)) == 0
    decoder = open_decoder(artifact, layout="reference")
    ids = np.array([prompt])
    stats = lambda state: np.stack([v.numpy()[0] for v in state.neuron_stats])  # noqa: E731
    whole = decoder.new_state()
    decoder.prefill(whole, ids)
    opening_only = decoder.new_state()
    decoder.prefill(opening_only, ids[:, :opening])
    first = stats(opening_only)
    split = decoder.new_state()
    logits = decoder.prefill_prompt(split, ids, uncounted=opening, chunk=5)
    np.testing.assert_allclose(stats(split), stats(whole) - first, rtol=1e-4, atol=1e-6)  # the opening left out
    glass = load_manifest(artifact)["glass"]
    prior = np.load(artifact / "prior.npz")["rank"]
    want = glass_math.select(stats(split), prior, glass["lam"], glass["k_per_layer"])
    assert all(np.array_equal(k[0], w) for k, w in zip(decoder.kept_neurons(split), want))
    assert not all(np.array_equal(a, b) for a, b in zip(decoder.kept_neurons(split), decoder.kept_neurons(whole)))
    # generate does exactly this, and counts every token when told to
    assert generator.generate(prompt, 6, ignore_eos=True).tokens == greedy(decoder, split, logits, 6)
    whole_logits = decoder.prefill(decoder.new_state(), ids)
    state = decoder.new_state()
    decoder.prefill(state, ids)
    assert generator.generate(prompt, 6, ignore_eos=True, count_template=True).tokens == greedy(
        decoder, state, whole_logits, 6)


def test_the_fast_layout_leaves_the_opening_out_in_one_pass(tiny_compiled, monkeypatch):
    """The fast layouts mask the opening out of select's statistic instead of giving it chunks of its own: the same
    statistic and kept neurons as the reference layout's restart, in one decoder call for an unchunked prompt."""
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    generator = Generator(artifact, layout="reference")
    ids = np.array([generator.encode("Why is the sky blue?", chat=True)])
    opening = generator.codec.template_prefix_length(ids[0].tolist())
    reference, fast = open_decoder(artifact, layout="reference"), open_decoder(artifact, layout="fast")
    want = reference.new_state()
    want_logits = reference.prefill_prompt(want, ids, uncounted=opening, chunk=5)
    calls = []
    monkeypatch.setattr(fast, "_select", lambda *args, real=fast._select: calls.append(1) or real(*args))
    for chunk, n_calls in ((None, 1), (5, -(-ids.shape[1] // 5))):
        calls.clear()
        state = fast.new_state()
        logits = fast.prefill_prompt(state, ids, uncounted=opening, chunk=chunk)
        assert len(calls) == n_calls
        np.testing.assert_allclose(np.stack([v.numpy() for v in state.neuron_stats]),
                                   np.stack([v.numpy() for v in want.neuron_stats]), rtol=1e-4, atol=1e-6)
        assert all(np.array_equal(a, b) for a, b in zip(fast.kept_neurons(state), reference.kept_neurons(want)))
        assert np.abs(logits[:, -1] - want_logits[:, -1]).max() < 1e-4
