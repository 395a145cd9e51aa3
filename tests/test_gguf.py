"""GGUF files of the architectures the catalog does not ship as GGUF (Llama-layout, Qwen2, Qwen3), written as
llama.cpp's converter lays them out: they load as the very model they were written from (weights, tokenizer, chat
template), and one goes through export and GLASS compile."""

import numpy as np
import pytest
import torch
from conftest import compile_tiny
from test_architectures import greedy_logits
from test_export import check_against_torch, torch_model
from tiny_gguf import write_gguf
from tiny_models import TEXT, save_tiny_model

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


def test_a_qwen3_gguf_exports_and_compiles(tiny_ggufs, tmp_path):
    from glass_onnx.compiler.export import export_dense

    hf_dir, gguf = tiny_ggufs["qwen3"]
    dense = export_dense(str(gguf), tmp_path / "dense")
    check_against_torch(dense, torch_model(hf_dir), steps=3)
    artifact = compile_tiny(dense, tmp_path / "a0", method="a-glass", sparsity=0.0)
    _, _, reference = greedy_logits(dense)
    _, _, glass = greedy_logits(artifact)
    assert max(np.abs(a - b).max() for a, b in zip(glass, reference)) < 1e-4
