"""Per-layer neuron budgets (compile --budget): each layer keeps its own k through every layout and int4's per-prompt
session, selected as glass_math says (the onnxruntime-genai handoff: test_genai.py); the calibrated budget."""

import numpy as np
import pytest

from glass_onnx.passes import glass_math
from glass_onnx.runtime import GlassError, load_manifest, open_decoder

PROMPT = np.array([[5, 17, 42, 99, 7, 250, 311, 12, 64, 128, 3, 77, 200, 31]])
FP32_BUDGETS, INT4_BUDGETS = [32, 64, 48], [32, 64, 32]  # the tiny model: 3 layers of 96 neurons


def run(artifact, layout, tokens=(3, 99, 250)):
    decoder = open_decoder(artifact, layout=layout)
    state = decoder.new_state()
    decoder.prefill(state, PROMPT)
    kept = [k[0] for k in decoder.kept_neurons(state)]
    stats = np.stack([v.numpy()[0] for v in state.neuron_stats])
    return kept, stats, [decoder.decode(state, np.array([[t]])) for t in tokens]


@pytest.mark.parametrize("weights,budgets", [("fp32", FP32_BUDGETS), ("int4", INT4_BUDGETS)])
def test_each_layer_keeps_its_budget_in_every_layout(tiny_compiled, weights, budgets):
    artifact = tiny_compiled(method="a-glass", budget=",".join(map(str, budgets)), weights=weights)
    glass = load_manifest(artifact)["glass"]
    assert glass["k_per_layer"] == budgets and glass["budget"] == {"kind": "explicit"}
    assert glass["k"] == round(np.mean(budgets)) and glass["sparsity"] == pytest.approx(1 - np.mean(budgets) / 96)
    prior_rank = np.load(artifact / "prior.npz")["rank"]
    fast_kept, stats, fast_logits = run(artifact, "fast")
    ref_kept, _, ref_logits = run(artifact, "reference")
    assert [len(k) for k in fast_kept] == budgets
    want = glass_math.select(stats, prior_rank, glass["lam"], budgets, block=glass["block"])
    assert all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(fast_kept, ref_kept, want))
    tolerance = 1e-4 if weights == "fp32" else 0.03  # int4: MatMulNBits' int8 activations against float
    for a, b in zip(fast_logits, ref_logits):
        assert np.abs(a - b).max() <= tolerance * max(1.0, np.abs(b).max() if weights == "int4" else 1.0)


def test_a_per_layer_budget_selects_each_layers_first_k_of_one_ranking(tiny_compiled):
    """Overriding k per layer at run time on a uniform artifact: layer l's set is the uniform selection at k_l."""
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    decoder = open_decoder(artifact, layout="reference")
    state = decoder.new_state()
    decoder.prefill(state, PROMPT, overrides={"glass.k": np.array([10, 90, 1], np.int64)})
    kept = [k[0] for k in decoder.kept_neurons(state)]
    for layer, k in enumerate((10, 90, 1)):
        state_k = decoder.new_state()
        decoder.prefill(state_k, PROMPT, overrides={"glass.k": np.array([k], np.int64)})
        assert np.array_equal(kept[layer], decoder.kept_neurons(state_k)[layer][0])


@pytest.mark.parametrize("budget,message", [
    ("32,64", "lists 2 neuron counts for 3 layers"),
    ("32,64,40", "not whole 32-neuron blocks"),  # int4 selects whole blocks
    ("32,0,64", "not whole 32-neuron blocks between 32 and 96"),
    ("balanced", "unknown budget 'balanced'"),
])
def test_bad_budgets_are_one_line_errors(tiny_dense, tmp_path, budget, message):
    from conftest import compile_tiny

    with pytest.raises(GlassError, match=message):
        compile_tiny(tiny_dense, tmp_path / "out", method="a-glass", budget=budget, weights="int4")
    assert not (tmp_path / "out").exists()


def test_the_fp32_fast_layout_of_a_uniform_artifact_refuses_per_layer_overrides(tiny_compiled):
    decoder = open_decoder(tiny_compiled(method="a-glass", sparsity=0.5), layout="fast")
    state = decoder.new_state()
    decoder.prefill(state, PROMPT, overrides={"glass.k": np.array([10, 90, 1], np.int64)})
    with pytest.raises(GlassError, match="compiled for one k in every layer"):
        decoder.decode(state, np.array([[3]]))


def test_the_int4_fast_layout_refuses_other_budgets_than_its_own(tiny_compiled):
    decoder = open_decoder(tiny_compiled(method="a-glass", sparsity=0.5, weights="int4"), layout="fast")
    state = decoder.new_state()
    decoder.prefill(state, PROMPT, overrides={"glass.k": np.array([32, 64, 32], np.int64)})
    with pytest.raises(GlassError, match="holds \\[64, 64, 64\\] neurons per layer"):
        decoder.decode(state, np.array([[3]]))


