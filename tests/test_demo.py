"""`glass-onnx demo`: the recommended setting, the speed ratio, and a quality figure measured on the prompt."""

from glass_onnx.runtime import Generator
from glass_onnx.tools.demo import teacher_forced_agreement


def test_teacher_forced_agreement_is_exact_for_the_dense_method_and_not_for_a_sparse_one(tiny_dense, tiny_compiled):
    dense = Generator(tiny_dense)
    prompt = [5, 17, 42, 99, 7, 250, 311, 12]
    tokens = dense.generate(prompt, max_new_tokens=12, ignore_eos=True).tokens
    kl, top1 = teacher_forced_agreement(dense, Generator(tiny_compiled(method="dense", sparsity=0.0)), prompt, tokens)
    assert kl < 1e-6 and top1 == 1.0
    sparse = Generator(tiny_compiled(method="a-glass", sparsity=0.75))
    kl, top1 = teacher_forced_agreement(dense, sparse, prompt, tokens)
    assert kl > 1e-3 and 0.0 <= top1 <= 1.0


def test_demo_shows_the_recommended_sparsity_with_its_figures(tiny_dir, tmp_path):
    from glass_onnx.tools.demo import DEFAULT_DEMO_SPARSITY, run_demo

    report = run_demo(str(tiny_dir), tmp_path, "Once upon a time", max_new_tokens=6, sparsity=None, threads=1)
    assert f"A-GLASS {DEFAULT_DEMO_SPARSITY:.0%}" in report  # a model without a recipe: the default setting
    assert "decode speed, A-GLASS / dense:" in report and "quality on this prompt: KL(dense || A-GLASS)" in report
    assert "the recommended setting for this model" in report
