"""Gemma-2's soft-capped attention, exported two ways: as transformers runs it (eager MatMul, tanh, Softmax), and as
one opset-23 Attention with softcap that becomes GroupQueryAttention (shipped). A random Gemma-2 with Gemma-3-270M's
sizes; dense decode tok/s of each export, interleaved rounds, medians (BENCHMARKS.md, section 1).

    python scripts/softcap_attention_study.py /tmp/softcap-study --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from glass_onnx.compiler import softcapped_attention
from glass_onnx.compiler.export import export_dense
from glass_onnx.runtime import Decoder


def build(root: Path) -> None:
    """The random model (seed 0) and its two exports, under ``root``."""
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import tiny_tokenizer

    config = transformers.Gemma2Config(
        vocab_size=32000, hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, max_position_embeddings=2048, sliding_window=512, bos_token_id=1,
        eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(root / "hf")
    tiny_tokenizer().save_pretrained(root / "hf")
    export_dense(str(root / "hf"), root / "gqa")
    softcapped_attention.needs_it = lambda model: False  # the export as transformers runs it
    export_dense(str(root / "hf"), root / "eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="where the model and its exports go (reused when there)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if not (args.root / "eager").exists():
        build(args.root)
    decoders = {name: Decoder(args.root / name, threads=args.threads) for name in ("eager", "gqa")}
    prompt = np.arange(5, 37)[None]
    rates: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(args.rounds):
        for name, decoder in decoders.items():
            state = decoder.new_state()
            logits = decoder.prefill(state, prompt)
            start = time.perf_counter()
            for _ in range(args.tokens):
                logits = decoder.decode(state, np.array([[int(np.argmax(logits[0, -1]))]]))
            rates[name].append(args.tokens / (time.perf_counter() - start))
    for name, values in rates.items():
        print(f"{name}: {statistics.median(values):.1f} tok/s median of {[round(v, 1) for v in values]}")
    print(f"GroupQueryAttention / eager: {statistics.median(rates['gqa']) / statistics.median(rates['eager']):.3f}")


if __name__ == "__main__":
    main()
