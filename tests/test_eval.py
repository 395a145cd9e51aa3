"""Evaluation: metrics on known answers, prompt buckets and splits, and a smoke run of the grid."""

import json
import math

import numpy as np
import pytest

from glass_onnx.evaluation.metrics import jaccard, paired_ratio_interval, summarise, token_metrics


def test_identical_models_give_zero_kl_and_equal_perplexity():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 50)).astype(np.float32)
    targets = rng.integers(0, 50, 12)
    m = summarise(token_metrics(logits, logits.copy(), targets, np.ones(12)))
    assert m["kl"] == 0.0 and m["top1"] == 1.0 and m["ppl"] == m["dense_ppl"]


def test_metrics_known_answer():
    dense = np.log(np.array([[0.5, 0.5]]))
    sparse = np.log(np.array([[0.9, 0.1]]))
    m = token_metrics(dense, sparse, np.array([1]), np.array([1]))
    assert math.isclose(m["kl"], 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rel_tol=1e-9)
    assert math.isclose(m["nll"], -math.log(0.1), rel_tol=1e-9)
    masked = token_metrics(np.vstack([dense, dense]), np.vstack([sparse, dense]), np.array([1, 0]), np.array([0, 1]))
    assert masked["kl"] == 0 and masked["tokens"] == 1
    assert jaccard(np.array([1, 2, 3]), np.array([2, 3, 4])) == 0.5


def test_paired_interval_brackets_the_ratio_and_shrinks_with_agreement():
    rng = np.random.default_rng(1)
    b = rng.uniform(1, 3, 40)
    noisy = b * rng.uniform(0.6, 1.2, 40)  # ~10% lower on average, prompt by prompt noise
    low, high = paired_ratio_interval(noisy, b)
    assert low < noisy.sum() / b.sum() < high and high - low > 0.02
    assert paired_ratio_interval(noisy, b) == (low, high)  # seeded: a report reads the same each time
    steady = b * 0.9  # the same 10% on every prompt: pairing leaves no doubt
    assert paired_ratio_interval(steady, b) == pytest.approx((0.9, 0.9))


def test_continuation_counts_no_position_after_every_row_ended():
    """A batch whose every row reaches EOS early: the positions after the last EOS are padding, not targets."""
    from types import SimpleNamespace

    from glass_onnx.evaluation.evaluate import Evaluator

    eos, vocab, ends = 3, 5, {0: 1, 1: 2}  # row -> the step at which it emits EOS

    class Scripted:
        def new_state(self, batch):
            return {"step": 0}

        def _logits(self, state):
            logits = np.zeros((2, 1, vocab), np.float32)
            for row, end in ends.items():
                logits[row, 0, eos if state["step"] == end else 1] = 1.0
            state["step"] += 1
            return logits

        def prefill(self, state, ids, mask):
            return self._logits(state)

        def decode(self, state, ids):
            return self._logits(state)

    evaluator = Evaluator.__new__(Evaluator)
    evaluator.dense, evaluator.gen_len, evaluator.pad, evaluator.eos = Scripted(), 6, 0, {eos}
    tokens, live = evaluator.continuation([SimpleNamespace(ids=(2, 4)), SimpleNamespace(ids=(4,))])
    assert live.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert tokens.tolist() == [[1, eos, 0, 0, 0, 0], [1, 1, eos, 0, 0, 0]]


def test_report_pools_prose_and_chat_apart_against_both_baselines():
    from glass_onnx.evaluation.report import against_baselines, by_kind

    def row(method, bucket, kl, tokens, prompt_kl):
        lam = {"griffin": 1.0, "global-a": 0.0}.get(method, 0.5)
        return {"method": method, "sparsity": 0.5, "lam": lam, "fusion": "rank", "block": 1, "budget": "uniform",
                "warmup": 0, "bucket": bucket, "kl": kl, "tokens": tokens, "prompt_kl": prompt_kl}

    by_bucket = [row(m, b, kl, 10, [kl * 5, kl * 5]) for m, scale in (("griffin", 2.0), ("global-a", 3.0),
                                                                       ("a-glass", 1.0))
                 for b, kl in (("16", 0.1 * scale), ("32", 0.3 * scale), ("chat", 1.0 * scale))]
    kinds = by_kind(by_bucket)
    prose = next(r for r in kinds["prose"] if r["method"] == "a-glass")
    assert math.isclose(prose["kl"], 0.2) and prose["tokens"] == 20 and len(prose["prompt_kl"]) == 4
    lines = against_baselines(by_bucket)
    assert len(lines) == 4 and "| prose |" in lines[2] and "| chat |" in lines[3]
    # a-glass is half GRIFFIN's KL and a third of global-a's on every prompt: the intervals collapse there
    assert "(-50.0% [-50.0, -50.0])" in lines[2] and "(-66.7% [-66.7, -66.7])" in lines[3]


