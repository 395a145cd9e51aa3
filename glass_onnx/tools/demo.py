"""`glass-onnx demo`: compile the default model with A-GLASS and show dense and GLASS generation side by side."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

DEFAULT_PROMPT = "Write a short story about a lighthouse."


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


def run_demo(model: str, output: Path, prompt: str, max_new_tokens: int, sparsity: float, threads: int | None) -> str:
    """Compile ``model`` with A-GLASS into ``output``, generate from ``prompt`` with dense and with GLASS; the
    side-by-side report."""
    from glass_onnx.compiler.compile import CompileOptions, compile_model
    from glass_onnx.compiler.export import dense_artifact
    from glass_onnx.compiler.settings import check_sparsity
    from glass_onnx.runtime import Generator
    from glass_onnx.runtime.decoder import check_threads
    from glass_onnx.runtime.manifest import keep_summary

    check_sparsity(sparsity)
    check_threads(threads)
    dense, _ = dense_artifact(model)
    compiled = output / f"{Path(model).name}-a-glass-{sparsity:g}"
    compile_model(model, compiled, CompileOptions(method="a-glass", sparsity=sparsity), force=True)
    results = {}
    for name, artifact in (("dense", dense), ("a-glass", compiled)):
        generator = Generator(artifact, threads=threads)
        ids = generator.encode(prompt)
        generator.generate(ids, max_new_tokens=8)  # warm-up: first-run allocations are not decode speed
        results[name] = (generator.generate(ids, max_new_tokens=max_new_tokens), generator.manifest.get("glass"))
    (dense_result, _), (glass_result, glass) = results["dense"], results["a-glass"]
    lines = [f"\nprompt: {prompt}\n",
             side_by_side("dense", dense_result.text, f"A-GLASS, {keep_summary(glass)}",
                          glass_result.text, width=min(shutil.get_terminal_size((120, 20)).columns, 140)), ""]
    for name, (r, _) in results.items():
        lines.append(f"{name:>8}: {r.prompt_tokens} prompt tokens, prefill {r.prefill_ms:.0f} ms, "
                     f"{len(r.tokens)} tokens at {r.decode_tokens_per_s:.1f} tok/s")
    speedup = glass_result.decode_tokens_per_s / max(dense_result.decode_tokens_per_s, 1e-9)
    lines += [f"decode speed, A-GLASS / dense: {speedup:.2f}x  (one run; 'glass-onnx bench' measures properly)",
              f"artifacts: {dense} (dense), {compiled} (A-GLASS)",
              "quality over 50 prompts per sparsity: EVAL.md (a 135M model loses much at 50%; try --sparsity 0.25)"]
    return "\n".join(lines)
