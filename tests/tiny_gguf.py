"""Tiny random decoders written as GGUF files the way llama.cpp's converter lays them out (tensor names, Llama's
q/k row permutation, a gpt2 BPE vocabulary with its merges and chat template), F32 so nothing is lost. They stand
in for GGUFs of architectures the catalog does not ship (Qwen2, Qwen3, Llama), which transformers reads back."""

from __future__ import annotations

import json
from pathlib import Path

# HF parameter name (after "model.layers.N.") -> llama.cpp tensor name (after "blk.N.")
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                  "lm_head.weight": "output.weight"}


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
    """The tiny HF model in `hf_dir` as an F32 GGUF of llama.cpp architecture `arch` (llama, qwen2, qwen3)."""
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
    writer.add_rope_dimension_count(head_dim)
    rope = config.get("rope_parameters") or {"rope_theta": config["rope_theta"]}
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", _llama3_rope_factors(rope, head_dim))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])

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

    for name, weight in load_file(str(hf_dir / "model.safetensors")).items():
        if name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            target = f"blk.{layer}.{LAYER_TENSORS[rest]}"
            if arch == "llama" and rest in ("self_attn.q_proj.weight", "self_attn.k_proj.weight"):
                weight = _llama_permute(weight, heads if "q_proj" in rest else kv_heads)
        else:
            target = GLOBAL_TENSORS[name]
        writer.add_tensor(target, np.ascontiguousarray(weight, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
