"""`glass-onnx bench`: dense vs GLASS decode speed, time to first token, prefill latency and peak RSS.

Variants run interleaved in one process, in reversed order every other round (A B C, C B A, ...) and with a pause
before each (``SETTLE_S``), so machine noise and drift hit them alike; figures are medians, and ratios are paired: the
median over rounds of the ratio within a round. "vs dense" divides by our dense export of the same weight format
(int4 GLASS by int4 dense), "vs genai" by onnxruntime-genai's build when one is given.
Decode tok/s = generated tokens after the first / wall time from the first token to the last, so any per-prompt
preparation of the decode path counts; that preparation (the fast layout's compact weights) is also reported
alone, as decode prep ms. Peak RSS is measured per variant in a fresh subprocess.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from glass_onnx.progress import progress
from glass_onnx.runtime.errors import GlassError

# the intra-op threads of the session that ran last keep spinning for a while; on a 2-vCPU machine they took a core
# from the next variant's prompt (2 threads: 87 instead of 50 ms to the first token, BENCHMARKS.md)
SETTLE_S = 0.2


def bench_prompt(codec, length: int) -> list[int]:
    """``length`` tokens of real prose (shipped Botchan text), without special tokens."""
    from glass_onnx.evaluation.prompts import data_lines

    ids: list[int] = []
    for paragraph in data_lines("botchan.txt"):
        ids += codec.tokenizer.encode(paragraph + " ", add_special_tokens=False).ids
        if len(ids) >= length:
            return ids[:length]
    raise GlassError(f"the shipped text is shorter than {length} tokens")


def peak_rss_mb(artifact: Path, layout: str, threads: int, prompt_len: int, new_tokens: int) -> float:
    """Peak RSS of a fresh process that loads the artifact and generates once."""
    out = subprocess.run([sys.executable, "-m", "glass_onnx.tools.bench", "--rss-probe", str(artifact), layout,
                          str(threads), str(prompt_len), str(new_tokens)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _rss_probe(artifact: str, layout: str, threads: str, prompt_len: str, new_tokens: str) -> None:
    from glass_onnx.runtime import Generator

    generator = Generator(artifact, threads=int(threads), layout=layout)
    generator.generate(bench_prompt(generator.codec, int(prompt_len)), max_new_tokens=int(new_tokens), ignore_eos=True)
    status = Path("/proc/self/status").read_text()
    kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    print(kb / 1024)


class GenaiRunner:
    """onnxruntime-genai on the same model and prompt, for comparison (optional)."""

    def __init__(self, directory: Path, threads: int):
        import onnx
        import onnxruntime_genai as og

        graph = onnx.load(Path(directory) / "model.onnx", load_external_data=False).graph
        self.weights = "int4" if any(n.op_type == "MatMulNBits" for n in graph.node) else "fp32"
        config = og.Config(str(directory))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                            "inter_op_num_threads": 1}}}}))
        self.og, self.model = og, og.Model(config)

    def generate(self, prompt: list[int], new_tokens: int) -> tuple[float, float]:
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=len(prompt) + new_tokens,
                                  min_length=len(prompt) + new_tokens)
        generator = og.Generator(self.model, params)
        t0 = time.perf_counter()
        generator.append_tokens(prompt)
        generator.generate_next_token()
        t_first = time.perf_counter()
        n = 1
        while not generator.is_done() and n < new_tokens:
            generator.generate_next_token()
            n += 1
        t_last = time.perf_counter()
        return (t_first - t0) * 1e3, (n - 1) / (t_last - t_first)


@dataclasses.dataclass
class BenchOptions:
    threads: tuple[int, ...] = (1, 2)  # intra-op thread counts, each a run of its own
    prompt_len: int = 32
    new_tokens: int = 256
    repeats: int = 5  # interleaved rounds
    prefill_lengths: tuple[int, ...] = (16, 64, 256)
    genai_dir: Path | None = None  # an onnxruntime-genai model folder of the same model, to compare
    measure_rss: bool = True
    provider: str = "cpu"

    def __post_init__(self):
        for option, values in (("--threads", self.threads), ("--prefill-lengths", self.prefill_lengths),
                               ("--prompt-len", [self.prompt_len]), ("--new-tokens", [self.new_tokens]),
                               ("--repeats", [self.repeats])):
            if not values or min(values) < 1:
                raise GlassError(f"{option} takes whole numbers of at least 1 (got {', '.join(map(str, values))})")


def compile_variants(model: str, method: str, sparsities: list[float], layouts: list[str], directory: Path,
                     attention: str = "ort", weights: tuple[str, ...] = ("fp32",),
                     budgets: tuple[str, ...] = ("uniform",), warmups: tuple[int, ...] | None = None
                     ) -> dict[str, tuple[Path, str]]:
    """Per weight format, the dense export and one compile per sparsity, budget and warm-up (None: compile's
    default), as bench variants {name: (artifact, layout)}; names carry the format, the budget and the warm-up when
    there are several ("dense int4", "a-glass 0.5 calibrated warm-up 32 int4"). The compiled ones go to
    ``directory``; the dense exports are the cached ones."""
    from glass_onnx.compiler.compile import CompileOptions, compile_model
    from glass_onnx.compiler.export import dense_artifact

    variants = {}
    for form in weights:
        tag = f" {form}" if len(weights) > 1 else ""
        dense, _ = dense_artifact(model, attention=attention, weights=form)
        variants[f"dense{tag}"] = (dense, "auto")
        for s in sparsities:
            for budget, warmup in itertools.product(budgets, warmups or (None,)):
                named = (f" {budget}" if len(budgets) > 1 else "") + \
                    (f" warm-up {warmup}" if warmups and len(warmups) > 1 else "")
                out = directory / (f"{dense.name}-{method}-{s:g}" + ("" if budget == "uniform" else f"-{budget}")
                                   + ("" if warmup is None else f"-w{warmup}"))
                warm = {} if warmup is None else {"warmup": warmup}
                compile_model(model, out, CompileOptions(method=method, sparsity=s, attention=attention, weights=form,
                                                         budget=budget, **warm), force=True)
                for layout in layouts:
                    variants[f"{method} {s:g}{named}{tag}" + (f" ({layout})" if len(layouts) > 1 else "")] = \
                        (out, layout)
    return variants


def run_bench(variants: dict[str, tuple[Path, str]], options: BenchOptions) -> dict:
    """Every variant {name: (artifact, layout)} measured interleaved (module docstring); the report as JSON data."""
    from glass_onnx.runtime import Generator

    o = options
    prompt_len, new_tokens, repeats, provider = o.prompt_len, o.new_tokens, o.repeats, o.provider
    report = {"prompt_len": prompt_len, "new_tokens": new_tokens, "repeats": repeats, "cpu_count": os.cpu_count(),
              "provider": provider, "runs": []}
    for threads in o.threads:
        generators = {name: Generator(path, provider=provider, threads=threads, layout=layout)
                      for name, (path, layout) in variants.items()}
        if o.genai_dir:
            generators["onnxruntime-genai"] = GenaiRunner(o.genai_dir, threads)
        codec = next(g for g in generators.values() if hasattr(g, "codec")).codec
        prompt = bench_prompt(codec, prompt_len)
        samples = {name: {"ttft_ms": [], "decode_tok_s": []} for name in generators}
        for g in generators.values():  # warm-up: sparse decode too, past the panel width trial (runtime/panel_trial.py)
            (g.generate(prompt, 8) if isinstance(g, GenaiRunner)
             else g.generate(prompt, max_new_tokens=g.warmup + 8 + g.decoder.steps_to_settle, ignore_eos=True))
        for round_ in progress(range(repeats), desc=f"bench, {threads} thread(s)", unit="round"):
            # A B C, then C B A: a machine drifting during a round favours no variant
            for name, g in (list(generators.items()) if round_ % 2 == 0 else list(generators.items())[::-1]):
                time.sleep(SETTLE_S)
                if isinstance(g, GenaiRunner):
                    ttft, tps = g.generate(prompt, new_tokens)
                else:
                    r = g.generate(prompt, max_new_tokens=new_tokens, ignore_eos=True)
                    ttft, tps = r.prefill_ms, r.decode_tokens_per_s
                samples[name]["ttft_ms"].append(ttft)
                samples[name]["decode_tok_s"].append(tps)
        prefill, prep = {}, {}
        for name, g in generators.items():
            if isinstance(g, GenaiRunner):
                continue
            times = []  # the once-per-prompt work before the second token (the fast layout's compact weights)
            for _ in range(max(3, repeats // 2)):
                state = g.decoder.new_state(capacity=prompt_len + 1)
                g.decoder.prefill(state, np.array([prompt]))
                t0 = time.perf_counter()
                g.decoder.prepare_decode(state)
                times.append((time.perf_counter() - t0) * 1e3)
            prep[name] = round(statistics.median(times), 2)
            prefill[name] = {}
            for n in o.prefill_lengths:
                ids = np.array([bench_prompt(codec, n)])
                times = []
                for _ in range(max(3, repeats // 2)):
                    state = g.decoder.new_state()
                    t0 = time.perf_counter()
                    g.decoder.prefill(state, ids)
                    times.append((time.perf_counter() - t0) * 1e3)
                prefill[name][n] = round(statistics.median(times), 2)
        for name, g in generators.items():
            s = samples[name]
            weights = g.weights if isinstance(g, GenaiRunner) else g.decoder.manifest["weights"]
            row = {"variant": name, "threads": threads, "weights": weights,
                   "decode_tok_s": round(statistics.median(s["decode_tok_s"]), 2),
                   "ttft_ms": round(statistics.median(s["ttft_ms"]), 2),
                   "decode_prep_ms": prep.get(name),
                   "decode_tok_s_all": [round(x, 2) for x in s["decode_tok_s"]],
                   "ttft_ms_all": [round(x, 2) for x in s["ttft_ms"]],
                   "prefill_ms_by_length": prefill.get(name)}
            if hasattr(g, "decoder") and hasattr(g.decoder, "panels"):
                row["panels"] = g.decoder.panels.choice
            if o.measure_rss and name in variants and provider == "cpu":
                row["peak_rss_mb"] = round(peak_rss_mb(*variants[name], threads, prompt_len, new_tokens), 1)
            report["runs"].append(row)
        del generators
    add_paired_ratios(report["runs"])
    return report


def paired(rows: list[dict], base: dict, key: str) -> float:
    """The median over rounds of the ratio within each round."""
    return round(statistics.median(map(operator.truediv, rows[key], base[key])), 3)


def add_paired_ratios(runs: list[dict]) -> None:
    """decode/TTFT vs our dense export of the row's weight format (or the first dense there is), decode vs genai."""
    for r in runs:
        peers = [b for b in runs if b["threads"] == r["threads"]]
        dense = [b for b in peers if b["variant"].startswith("dense")]
        base = next((b for b in dense if b["weights"] == r["weights"]), dense[0] if dense else None)
        if base:
            r["decode_vs_dense"] = paired(r, base, "decode_tok_s_all")
            r["ttft_vs_dense"] = paired(r, base, "ttft_ms_all")
        genai = next((b for b in peers if b["variant"] == "onnxruntime-genai"), None)
        if genai:
            r["decode_vs_genai"] = paired(r, genai, "decode_tok_s_all")


def format_table(report: dict) -> str:
    rows = ["| variant | threads | decode tok/s | vs dense | vs genai | TTFT ms | vs dense | decode prep ms | "
            "peak RSS MB | prefill ms by prompt length |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        prefill = ", ".join(f"{n}: {ms}" for n, ms in (r.get("prefill_ms_by_length") or {}).items())
        rows.append(f"| {r['variant']} | {r['threads']} | {r['decode_tok_s']} | {r.get('decode_vs_dense', '')} | "
                    f"{r.get('decode_vs_genai', '')} | {r['ttft_ms']} | {r.get('ttft_vs_dense', '')} | "
                    f"{r.get('decode_prep_ms') or ''} | {r.get('peak_rss_mb', '')} | {prefill} |")
    return "\n".join(rows)


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "--rss-probe":
    _rss_probe(*sys.argv[2:])
