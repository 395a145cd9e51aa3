"""`glass-onnx bench` on the tiny model: every variant measured, ratios against dense, the decode preparation."""

from glass_onnx.tools.bench import BenchOptions, format_table, run_bench


def test_bench_reports_every_variant_against_dense(tiny_dense, tiny_compiled):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    variants = {"dense": (tiny_dense, "auto"), "a-glass 0.5": (artifact, "fast"),
                "a-glass 0.5 (reference)": (artifact, "reference")}
    options = BenchOptions(threads=(1,), prompt_len=8, new_tokens=6, repeats=2, prefill_lengths=(4,), measure_rss=False)
    report = run_bench(variants, options)
    rows = {r["variant"]: r for r in report["runs"]}
    assert set(rows) == set(variants)
    assert all(r["decode_tok_s"] > 0 and len(r["decode_tok_s_all"]) == 2 and r["ttft_ms"] > 0 for r in rows.values())
    assert rows["a-glass 0.5"]["decode_prep_ms"] > 0 and set(rows["dense"]["prefill_ms_by_length"]) == {4}
    assert "a-glass 0.5 (reference)" in format_table(report)
    # ratios are paired per round: the median of the per-round ratios (two rounds: their mean)
    d = rows["dense"]
    for name in ("a-glass 0.5", "a-glass 0.5 (reference)"):
        r = rows[name]
        for figure, ratio in (("ttft_ms_all", "ttft_vs_dense"), ("decode_tok_s_all", "decode_vs_dense")):
            per_round = [a / b for a, b in zip(r[figure], d[figure])]
            assert r[ratio] == round(sum(per_round) / 2, 3), (name, ratio)
