"""Model sources: a catalog name, a local Hugging Face directory, a local .gguf file, or a cached hub id."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from glass_onnx.compiler.artifact import cache_dir, versions
from glass_onnx.models import CATALOG, ModelRecipe
from glass_onnx.runtime.errors import GlassError

# model_type -> what the export and the FFN pass have been checked on
SUPPORTED = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "stablelm": "StableLmForCausalLM",
}


@dataclasses.dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user typed
    kind: str  # "gguf", "hf_dir" or "hub"
    path: str  # file, directory or hub id
    recipe: ModelRecipe | None = None

    @property
    def load_args(self) -> tuple[str, dict]:
        if self.kind == "gguf":
            p = Path(self.path)
            return str(p.parent), {"gguf_file": p.name}
        if self.kind == "hub":
            return self.path, {"local_files_only": True}
        return self.path, {}

    @property
    def name(self) -> str:
        """A display name: the catalog name, a hub id, or the file or directory name."""
        if self.recipe:
            return self.recipe.name
        return self.path if self.kind == "hub" else Path(self.path).name

    def describe(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "path": self.path,
                "recipe": self.recipe.name if self.recipe else None}

    def cache_key(self) -> str:
        """A key for what is cached from this model (exports, priors): where its weights are and when they changed,
        not how it was named."""
        path = Path(self.path)
        stamp = [path.stat().st_size, int(path.stat().st_mtime)] if path.is_file() else (
            [int((path / "config.json").stat().st_mtime)] if path.is_dir() else [])
        tools = versions()
        key = json.dumps([self.kind, str(self.path), stamp, tools.get("glass-onnx"), tools.get("transformers")])
        name = self.recipe.name if self.recipe else Path(self.path).stem
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
        return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def recorded_source(manifest: dict) -> ModelSource:
    """The model source a dense export was made from, as its manifest's provenance recorded it."""
    recorded = manifest.get("build", {}).get("source")
    if recorded is None:
        raise GlassError("this dense export does not record the model it was made from; compile from the model "
                         "itself, or pass --prior-file")
    if not Path(recorded["path"]).exists() and recorded["kind"] != "hub":
        raise GlassError(f"the weights this export was made from ('{recorded['path']}') are gone; the global prior "
                         "needs them: compile from the model itself, or pass --prior-file")
    if recorded.get("recipe"):
        return resolve(recorded["recipe"])
    return ModelSource(recorded["spec"], recorded["kind"], recorded["path"])


def recipe_of(manifest: dict) -> ModelRecipe | None:
    """The catalog recipe an artifact's model came from, if any (its provenance says)."""
    return CATALOG.get(manifest.get("build", {}).get("source", {}).get("recipe") or "")


def resolve(spec: str) -> ModelSource:
    """Turn what the user typed into a source, without loading anything heavy."""
    if spec in CATALOG:
        recipe = CATALOG[spec]
        path = recipe.locate(cache_dir())
        return ModelSource(spec, "gguf" if path.suffix == ".gguf" else "hf_dir", str(path), recipe)
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_file() and p.suffix == ".gguf":
            return ModelSource(spec, "gguf", str(p.resolve()))
        if p.is_dir() and (p / "config.json").exists():
            return ModelSource(spec, "hf_dir", str(p.resolve()))
        raise GlassError(f"'{spec}' is neither a Hugging Face model directory (with config.json) nor a .gguf file")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ModelSource(spec, "hub", spec)
    names = ", ".join(sorted(CATALOG))
    raise GlassError(f"unknown model '{spec}'; use one of: {names}, a local HF directory, a .gguf file, or a hub id")


