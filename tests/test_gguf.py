"""GGUF files written as llama.cpp's converter lays them out (Llama, with and without Llama 3's RoPE scaling, Qwen2,
Qwen3): they load as the very model they were written from (weights, tokenizer, chat template, rotary scaling), and
one goes through export and GLASS compile."""

import numpy as np
import pytest
import torch
from conftest import compile_tiny
from test_architectures import greedy_logits
from test_export import check_against_torch, torch_model
from tiny_gguf import write_gguf
from tiny_models import TEXT, save_tiny_model, tiny_config, tiny_tokenizer

from glass_onnx.compiler.sources import load_model, resolve

WORDS = TEXT.split("Numbers")[0]
ARCHS = ["llama", "qwen2", "qwen3"]  # tiny Qwen3's head_dim (16) is not Qwen3Config's default (128)


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
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama")
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in reference.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    reference.save_pretrained(tmp_path / "hf")
    tiny_tokenizer().save_pretrained(tmp_path / "hf")
    gguf = write_gguf(tmp_path / "hf", tmp_path / "llama3.gguf", "llama")
    model, _ = load_model(resolve(str(gguf)))
    ids = torch.arange(3, 203)[None]  # past the 64 positions the scaling was trained for
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    from glass_onnx.compiler.export import export_dense

    check_against_torch(export_dense(str(gguf), tmp_path / "dense"), reference, steps=3, prompt=100)


def test_a_qwen3_gguf_exports_and_compiles(tiny_ggufs, tmp_path):
    from glass_onnx.compiler.export import export_dense

    hf_dir, gguf = tiny_ggufs["qwen3"]
    dense = export_dense(str(gguf), tmp_path / "dense")
    check_against_torch(dense, torch_model(hf_dir), steps=3)
    artifact = compile_tiny(dense, tmp_path / "a0", method="a-glass", sparsity=0.0)
    _, _, reference = greedy_logits(dense)
    _, _, glass = greedy_logits(artifact)
    assert max(np.abs(a - b).max() for a, b in zip(glass, reference)) < 1e-4
