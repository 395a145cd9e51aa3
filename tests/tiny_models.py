"""Tiny random decoders built from a config, saved as Hugging Face directories (seconds to build and export)."""

from __future__ import annotations

from pathlib import Path

TEXT = (
    "The lighthouse keeper climbed the stairs every evening. The sea was calm and the gulls were quiet. "
    "Once upon a time a small boat sailed past the rocks, and the light turned slowly in the dark. "
    "Numbers like 1, 2, 3 and words like apple, river, mountain, and cloud appear in many sentences. "
) * 4

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(model_type: str = "llama"):
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
        Qwen3Config,
        StableLmConfig,
    )

    common = dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if model_type == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True, rope_theta=10000.0)
    if model_type == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    if model_type == "qwen3":
        return Qwen3Config(**common, head_dim=16, tie_word_embeddings=True)
    if model_type == "mistral":
        return MistralConfig(**common, sliding_window=None, tie_word_embeddings=False)
    if model_type == "gemma3_text":
        return Gemma3TextConfig(**{**common, "head_dim": 16}, sliding_window=4,
                                layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    if model_type == "gemma2":  # soft-capped attention scores and logits, every other layer windowed
        # caps small enough to bend the tiny model's scores and logits (the real ones are 50 and 30)
        return Gemma2Config(**{**common, "head_dim": 16}, sliding_window=4, attn_logit_softcapping=1.0,
                            final_logit_softcapping=2.0)
    if model_type == "phi3":  # one fused gate_up projection, one fused qkv projection
        return Phi3Config(**common, sliding_window=4, tie_word_embeddings=False)
    if model_type == "stablelm":  # LayerNorm with biases, biased q/k/v, half of each 32-dim head rotated (16 dims:
        # ONNX Runtime's GroupQueryAttention rotates r dims when r / 2 is a multiple of 8)
        return StableLmConfig(**{**common, "hidden_size": 128}, partial_rotary_factor=0.5, use_qkv_bias=True,
                              tie_word_embeddings=False)
    raise ValueError(model_type)


def random_model(config, seed: int = 0):
    """A model of ``config`` in eval mode with larger-than-default weights, so activations vary and neuron rankings
    are not near-ties."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    return model


def save_tiny_model(directory: Path, model_type: str = "llama", seed: int = 0) -> Path:
    random_model(tiny_config(model_type), seed).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory
