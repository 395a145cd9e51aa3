"""Runtime pieces without a model: sampling, stop strings and streaming."""

import numpy as np

from glass_onnx.runtime import Sampler, SamplingConfig
from glass_onnx.runtime.generator import _stable_prefix


def test_greedy_and_seeded_sampling():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    assert Sampler(SamplingConfig())(logits) == 1
    draws = [Sampler(SamplingConfig(temperature=1.0, seed=7))(logits) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same choice
    top1 = {Sampler(SamplingConfig(temperature=5.0, top_k=1, seed=s))(logits) for s in range(20)}
    assert top1 == {1}
    nucleus = {Sampler(SamplingConfig(temperature=1.0, top_p=0.5, seed=s))(logits) for s in range(50)}
    assert nucleus == {1}  # token 1 alone holds over half the mass
    spread = {Sampler(SamplingConfig(temperature=1.0, seed=s))(logits) for s in range(200)}
    assert {1, 2} <= spread


def test_streaming_holds_back_partial_stop_strings():
    assert _stable_prefix("Hello wor", ("world!",)) == "Hello "
    assert _stable_prefix("Hello \ufffd", ()) == "Hello "
    assert _stable_prefix("Hello", ("xyz",)) == "Hello"


def test_stop_strings_and_streaming_through_the_generator(tiny_dense):
    from glass_onnx.runtime import Generator

    generator = Generator(tiny_dense)
    prompt = generator.encode("The lighthouse", chat=False)
    full = generator.generate(prompt, max_new_tokens=20, ignore_eos=True)
    assert len(full.tokens) == 20 and full.stop_reason == "length"
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    pieces = []
    cut = generator.generate(prompt, max_new_tokens=20, stop_strings=(stop,), on_text=pieces.append, ignore_eos=True)
    assert cut.stop_reason == "stop_string" and stop not in cut.text and full.text.startswith(cut.text)
    assert "".join(pieces) == cut.text