def test_calibrated_candidates_protect_the_costly_layer_and_keep_the_total():
    from glass_onnx.compiler.budgets import LayerProfile, candidate_budgets

    sensitivity = np.array([0.58, 0.03, 0.02, 0.04, 0.03, 0.1])
    outlier = np.array([0.01, 0.002, 0.001, 0.004, 0.003, 0.006])
    candidates = candidate_budgets(LayerProfile(outlier, sensitivity), k=768, size=1536)
    assert list(candidates)[0] == "uniform" and candidates["uniform"] == [768] * 6
    assert candidates["protected"] == [1536, 640, 608, 608, 608, 608]  # 0.58 > 5 x the median 0.035
    for name, budgets in candidates.items():
        assert sum(budgets) == 6 * 768 and all(b % 32 == 0 and 32 <= b <= 1536 for b in budgets), name
    owl = candidates["protected+owl0.3"]
    assert owl[0] == 1536 and owl[2] < owl[3] < owl[5]  # more outliers, more neurons
    assert candidate_budgets(LayerProfile(outlier, sensitivity), k=768, size=1536) == candidates  # deterministic
    # no dominant layer and alike outlier ratios: every candidate is the uniform one, listed once
    assert candidate_budgets(LayerProfile(np.full(6, 0.01), np.full(6, 0.05)), k=768, size=1536) == \
        {"uniform": [768] * 6}
    # protection yields where the rest could not keep a step each
    tight = candidate_budgets(LayerProfile(outlier, np.array([9.0, 8.0, 0.01, 0.01, 0.01, 0.01])), k=48, size=128)
    assert tight["protected"] == [128, 32, 32, 32, 32, 32]


def test_the_calibrated_choice_is_the_least_costly_on_the_samples_unless_uniform_is_as_good():
    from glass_onnx.compiler.budgets import LayerProfile, choose_budgets

    profile = LayerProfile(np.zeros(3), np.array([0.9, 0.01, 0.02]))
    candidates = {"uniform": [64, 64, 64], "protected": [96, 48, 48], "protected+owl0.1": [96, 64, 32]}
    budgets, record = choose_budgets(candidates, {"uniform": 0.5, "protected": 0.3, "protected+owl0.1": 0.31},
                                     profile, k=64, size=96)
    assert budgets == [96, 48, 48] and record["chosen"] == "protected" and record["protected_layers"] == [0]
    assert record["sample_kl"]["uniform"] == 0.5 and record["kind"] == "calibrated"
    for kl in ({"uniform": 0.3, "protected": 0.3, "protected+owl0.1": 0.4},  # a tie
               {"uniform": 0.3, "protected": 0.29, "protected+owl0.1": 0.4}):  # less than MARGIN better: noise
        budgets, record = choose_budgets(candidates, kl, profile, k=64, size=96)
        assert budgets == [64, 64, 64] and record["chosen"] == "uniform" and record["protected_layers"] == []


def test_calibrated_compile_is_the_default_deterministic_and_cached(tiny_dense, tmp_path, glass_cache):
    from conftest import compile_tiny

    options = dict(method="a-glass", sparsity=1 / 3, budget="calibrated", prior_tokens=136)  # k = 64 of 96
    first = load_manifest(compile_tiny(tiny_dense, tmp_path / "a", **options))["glass"]
    second = load_manifest(compile_tiny(tiny_dense, tmp_path / "b", **{**options, "budget": None}))["glass"]
    assert first["budget"]["kind"] == "calibrated" and len(first["budget"]["sensitivity"]) == 3
    assert first["budget"]["chosen"] in first["budget"]["sample_kl"] and "uniform" in first["budget"]["sample_kl"]
    assert second["budget"] == first["budget"] and first["k_per_layer"] == second["k_per_layer"]
    assert sum(first["k_per_layer"]) == 3 * 64 and all(k % 32 == 0 for k in first["k_per_layer"])
    dense = load_manifest(compile_tiny(tiny_dense, tmp_path / "d", **{**options, "sparsity": 0.0, "budget": None}))
    assert dense["glass"]["budget"] == {"kind": "uniform"}  # nothing to share out at sparsity 0
    outliers = set(glass_cache.rglob("*-outliers-*"))
    with pytest.raises(GlassError, match="too short or too few to calibrate budgets"):
        compile_tiny(tiny_dense, tmp_path / "c", **{**options, "prior_tokens": 32})
    assert set(glass_cache.rglob("*-outliers-*")) == outliers  # refused before anything is measured on them


def test_another_sparsity_reuses_the_samples_outlier_ratios(tiny_dense, tmp_path, monkeypatch):
    from conftest import compile_tiny

    from glass_onnx.compiler import budget_calibration

    options = dict(method="a-glass", budget="calibrated", prior_tokens=136)
    first = load_manifest(compile_tiny(tiny_dense, tmp_path / "a", sparsity=1 / 3, **options))["glass"]

    def measured_again(*_):
        raise AssertionError("the outlier ratios were measured again")

    monkeypatch.setattr(budget_calibration, "outlier_ratios", measured_again)
    other = load_manifest(compile_tiny(tiny_dense, tmp_path / "b", sparsity=2 / 3, **options))["glass"]
    assert other["k_per_layer"] != first["k_per_layer"]
    assert other["budget"]["outlier_ratio"] == first["budget"]["outlier_ratio"]
