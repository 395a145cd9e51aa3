"""Global priors: per-neuron importance computed offline from the model itself (the paper's model-intrinsic prior).

The model samples N sequences of T tokens (temperature 1, fixed seed; instruct models start from the chat
template's empty turn) -- or a text file is used instead -- and then, over those tokens, per FFN neuron j:
  A-GLASS (activation): g_j = mean_t |Z_tj|
  I-GLASS (impact):     g_j = mean_t |Z_tj * dL/dZ_tj|,  L = next-token loss
where Z is the input of the down projection (the formulas of passes/glass_math.py, which the tests check this
against). Priors are cached by model, kind and settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glass_onnx.compiler.artifact import cache_dir
from glass_onnx.compiler.settings import PRIOR_SAMPLES, PRIOR_TOKENS
from glass_onnx.progress import progress
from glass_onnx.runtime.errors import GlassError

if TYPE_CHECKING:
    from glass_onnx.compiler.compile import CompileOptions
    from glass_onnx.compiler.settings import Method

log = logging.getLogger(__name__)

KINDS = ("activation", "impact")


@dataclasses.dataclass(frozen=True)
class PriorSettings:
    kind: str  # "activation", "impact" or "random"
    samples: int = PRIOR_SAMPLES
    tokens: int = PRIOR_TOKENS
    temperature: float = 1.0
    seed: int = 0
    text: str | None = None  # a text file instead of model samples

    def key(self) -> str:
        d = dataclasses.asdict(self)
        if self.text:
            d["text"] = hashlib.sha256(Path(self.text).read_bytes()).hexdigest()[:16]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def random_prior(num_layers: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(size) for _ in range(num_layers)]).astype(np.float64)


def down_proj_modules(model) -> list:
    """The FFN down projections of every decoder layer, in order."""
    layers = model.model.layers if hasattr(model, "model") else model.layers
    return [layer.mlp.down_proj for layer in layers]


def sample_sequences(model, tokenizer, settings: PriorSettings, instruct: bool):
    """[N, P+T] token ids sampled from the model and a mask of real tokens (0 after an early EOS)."""
    import torch

    if instruct and getattr(tokenizer, "chat_template", None):
        start = tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False)
        if isinstance(start, dict) or hasattr(start, "input_ids"):
            start = start["input_ids"]
    else:
        first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        start = [first]
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    torch.manual_seed(settings.seed)
    batch = 16
    chunks = []
    with torch.no_grad():
        for b in progress(range(0, settings.samples, batch), desc="sampling prior text"):
            n = min(batch, settings.samples - b)
            ids = torch.tensor([start] * n)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=settings.temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=settings.tokens, min_new_tokens=1,
                                 pad_token_id=pad, eos_token_id=eos or None)
            out = torch.nn.functional.pad(out, (0, len(start) + settings.tokens - out.shape[1]), value=pad)
            chunks.append(out)
    ids = torch.cat(chunks)
    mask = torch.ones_like(ids)
    generated = ids[:, len(start):]
    is_eos = torch.isin(generated, torch.tensor(eos)) if eos else torch.zeros_like(generated, dtype=torch.bool)
    # keep tokens up to and including the first EOS
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    mask[:, len(start):] = (~after_eos).long()
    return ids, mask


def text_sequences(tokenizer, settings: PriorSettings):
    import torch

    text = Path(settings.text).read_text(encoding="utf-8", errors="replace")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = min(settings.samples, len(ids) // settings.tokens)
    if n < 1:
        raise GlassError(f"'{settings.text}' has {len(ids)} tokens, fewer than --prior-tokens {settings.tokens}")
    ids = torch.tensor(ids[: n * settings.tokens]).view(n, settings.tokens)
    return ids, torch.ones_like(ids)


def neuron_importance(model, ids, mask, kind: str) -> np.ndarray:
    """[layers, I] mean |Z| (activation) or mean |Z * dL/dZ| (impact) over the real tokens."""
    import torch

    modules = down_proj_modules(model)
    total = torch.zeros(len(modules), modules[0].in_features, dtype=torch.float64)
    captured = [None] * len(modules)  # impact: each layer's Z, until the backward pass has given its gradient
    weights = None  # the real tokens of the batch in flight, [batch, tokens, 1]

    def hook(_module, args, i):
        z = args[0]
        if kind == "impact":
            z.retain_grad()
            captured[i] = z
        else:  # summed at once, so no layer's Z outlives its down projection
            total[i] += z.abs().mul(weights).sum((0, 1)).double()

    hooks = [m.register_forward_pre_hook(lambda m, args, i=i: hook(m, args, i)) for i, m in enumerate(modules)]
    count = 0.0
    batch = 8
    try:
        for b in progress(range(0, ids.shape[0], batch), desc=f"{kind} prior"):
            x, m = ids[b : b + batch], mask[b : b + batch]
            weights = m.unsqueeze(-1).to(torch.float32)
            if kind == "impact":
                model.zero_grad(set_to_none=True)
                logits = model(input_ids=x, attention_mask=m).logits
                loss_mask = m[:, 1:].to(torch.float32)
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
                (loss * loss_mask.reshape(-1)).sum().div(loss_mask.sum()).backward()
                for i, z in enumerate(captured):
                    total[i] += (z * z.grad).abs().mul(weights).sum((0, 1)).double().detach()
                captured[:] = [None] * len(modules)  # this batch's Z and gradients, freed before the next
            else:
                with torch.no_grad():  # the statistic is read in the hooks; no logits needed
                    model(input_ids=x, attention_mask=m, logits_to_keep=1)
            count += float(m.sum())
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return (total / count).numpy()


def prior_path(model_key: str, settings: PriorSettings) -> Path:
    return cache_dir() / "priors" / f"{model_key}-{settings.kind}-{settings.key()}.npz"


def save_prior(path: Path, values: np.ndarray, model_id: str, settings: PriorSettings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, values=values, model_id=model_id, settings=json.dumps(dataclasses.asdict(settings)))
    tmp.rename(path)


def load_prior_file(path: str | Path, num_layers: int, size: int) -> tuple[np.ndarray, dict]:
    """A prior saved by glass-onnx (.npz with ``values`` [layers, I]); refuse one for another model shape."""
    try:
        data = np.load(path)
        values = data["values"]
        meta = {"model_id": str(data["model_id"]), "settings": json.loads(str(data["settings"]))}
    except (OSError, KeyError, ValueError) as e:
        raise GlassError(f"'{path}' is not a glass-onnx prior file ({e}); "
                         "compute one with 'glass-onnx compile'") from None
    if values.shape != (num_layers, size):
        raise GlassError(f"the prior '{path}' is for {values.shape[0]} layers x {values.shape[1]} neurons "
                         f"(model {meta['model_id']}), this model has {num_layers} x {size}; use a prior made for it")
    return values, meta


def compute_samples(model, tokenizer, settings: PriorSettings, instruct: bool, model_key: str | None = None):
    """(ids, mask) of the model's own samples (or the settings' text), cached by model and settings when
    ``model_key`` is given: the A and I priors and the layer budgets of one model share one sampling run."""
    import torch

    if settings.text:
        return text_sequences(tokenizer, settings)
    cached = samples_path(model_key, settings) if model_key else None
    if cached is not None and cached.exists():
        data = np.load(cached)
        return torch.from_numpy(data["ids"]), torch.from_numpy(data["mask"])
    ids, mask = sample_sequences(model, tokenizer, settings, instruct)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached.with_suffix(".tmp.npz"), ids=ids.numpy(), mask=mask.numpy())
        cached.with_suffix(".tmp.npz").rename(cached)
    return ids, mask


def compute_prior(model, tokenizer, settings: PriorSettings, instruct: bool,
                  model_key: str | None = None) -> np.ndarray:
    """The prior values [layers, I], over the model's samples (compute_samples)."""
    if settings.kind not in KINDS:
        raise GlassError(f"unknown prior kind '{settings.kind}'; choose one of: {', '.join(KINDS)}")
    ids, mask = compute_samples(model, tokenizer, settings, instruct, model_key)
    return neuron_importance(model, ids, mask, settings.kind)


