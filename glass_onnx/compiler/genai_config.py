"""genai_config.json for onnxruntime-genai's decoder-pipeline: prefill on the prompt, decode on every new token."""

from __future__ import annotations

from glass_onnx.runtime.protocol import (
    GENAI_KEPT_NEXT,
    GENAI_KEPT_STATE,
    KEPT_NEURONS,
    PRESENT_NEURON_STATS,
    layer_names,
)


def genai_config(manifest: dict, prefill: str, decode: str) -> dict:
    model, io, tok = manifest["model"], manifest["io"], manifest["tokenizer"]
    n = model["num_layers"]
    def per_layer(template: str) -> list[str]:
        return layer_names(template, n)

    positions = [io["position_ids"]] if io.get("position_ids") else []  # absent when attention rotates itself
    managed_in = [io["input_ids"], io["attention_mask"], *positions, *per_layer(io["past_key"]),
                  *per_layer(io["past_value"])]
    managed_out = [io["logits"], *per_layer(io["present_key"]), *per_layer(io["present_value"])]

    def genai_template(template: str) -> str:
        return template.replace("{layer}", "%d")

    return {
        "model": {
            "type": "decoder-pipeline",
            "bos_token_id": tok.get("bos_token_id"),
            "eos_token_id": tok["eos_token_ids"],
            "pad_token_id": tok.get("pad_token_id") if tok.get("pad_token_id") is not None else tok["eos_token_ids"][0],
            "context_length": model["max_context"],
            "vocab_size": model["vocab_size"],
            "decoder": {
                "session_options": {"log_id": "glass-onnx", "provider_options": []},
                "head_size": model["head_dim"],
                "hidden_size": model["hidden_size"],
                "num_attention_heads": model["num_attention_heads"],
                "num_hidden_layers": n,
                "num_key_value_heads": model["num_kv_heads"],
                "inputs": {"input_ids": io["input_ids"], "attention_mask": io["attention_mask"],
                           **({"position_ids": io["position_ids"]} if positions else {}),
                           "past_key_names": genai_template(io["past_key"]),
                           "past_value_names": genai_template(io["past_value"])},
                "outputs": {"logits": io["logits"], "present_key_names": genai_template(io["present_key"]),
                            "present_value_names": genai_template(io["present_value"])},
                "pipeline": [
                    {"prefill": {
                        "filename": prefill, "run_on_token_gen": False,
                        # every graph output must be listed: genai 0.18 corrupts its heap on unlisted ones
                        "inputs": managed_in,
                        "outputs": managed_out + per_layer(PRESENT_NEURON_STATS) + per_layer(KEPT_NEURONS),
                        "output_names_forwarder": dict(zip(per_layer(KEPT_NEURONS), per_layer(GENAI_KEPT_STATE))),
                    }},
                    {"decode": {
                        "filename": decode, "run_on_prompt": False,
                        "inputs": managed_in + per_layer(GENAI_KEPT_STATE),
                        "outputs": managed_out + per_layer(GENAI_KEPT_NEXT),
                        "output_names_forwarder": dict(zip(per_layer(GENAI_KEPT_NEXT), per_layer(GENAI_KEPT_STATE))),
                    }},
                ],
            },
        },
        "search": {"do_sample": False, "max_length": model["max_context"], "min_length": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": False, "temperature": 1.0,
                   "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0, "early_stopping": True,
                   "length_penalty": 1.0, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0},
    }
