"""`glass-onnx demo`: compile the default model with A-GLASS and show dense and GLASS generation side by side."""

from __future__ import annotations

import shutil
import statistics
import textwrap
from pathlib import Path

import numpy as np

DEFAULT_PROMPT = "Write a short story about a lighthouse."
DEFAULT_DEMO_SPARSITY = 0.25  # for models without a recipe: where small models stay close to dense (EVAL.md)


def side_by_side(left_title: str, left: str, right_title: str, right: str, width: int = 100) -> str:
    col = (width - 3) // 2

    def wrap(s: str) -> list[str]:
        return [line for para in s.splitlines() or [""] for line in (textwrap.wrap(para, col) or [""])]

    a, b = wrap(left), wrap(right)
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    rows = [f"{left_title:<{col}} | {right_title}", f"{'-' * col}-+-{'-' * col}"]
    rows += [f"{x:<{col}} | {y}" for x, y in zip(a, b)]
    return "\n".join(rows)


def teacher_forced_agreement(dense, sparse, prompt: list[int], tokens: list[int]) -> tuple[float, float]:
    """(mean KL(dense || sparse) per token, top-1 agreement) of the sparse model on the dense model's own
    continuation ``tokens`` of ``prompt``, teacher-forced: what EVAL.md measures, on this one prompt."""
    from glass_onnx.evaluation.metrics import token_metrics

    opening = sparse.codec.template_prefix_length(prompt)  # left out of the statistic, as in generate

    def logits(decoder) -> np.ndarray:
        state = decoder.new_state()
        first = decoder.prefill_prompt(state, np.array([prompt]), uncounted=opening, warmup=sparse.warmup)[0, -1:]
        return np.concatenate([first, decoder.decode(state, np.array([tokens[:-1]]))[0]])

    m = token_metrics(logits(dense.decoder), logits(sparse.decoder), np.array(tokens), np.ones(len(tokens)))
    return m["kl"] / m["tokens"], m["top1"] / m["tokens"]


def run_demo(model: str, output: Path, prompt: str, max_new_tokens: int, sparsity: float | None,
             threads: int | None) -> str:
    """Compile ``model`` with A-GLASS into ``output`` at ``sparsity`` (None: the model's recommended one), generate
    from ``prompt`` with dense and with GLASS; the side-by-side report with the speed ratio and quality figures."""
    from glass_onnx.compiler.compile import CompileOptions, compile_model
    from glass_onnx.compiler.export import dense_artifact
    from glass_onnx.compiler.settings import check_sparsity
    from glass_onnx.compiler.sources import recipe_of
    from glass_onnx.runtime import Generator
    from glass_onnx.runtime.decoder import check_threads
    from glass_onnx.runtime.manifest import keep_summary, load_manifest

    check_threads(threads)
    dense, _ = dense_artifact(model)
    recipe = recipe_of(load_manifest(dense))
    recommended = recipe.demo_sparsity if recipe and recipe.demo_sparsity is not None else DEFAULT_DEMO_SPARSITY
    sparsity = check_sparsity(recommended if sparsity is None else sparsity)
    compiled = output / f"{Path(model).name}-a-glass-{sparsity:g}"
    compile_model(model, compiled, CompileOptions(method="a-glass", sparsity=sparsity), force=True)
    generators = {name: Generator(artifact, threads=threads) for name, artifact in (("dense", dense),
                                                                                      ("a-glass", compiled))}
    ids = generators["dense"].encode(prompt)
    for generator in generators.values():
        # first-run allocations, the first gather from the weights file and the layout's search for its fastest form
        # on this host are not decode speed: past the warm-up and that search
        generator.generate(ids, max_new_tokens=generator.warmup + 8 + generator.decoder.steps_to_settle,
                           ignore_eos=True)
    rounds = []  # dense, then A-GLASS, then the other way round: one run of each swings on a shared machine
    for order in (("dense", "a-glass"), ("a-glass", "dense"), ("dense", "a-glass")):
        rounds.append({name: generators[name].generate(ids, max_new_tokens=max_new_tokens) for name in order})
    results = {name: rounds[-1][name] for name in generators}  # greedy: every round gives the same text
    dense_result, glass_result = results["dense"], results["a-glass"]
    glass = generators["a-glass"].manifest["glass"]
    chosen = glass["budget"].get("chosen")
    budget = f"{glass['budget']['kind']} budget" + (f": {chosen}" if chosen else "")
    warmup = generators["a-glass"].warmup
    budget += f", the first {warmup} tokens dense" if warmup else ""
    title = f"A-GLASS {sparsity:.0%} ({budget}), {keep_summary(glass)}"
    lines = [f"\nprompt: {prompt}\n",
             side_by_side("dense", dense_result.text, title, glass_result.text,
                          width=min(shutil.get_terminal_size((120, 20)).columns, 140)), ""]
    for name, r in results.items():
        lines.append(f"{name:>8}: {r.prompt_tokens} prompt tokens, prefill {r.prefill_ms:.0f} ms, "
                     f"{len(r.tokens)} tokens at {r.decode_tokens_per_s:.1f} tok/s")
    speedup = statistics.median(r["a-glass"].decode_tokens_per_s / max(r["dense"].decode_tokens_per_s, 1e-9)
                                for r in rounds)
    lines.append(f"decode speed, A-GLASS / dense: {speedup:.2f}x  (median of {len(rounds)} interleaved runs; "
                 "'glass-onnx bench' measures properly)")
    if len(dense_result.tokens) > 1:
        kl, top1 = teacher_forced_agreement(generators["dense"], generators["a-glass"], dense_result.prompt_ids,
                                            dense_result.tokens)
        lines.append(f"quality on this prompt: KL(dense || A-GLASS) {kl:.3f} nats/token, next-token agreement "
                     f"{top1:.0%} (A-GLASS reading dense's {len(dense_result.tokens)} tokens)")
    quality = recipe.demo_quality if recipe and sparsity == recommended else None
    if quality:
        chat = quality.get("chat")
        lines.append(f"quality over EVAL.md's {quality['prompts']} test prompts at {sparsity:.0%}: KL {quality['kl']}, "
                     f"next-token agreement {quality['top1']:.1%}" +
                     (f"; on {chat['prompts']} chat test prompts: KL {chat['kl']}, {chat['top1']:.1%}" if chat else ""))
    lines += [f"artifacts: {dense} (dense), {compiled} (A-GLASS)",
              f"{'the recommended setting for this model; ' if sparsity == recommended else ''}"
              f"other sparsities: --sparsity (the full grid is in EVAL.md)"]
    return "\n".join(lines)