def test_prompt_buckets_and_splits(tiny_dense):
    from glass_onnx.evaluation.prompts import BUCKETS, prose_prompts
    from glass_onnx.runtime import TextCodec, load_manifest

    codec = TextCodec(tiny_dense, load_manifest(tiny_dense)["tokenizer"])
    dev, test = prose_prompts(codec.encode, "dev"), prose_prompts(codec.encode, "test")
    for b in BUCKETS:
        assert len(test[str(b)]) >= 50  # the real tokenizers give >= 100 (test_real_models)
        assert all(0.75 * b <= len(p.ids) <= 1.25 * b for p in test[str(b)])
        assert not {p.text for p in dev[str(b)]} & {p.text for p in test[str(b)]}
        assert all(p.text[-1] in ".!?\"')]" for p in test[str(b)][:20])  # whole sentences


def test_eval_smoke(tiny_dir, tiny_dense, tmp_path):
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval
    from glass_onnx.runtime.errors import GlassError

    options = EvalOptions(methods=("dense",), sparsities=(0.5,), per_bucket=1, gen_len=8, prior_samples=2)
    with pytest.raises(GlassError, match="--attention onnx"):  # batched teacher forcing needs the standard ops
        run_eval(str(tiny_dense), tmp_path / "refused", options)
    out = tmp_path / "eval"
    run_eval(str(tiny_dir), out, EvalOptions(methods=("dense", "random", "griffin", "a-glass"), sparsities=(0.5,),
                                             per_bucket=1, gen_len=8, prior_samples=2))
    result = json.loads((out / "results.json").read_text())
    dense = next(r for r in result["results"] if r["method"] == "dense")
    assert dense["kl"] < 1e-9 and dense["top1"] == 1.0 and math.isclose(dense["ppl"], dense["dense_ppl"], rel_tol=1e-6)
    griffin = next(r for r in result["results"] if r["method"] == "griffin")
    assert griffin["kl"] > 0 and len(griffin["jaccard_by_layer"]) == 3
    assert ({"results.md", "kl_vs_sparsity.png", "ppl_vs_sparsity.png", "jaccard_by_layer.png"}
            <= {p.name for p in out.iterdir()})
    assert not (out / "artifacts").exists()


def test_eval_int4_smoke(tiny_dir, tmp_path):
    """int4: every configuration against the fp32 and the int4 dense model, neuron by neuron and in blocks."""
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval

    out = tmp_path / "eval-int4"
    run_eval(str(tiny_dir), out, EvalOptions(methods=("dense", "griffin", "a-glass"), sparsities=(0.5,), per_bucket=1,
                                             gen_len=8, prior_samples=2, weights="int4", blocks=(1, 32)))
    result = json.loads((out / "results.json").read_text())
    assert result["weights"] == "int4"
    rows = {(r["method"], r["block"]): r for r in result["results"]}
    assert set(rows) == {("dense", 1), ("griffin", 1), ("griffin", 32), ("a-glass", 1), ("a-glass", 32)}
    dense = rows[("dense", 1)]
    # the int4 dense model through the reference sessions: its own quantisation against fp32, ~nothing against itself
    assert dense["kl"] > 0 and dense["kl_int4"] < 0.1 * dense["kl"] and dense["top1_int4"] > 0.95
    assert all(r["kl_int4"] > dense["kl_int4"] for key, r in rows.items() if key[0] != "dense")
    text = (out / "results.md").read_text()
    assert "against the int4 dense model" in text and "blocks of 32" in text


