"""`glass-onnx bench` on the tiny model: every variant measured, ratios against dense, the decode preparation."""

from glass_onnx.tools.bench import BenchOptions, format_table, run_bench


def test_bench_reports_every_variant_against_dense(tiny_dense, tiny_compiled):
    from glass_onnx.compiler.export import dense_artifact

    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    variants = {"dense": (tiny_dense, "auto"), "a-glass 0.5": (artifact, "fast"),
                "a-glass 0.5 (reference)": (artifact, "reference"),
                "dense int4": (dense_artifact(str(tiny_dense), weights="int4")[0], "auto")}
    options = BenchOptions(threads=(1,), prompt_len=8, new_tokens=6, repeats=2, prefill_lengths=(4,), measure_rss=False)
    report = run_bench(variants, options)
    rows = {r["variant"]: r for r in report["runs"]}
    assert set(rows) == set(variants)
    assert all(r["decode_tok_s"] > 0 and len(r["decode_tok_s_all"]) == 2 and r["ttft_ms"] > 0 for r in rows.values())
    assert rows["a-glass 0.5"]["decode_prep_ms"] > 0 and set(rows["dense"]["prefill_ms_by_length"]) == {4}
    assert "a-glass 0.5 (reference)" in format_table(report)
    assert {name: r["weights"] for name, r in rows.items()} == {
        "dense": "fp32", "a-glass 0.5": "fp32", "a-glass 0.5 (reference)": "fp32", "dense int4": "int4"}
    assert rows["dense int4"]["decode_vs_dense"] == 1.0  # against itself, not the fp32 dense
    # ratios are paired per round: the median of the per-round ratios (two rounds: their mean)
    d = rows["dense"]
    for name in ("a-glass 0.5", "a-glass 0.5 (reference)"):
        r = rows[name]
        for figure, ratio in (("ttft_ms_all", "ttft_vs_dense"), ("decode_tok_s_all", "decode_vs_dense")):
            per_round = [a / b for a, b in zip(r[figure], d[figure])]
            assert r[ratio] == round(sum(per_round) / 2, 3), (name, ratio)


def test_ratios_divide_by_the_dense_model_of_the_same_weights_and_by_genai():
    from glass_onnx.tools.bench import add_paired_ratios

    def row(variant, weights, tok_s, threads=1):
        return {"variant": variant, "threads": threads, "weights": weights, "decode_tok_s_all": tok_s,
                "ttft_ms_all": [10.0, 10.0]}

    runs = [row("dense fp32", "fp32", [40.0, 50.0]), row("a-glass 0.5 fp32", "fp32", [60.0, 60.0]),
            row("dense int4", "int4", [100.0, 120.0]), row("a-glass 0.5 int4", "int4", [150.0, 120.0]),
            row("onnxruntime-genai", "int4", [125.0, 100.0]), row("dense fp32", "fp32", [80.0, 80.0], threads=2)]
    add_paired_ratios(runs)
    assert runs[1]["decode_vs_dense"] == 1.35 and runs[3]["decode_vs_dense"] == 1.25  # (1.5 + 1.0) / 2
    assert runs[4]["decode_vs_dense"] == 1.042  # genai's int4 build against our int4 dense: (1.25 + 0.833) / 2
    assert runs[3]["decode_vs_genai"] == 1.2 and runs[2]["decode_vs_genai"] == 1.0
    assert "decode_vs_genai" not in runs[5] and runs[5]["decode_vs_dense"] == 1.0  # no genai at 2 threads


def test_bench_compiles_a_variant_per_sparsity_and_budget(tiny_dense, tmp_path):
    from glass_onnx.tools.bench import compile_variants

    variants = compile_variants(str(tiny_dense), "a-glass", [0.5], ["fast"], tmp_path,
                                budgets=("uniform", "32,64,48"))
    assert set(variants) == {"dense", "a-glass 0.5 uniform", "a-glass 0.5 32,64,48"}
    assert variants["a-glass 0.5 uniform"][0] != variants["a-glass 0.5 32,64,48"][0]


def test_bench_compiles_a_variant_per_warmup(tiny_dense, tmp_path):
    from glass_onnx.runtime import load_manifest
    from glass_onnx.tools.bench import compile_variants

    variants = compile_variants(str(tiny_dense), "a-glass", [0.5], ["fast"], tmp_path, budgets=("uniform",),
                                warmups=(0, 16))
    assert set(variants) == {"dense", "a-glass 0.5 warm-up 0", "a-glass 0.5 warm-up 16"}
    assert [load_manifest(variants[f"a-glass 0.5 warm-up {w}"][0])["glass"]["warmup_tokens"] for w in (0, 16)] == \
        [0, 16]


def test_the_bench_command_reports_and_keeps_no_artifact(tiny_dense, glass_cache, capsys):
    import json

    from glass_onnx.cli import main

    assert main(["bench", str(tiny_dense), "--sparsity", "0.5", "--threads", "1", "--repeats", "1", "--prompt-len",
                 "4", "--new-tokens", "4", "--prefill-lengths", "4", "--no-rss", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {run["variant"] for run in report["runs"]} == {"dense", "a-glass 0.5"}
    assert not list(glass_cache.glob("bench-*"))
