"""What one export pass buys on an architecture the catalog has no weights for: a random model of that architecture
with SmolLM2-135M's sizes, exported twice (every pass, and ``--without`` one pass), dense decode tok/s of each in
interleaved rounds with `glass-onnx bench`'s measurement, the nodes a step runs, and whether greedy tokens agree
(BENCHMARKS.md, section 1c).

    python scripts/export_pass_study.py /tmp/pass-study --arch stablelm --without PackedAttentionPass --threads 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx_ir as ir

from glass_onnx.compiler.export import export_dense
from glass_onnx.passes import pipelines
from glass_onnx.runtime import Generator
from glass_onnx.tools.bench import BenchOptions, format_table, run_bench

SIZES = dict(vocab_size=32000, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
             num_key_value_heads=3, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0,
             tie_word_embeddings=False)
EXTRA = {"stablelm": dict(use_qkv_bias=True), "phi3": dict(sliding_window=1024)}


class _Skipped(ir.passes.InPlacePass):
    def __init__(self, *args, **kwargs):  # whatever the pass it stands in for takes
        super().__init__()

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=False)


def build(root: Path, arch: str, without: str) -> tuple[Path, Path]:
    """The random model (seed 0) under ``root/hf`` and its two exports, each made once."""
    import torch
    import transformers

    if not (root / "hf").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_models import tiny_tokenizer

        config = transformers.AutoConfig.for_model(arch, **SIZES, **EXTRA.get(arch, {}))
        torch.manual_seed(0)
        transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(root / "hf")
        tiny_tokenizer().save_pretrained(root / "hf")
    every, fewer = root / "every-pass", root / f"without-{without}"
    if not every.exists():
        export_dense(str(root / "hf"), every)
    if not fewer.exists():
        if not hasattr(pipelines, without):
            raise SystemExit(f"no pass {without} in glass_onnx.passes.pipelines")
        kept = getattr(pipelines, without)
        setattr(pipelines, without, _Skipped)
        try:
            export_dense(str(root / "hf"), fewer)
        finally:
            setattr(pipelines, without, kept)
    return every, fewer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="where the model and its exports go (reused when there)")
    parser.add_argument("--arch", default="stablelm", help="a transformers model_type (stablelm, phi3, ...)")
    parser.add_argument("--without", default="PackedAttentionPass", help="the export pass to leave out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    every, fewer = build(args.root, args.arch, args.without)
    # the first "dense" variant is the base of bench's "vs dense" ratios
    variants = {f"dense without {args.without}": (fewer, "auto"), "dense with every pass": (every, "auto")}
    tokens = {}
    for name, (path, _) in variants.items():
        tokens[name] = Generator(path).generate(list(range(5, 37)), max_new_tokens=64, ignore_eos=True).tokens
        print(f"{name}: {len(ir.load(path / 'model.onnx').graph)} nodes")
    print("the same 64 greedy tokens:", len({tuple(t) for t in tokens.values()}) == 1)
    report = run_bench(variants, BenchOptions(threads=(args.threads,), repeats=args.rounds, new_tokens=128,
                                              prefill_lengths=(32,), measure_rss=False))
    print(format_table(report))


if __name__ == "__main__":
    main()
