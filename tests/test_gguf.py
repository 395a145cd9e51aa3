"""GGUF files written as llama.cpp's converter lays them out (Llama, with and without Llama 3's RoPE scaling, Qwen2,
Qwen3, Phi-3 with and without LongRoPE, Gemma-2, StableLM): they load as the very model they were written from
(weights, tokenizer, chat template, rotary scaling, the fields transformers' reader drops), and two go through export
and GLASS compile."""

import numpy as np
import pytest
import torch
from conftest import compile_tiny
from test_architectures import greedy_logits
from test_export import check_against_torch, torch_model
from tiny_gguf import write_gguf
from tiny_models import TEXT, random_model, save_tiny_model, tiny_config, tiny_tokenizer

from glass_onnx.compiler.sources import load_model, resolve

WORDS = TEXT.split("Numbers")[0]
# tiny Qwen3's head_dim (16) is not Qwen3Config's default (128); transformers reads neither Phi-3's sliding window
# nor Gemma-2's soft caps (the tiny ones are not the defaults) from a GGUF
ARCHS = ["llama", "qwen2", "qwen3", "phi3", "gemma2", "stablelm"]


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {arch: (hf := save_tiny_model(root / arch, arch), write_gguf(hf, root / f"{arch}.gguf", arch))
            for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_a_gguf_loads_as_the_model_it_was_written_from(tiny_ggufs, arch):
    hf_dir, gguf = tiny_ggufs[arch]
    model, tokenizer = load_model(resolve(str(gguf)))
    reference, reference_tokenizer = load_model(resolve(str(hf_dir)))
    # words only: transformers gives a qwen2 GGUF Qwen's own pre-tokenizer, which splits digits unlike the tiny one's
    ids = reference_tokenizer(WORDS, return_tensors="pt").input_ids
    assert torch.equal(tokenizer(WORDS, return_tensors="pt").input_ids, ids)
    chat = [{"role": "user", "content": "Name a river."}]
    assert (tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == reference_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_a_llama3_gguf_keeps_its_rope_scaling(tmp_path):
    """Llama 3.1+ GGUFs carry their RoPE scaling as llama.cpp's rope_freqs tensor, which transformers' reader drops."""
    config = tiny_config("llama")
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    reference = random_model(config)
    reference.save_pretrained(tmp_path / "hf")
    tiny_tokenizer().save_pretrained(tmp_path / "hf")
    gguf = write_gguf(tmp_path / "hf", tmp_path / "llama3.gguf", "llama")
    model, _ = load_model(resolve(str(gguf)))
    ids = torch.arange(3, 203)[None]  # past the 64 positions the scaling was trained for
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    from glass_onnx.compiler.export import export_dense

    check_against_torch(export_dense(str(gguf), tmp_path / "dense"), reference, steps=3, prompt=100)


def test_a_phi4_mini_like_gguf_keeps_its_longrope_and_partial_rotary(tmp_path):
    """Phi-4-mini's GGUF (llama.cpp arch phi3): LongRoPE factors as tensors, three quarters of each head rotated;
    transformers' reader drops both."""
    config = tiny_config("phi3")
    config.rope_parameters = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                              "short_factor": [1.0 + i / 10 for i in range(6)],
                              "long_factor": [2.0 + i for i in range(6)],
                              "original_max_position_embeddings": 32}
    config.original_max_position_embeddings = 32
    reference = random_model(config)
    reference.save_pretrained(tmp_path / "hf")
    tiny_tokenizer().save_pretrained(tmp_path / "hf")
    gguf = write_gguf(tmp_path / "hf", tmp_path / "phi4-mini.gguf", "phi3")
    model, _ = load_model(resolve(str(gguf)))
    for length in (20, 100):  # within and past the 32 positions the short factors are for
        ids = torch.arange(3, 3 + length)[None]
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    from glass_onnx.compiler.export import export_dense

    # the export follows torch from short prompts into the long factors, and from a long prompt
    dense = export_dense(str(gguf), tmp_path / "dense")
    check_against_torch(dense, reference, steps=8, prompt=28)
    check_against_torch(dense, reference, steps=3, prompt=60)


@pytest.mark.parametrize("arch", ["qwen3", "phi3"])
def test_a_gguf_exports_and_compiles(tiny_ggufs, tmp_path, arch):
    from glass_onnx.compiler.export import export_dense

    hf_dir, gguf = tiny_ggufs[arch]
    dense = export_dense(str(gguf), tmp_path / "dense")
    check_against_torch(dense, torch_model(hf_dir), steps=3)
    artifact = compile_tiny(dense, tmp_path / "a0", method="a-glass", sparsity=0.0)
    _, _, reference = greedy_logits(dense)
    _, _, glass = greedy_logits(artifact)
    assert max(np.abs(a - b).max() for a, b in zip(glass, reference)) < 1e-4
