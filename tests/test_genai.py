"""onnxruntime-genai runs a GLASS artifact through its decoder-pipeline (compile --genai) with the same tokens."""

import json

import pytest

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed")

from glass_onnx.runtime import Generator  # noqa: E402


@pytest.mark.parametrize("method,weights,budget", [("a-glass", "fp32", "uniform"), ("griffin", "fp32", "uniform"),
                                                   ("a-glass", "int4", "uniform"),
                                                   ("a-glass", "fp32", "32,64,48")])  # k per layer
def test_genai_pipeline_generates_the_same_tokens(tiny_compiled, method, weights, budget):
    artifact = tiny_compiled(method=method, sparsity=0.5, genai=True, weights=weights, budget=budget)
    config = json.loads((artifact / "genai_config.json").read_text())
    assert config["model"]["type"] == "decoder-pipeline"
    ours = Generator(artifact, layout="reference")  # genai runs the reference graphs
    prompt = ours.encode("The lighthouse keeper climbed the stairs", chat=False)
    expected = ours.generate(prompt, max_new_tokens=24, ignore_eos=True).tokens

    model = og.Model(str(artifact))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 24, min_length=len(prompt) + 24)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    del generator  # teardown must be clean too (an unlisted graph output used to corrupt genai's heap)
    assert tokens == expected
