"""`glass-onnx bench` on the tiny model: every variant measured, ratios against dense, the decode preparation."""

from glass_onnx.tools.bench import BenchOptions, format_table, run_bench


def test_bench_reports_every_variant_against_dense(tiny_dense, tiny_compiled):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    variants = {"dense": (tiny_dense, "auto"), "a-glass 0.5": (artifact, "fast"),
                "a-glass 0.5 (reference)": (artifact, "reference")}
    options = BenchOptions(threads=(1,), prompt_len=8, new_tokens=6, repeats=2, prefill_lengths=(4,), measure_rss=False)
    report = run_bench(variants, options)
    rows = {r["variant"]: r for r in report["runs"]}
    assert set(rows) == set(variants) and rows["dense"]["decode_vs_dense"] == 1.0
    assert all(r["decode_tok_s"] > 0 and len(r["decode_tok_s_all"]) == 2 and r["ttft_ms"] > 0 for r in rows.values())
    assert rows["a-glass 0.5"]["decode_prep_ms"] > 0 and set(rows["dense"]["prefill_ms_by_length"]) == {4}
    assert "a-glass 0.5 (reference)" in format_table(report)
    # ratios are paired per round: the median of the per-round ratios
    r, d = rows["a-glass 0.5"], rows["dense"]
    per_round = sorted(a / b for a, b in zip(r["ttft_ms_all"], d["ttft_ms_all"]))
    assert r["ttft_vs_dense"] == round(sum(per_round) / 2, 3)
