"""Tiny random decoders written as GGUF files the way llama.cpp's converter lays them out (gguf's tensor names,
Llama's q/k row permutation, Gemma's norms stored as 1 + w, each architecture's own fields, a gpt2 BPE vocabulary
with its merges and chat template), F32 so nothing is lost. They stand in for GGUFs of architectures the catalog
does not ship (Llama, Qwen2, Qwen3, Phi-3, Gemma-2, StableLM), which transformers reads back."""

from __future__ import annotations

import json
from pathlib import Path


def _llama_permute(weight, heads: int):
    """llama.cpp stores Llama's q/k rows with each head's rotary halves interleaved."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _llama3_rope_factors(rope: dict, head_dim: int):
    """llama.cpp's form of Llama 3.1's RoPE scaling: one divisor per rotary frequency (convert_hf_to_gguf.py)."""
    import numpy as np

    freqs = 1.0 / rope["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim)
    wavelen, old = 2 * np.pi / freqs, rope["original_max_position_embeddings"]
    low, high, factor = rope["low_freq_factor"], rope["high_freq_factor"], rope["factor"]
    smooth = (old / wavelen - low) / (high - low)
    return np.where(wavelen < old / high, 1.0, np.where(wavelen > old / low, factor,
                                                       1 / ((1 - smooth) / factor + smooth))).astype(np.float32)


def write_gguf(hf_dir: Path, path: Path, arch: str) -> Path:
    """The tiny HF model in `hf_dir` as an F32 GGUF of llama.cpp architecture `arch` (llama, qwen2, qwen3, phi3,
    gemma2, stablelm)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((hf_dir / "config.json").read_text())
    tokenizer = json.loads((hf_dir / "tokenizer.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope = config.get("rope_parameters") or {"rope_theta": config["rope_theta"]}
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", _llama3_rope_factors(rope, head_dim))
    if rope.get("rope_type") == "longrope":  # Phi-3's per-frequency factors, as llama.cpp writes them
        writer.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], np.float32))
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    if "layer_norm_eps" in config:
        writer.add_layer_norm_eps(config["layer_norm_eps"])
    else:
        writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("sliding_window"):
        writer.add_sliding_window(config["sliding_window"])
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(config["final_logit_softcapping"])

    vocab = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    specials = {t["id"]: t["content"] for t in tokenizer["added_tokens"]}
    vocab.update(specials)
    tokens = [vocab.get(i, f"[PAD{i}]") for i in range(config["vocab_size"])]
    types = [gguf.TokenType.CONTROL if i in specials else
             gguf.TokenType.NORMAL if i in vocab else gguf.TokenType.UNUSED for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template((hf_dir / "chat_template.jinja").read_text())

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])
    for name, weight in load_file(str(hf_dir / "model.safetensors")).items():
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no {arch} GGUF name for {name}")
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            weight = _llama_permute(weight, heads if "q_proj" in name else kv_heads)
        if arch == "gemma2" and name.endswith("norm.weight"):
            weight = weight + 1
        writer.add_tensor(target, np.ascontiguousarray(weight, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
