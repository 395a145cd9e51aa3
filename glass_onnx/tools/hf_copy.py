"""Write a plain Hugging Face (safetensors) copy of a model source, e.g. for onnxruntime-genai's model builder.

Run: python -m glass_onnx.tools.hf_copy MODEL OUT_DIR
GGUF-loaded models refuse save_pretrained ("not serializable"), so the dequantised weights go into a plain model
built from the config.
"""

from __future__ import annotations

import sys
from pathlib import Path


def save_hf_copy(spec: str, output: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from glass_onnx.compiler.artifact import atomic_directory
    from glass_onnx.compiler.sources import load_model, resolve

    model, tokenizer = load_model(resolve(spec))
    config = model.config
    config.quantization_config = None
    if hasattr(config, "__dict__"):
        config.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    with atomic_directory(output, force=True) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return output


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(save_hf_copy(sys.argv[1], Path(sys.argv[2])))