def load_config(source: ModelSource):
    """The model's config, checked against the supported architectures."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    where, kwargs = source.load_args
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except OSError as e:
        if source.kind == "hub":
            raise GlassError(
                f"'{source.path}' is not in the local Hugging Face cache and the Hub is offline; download it where "
                f"the Hub is reachable (huggingface-cli download {source.path}) or pass a local directory"
            ) from None
        raise GlassError(f"could not read the model config at '{source.path}': {_first_line(e)}") from None
    except Exception as e:  # a damaged GGUF raises ValueError, struct.error, ...
        if source.kind != "gguf":
            raise
        raise GlassError(f"could not read '{source.path}' as a GGUF model ({_first_line(e)}); the file is truncated "
                         "or not a GGUF: download or assemble it again") from None
    text = config.get_text_config()
    if source.kind == "gguf":
        _restore_gguf_fields(source.path, text)
    if text.model_type not in SUPPORTED:
        raise GlassError(
            f"unsupported architecture '{text.model_type}' ({', '.join(config.architectures or [])}); "
            f"supported: {', '.join(sorted(set(SUPPORTED.values())))}"
        )
    return config


def load_model(source: ModelSource):
    """(model, tokenizer) in fp32 eval mode; GGUF weights are dequantised to dense fp32."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = load_config(source)
    where, kwargs = source.load_args
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, config=config, dtype=torch.float32,
                                                     attn_implementation=_attention(config), **kwargs)
    except Exception as e:  # weights cut short after a readable header
        if source.kind != "gguf":
            raise
        if "mismatched_sizes" in str(e):  # transformers' GGUF reader does not map every config field
            raise GlassError(f"transformers reads '{source.path}' with a config whose shapes do not fit its tensors "
                             "(its GGUF mapping drops a field, such as a non-default head_dim); pass the model's "
                             "Hugging Face directory instead") from None
        raise GlassError(f"could not load the weights of '{source.path}' ({_first_line(e)}); the file is truncated "
                         "or damaged: download or assemble it again") from None
    if source.kind == "gguf":
        _apply_gguf_rope_freqs(source.path, model)
    if model.config.get_text_config().model_type != config.get_text_config().model_type:
        raise GlassError(f"'{source.spec}' loaded as {type(model).__name__}, expected a text decoder")
    model.eval()
    return model, tokenizer


def _attention(config) -> str:
    """sdpa (exported as one standard Attention op), or eager where transformers refuses sdpa (Gemma-2's soft cap;
    its export switches to compiler/softcapped_attention.py)."""
    return "eager" if config.get_text_config().model_type == "gemma2" else "sdpa"


def _restore_gguf_fields(path: str, config) -> None:
    """Put back what llama.cpp writes and transformers' GGUF reader leaves at the config's default, where the default
    would change the model: the head size (mapped for some architectures only; Qwen3's default of 128 misfits any
    other), the rotated fraction of each head (StableLM, Phi-4-mini), Phi-3's sliding window and LongRoPE factors,
    and Gemma-2's soft caps."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = reader.fields
    arch = fields["general.architecture"].contents()

    def field(key: str):
        found = fields.get(f"{arch}.{key}")
        return found.contents() if found is not None else None

    if field("attention.key_length") is not None and getattr(config, "head_dim", None) != field("attention.key_length"):
        config.head_dim = int(field("attention.key_length"))
    rope = getattr(config, "rope_parameters", None)
    rope = rope if isinstance(rope, dict) and "rope_theta" in rope else None  # not Gemma-3's, one per layer type
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if rope is not None and field("rope.dimension_count") is not None:
        fraction = int(field("rope.dimension_count")) / head_dim
        if fraction != rope.get("partial_rotary_factor", 1.0):
            rope["partial_rotary_factor"] = fraction
    if arch == "phi3":
        if field("attention.sliding_window") and getattr(config, "sliding_window", None) is None:
            config.sliding_window = int(field("attention.sliding_window"))
        factors = {t.name: [float(f) for f in t.data.reshape(-1)] for t in reader.tensors
                   if t.name in ("rope_factors_long.weight", "rope_factors_short.weight")}
        if factors and rope is not None:
            original = field("rope.scaling.original_context_length") or config.max_position_embeddings
            rope.update(rope_type="longrope", long_factor=factors["rope_factors_long.weight"],
                        short_factor=factors["rope_factors_short.weight"],
                        original_max_position_embeddings=int(original))
            config.original_max_position_embeddings = int(original)
    if arch == "gemma2":
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if field(key) is not None:
                setattr(config, key, float(field(key)))


def _apply_gguf_rope_freqs(path: str, model) -> None:
    """llama.cpp writes Llama 3.1+'s RoPE scaling as one divisor per rotary frequency (the rope_freqs tensor), which
    transformers' GGUF reader drops: without it every position would rotate as in the unscaled model."""
    import numpy as np
    import torch
    from gguf import GGUFReader

    tensor = next((t for t in GGUFReader(path).tensors if t.name == "rope_freqs.weight"), None)
    if tensor is None:
        return
    divisors = torch.from_numpy(np.array(tensor.data, np.float32).reshape(-1))
    rotaries = [m for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    if not rotaries or any(m.inv_freq.shape != divisors.shape for m in rotaries):
        raise GlassError(f"'{path}' scales RoPE by {len(divisors)} frequencies, which this model's rotary embedding "
                         "does not have; pass the model's Hugging Face directory instead")
    for rotary in rotaries:
        for name in ("inv_freq", "original_inv_freq"):
            if isinstance(getattr(rotary, name, None), torch.Tensor):
                getattr(rotary, name).div_(divisors)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