def test_a_prompt_file_goes_through_the_chat_template_only_when_asked(tiny_dir, tiny_dense, tmp_path):
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval
    from glass_onnx.evaluation.prompts import file_prompts
    from glass_onnx.runtime import TextCodec, load_manifest

    class Codec:
        def encode(self, text, chat):
            return [1, 2] + [3] * len(text) if chat else [3] * len(text)

    (tmp_path / "prompts.txt").write_text("Tell me a story.\n\nWhy is the sky blue?\n")
    chat, plain = (file_prompts(Codec(), tmp_path / "prompts.txt", flag) for flag in (True, False))
    assert [p.bucket for p in chat] == ["file-chat"] * 2 and [p.bucket for p in plain] == ["file"] * 2
    assert chat[0].ids[:2] == (1, 2) and plain[0].ids == (3,) * len("Tell me a story.")
    out = tmp_path / "eval"  # the tiny model has a chat template: --no-chat must keep it out
    run_eval(str(tiny_dir), out, EvalOptions(methods=("dense",), sparsities=(0.5,), gen_len=4, prior_samples=2,
                                             prompts_file=str(tmp_path / "prompts.txt"), chat=False))
    result = json.loads((out / "results.json").read_text())
    assert [p["bucket"] for p in result["prompts"]] == ["file", "file"]
    codec = TextCodec(tiny_dense, load_manifest(tiny_dense)["tokenizer"])
    lengths = [len(codec.encode(t, chat=flag)) for flag in (False, True) for t in ("Tell me a story.",)]
    assert result["prompts"][0]["tokens"] == lengths[0] < lengths[1]


def test_eval_compares_uniform_and_calibrated_budgets(tiny_dir, tmp_path):
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval

    out = tmp_path / "eval"
    run_eval(str(tiny_dir), out, EvalOptions(methods=("griffin", "a-glass"), sparsities=(1 / 3,), per_bucket=1,
                                             gen_len=8, prior_samples=2, budgets=("uniform", "calibrated")))
    result = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["budget"]) for r in result["results"]} == {
        (m, b) for m in ("griffin", "a-glass") for b in ("uniform", "calibrated")}
    [calibrated] = result["calibrated_budgets"]
    assert sum(calibrated["k_per_layer"]) == 3 * 64 and len(calibrated["k_per_layer"]) == 3
    assert calibrated["chosen"] in calibrated["sample_kl"] and (out / "budgets_by_layer.png").exists()
    assert all(len(r["prompt_kl"]) == r["prompts"] for r in result["results"])
    a_glass = {r["budget"]: r for r in result["results"] if r["method"] == "a-glass"}
    assert math.isclose(sum(a_glass["calibrated"]["prompt_kl"]) / a_glass["calibrated"]["tokens"],
                        a_glass["calibrated"]["kl"], rel_tol=1e-4, abs_tol=1e-7)
    report = (out / "results.md").read_text()
    assert "calibrated budget" in report and "## Calibrated vs uniform budgets" in report


def test_eval_compares_warmups(tiny_dir, tmp_path):
    """A warm-up's tokens are the dense model's (no KL there); ``*_after`` scores every config past the longest."""
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval
    from glass_onnx.runtime.errors import GlassError

    with pytest.raises(GlassError, match="--warmups 8 is not between 0 and --gen-len - 1"):
        EvalOptions(gen_len=8, warmups=(0, 8))
    out = tmp_path / "eval"
    run_eval(str(tiny_dir), out, EvalOptions(methods=("griffin", "a-glass"), sparsities=(0.5,), per_bucket=1,
                                             gen_len=8, prior_samples=2, warmups=(0, 6)))
    result = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["warmup"]): r for r in result["results"]}
    assert set(rows) == {(m, w) for m in ("griffin", "a-glass") for w in (0, 6)}
    for method in ("griffin", "a-glass"):
        cold, warm = rows[(method, 0)], rows[(method, 6)]
        # 6 of the 7 scored tokens run densely: what KL is left is the last token's, the same one *_after scores
        assert math.isclose(warm["kl"] * warm["tokens"], warm["kl_after"] * warm["tokens_after"], rel_tol=1e-3,
                            abs_tol=1e-6)
        assert warm["tokens_after"] < warm["tokens"]
        assert cold["kl"] * cold["tokens"] > cold["kl_after"] * cold["tokens_after"] + 1e-6  # sparse from the first
    assert "warm-up 6" in (out / "results.md").read_text()