def samples_path(model_key: str, settings: PriorSettings) -> Path:
    shared = dataclasses.replace(settings, kind="samples")
    return cache_dir() / "priors" / f"{model_key}-samples-{shared.key()}.npz"


def global_prior(manifest: dict, source, method: Method, options: CompileOptions) -> tuple[np.ndarray, dict]:
    """The prior values [layers, I] a method needs, for the model of a dense export (``source``, or the one its
    manifest records), computed or read from the cache, and their provenance for the manifest's ``build.prior``."""
    from glass_onnx.compiler.sources import recorded_source

    layers, size = manifest["model"]["num_layers"], manifest["model"]["intermediate_size"]
    if method.prior is None:
        return np.zeros((layers, size)), {"kind": "none"}
    if method.prior == "random":
        return random_prior(layers, size, options.prior_seed), {"kind": "random", "seed": options.prior_seed}
    if options.prior_file:
        values, meta = load_prior_file(options.prior_file, layers, size)
        if meta["settings"].get("kind") != method.prior:
            raise GlassError(f"'{options.prior_file}' is a {meta['settings'].get('kind')} prior, method "
                             f"{method.name} needs a {method.prior} prior")
        return values, {"kind": method.prior, "file": str(options.prior_file), **meta}
    settings = PriorSettings(method.prior, options.prior_samples, options.prior_tokens, 1.0, options.prior_seed,
                             options.prior_text)
    source = source or recorded_source(manifest)
    path = prior_path(source.cache_key(), settings)
    if path.exists():
        log.info(f"using the cached {method.prior} prior {path}")
        values = np.load(path)["values"]
    else:
        from glass_onnx.compiler.sources import load_model

        log.info(f"computing the {method.prior} prior (N={settings.samples}, T={settings.tokens}) ...")
        start = time.perf_counter()
        model, tokenizer = load_model(source)
        instruct = bool(manifest["tokenizer"]["instruct"])
        values = compute_prior(model, tokenizer, settings, instruct, source.cache_key())
        save_prior(path, values, manifest["model"]["name"], settings)
        log.info(f"prior computed in {time.perf_counter() - start:.0f} s, cached at {path}")
    provenance = {"kind": method.prior, "source": "text file" if settings.text else "model samples",
                  **dataclasses.asdict(settings), "cache": str(path)}
    return values, provenance
