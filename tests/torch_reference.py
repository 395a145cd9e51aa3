"""Eager PyTorch reference of GLASS for the tests: the statistic from forward hooks on the torch model, and sparse
decoding with the FFN weights sliced to the kept neurons (GRIFFIN-style), independent of the ONNX graphs, and
twins of the model with its weights int4 round-tripped (what an int4 artifact computes). The selection itself is
passes/glass_math.py's."""

from __future__ import annotations

import contextlib

import numpy as np

from glass_onnx.compiler.priors import down_proj_modules
from glass_onnx.passes.glass_math import local_statistic


def local_stats(model, input_ids, attention_mask=None) -> np.ndarray:
    """[batch, layers, I]: glass_math.local_statistic of the torch model's FFN activations over the prompt."""
    import torch

    captured = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
             for m in down_proj_modules(model)]
    ids = torch.as_tensor(input_ids)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    return np.stack([local_statistic(z.numpy(), mask.numpy().astype(np.float32)) for z in captured], axis=1)


@contextlib.contextmanager
def sliced_ffns(model, kept: np.ndarray):
    """Within the block, each layer's FFN holds only the kept neurons (GRIFFIN-style weight slicing)."""
    import torch

    layers = model.model.layers
    saved = []
    with torch.no_grad():
        for layer, idx in zip(layers, kept):
            mlp, idx = layer.mlp, torch.as_tensor(idx)
            saved.append((mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight))
            mlp.gate_proj.weight = torch.nn.Parameter(mlp.gate_proj.weight[idx].clone(), requires_grad=False)
            mlp.up_proj.weight = torch.nn.Parameter(mlp.up_proj.weight[idx].clone(), requires_grad=False)
            mlp.down_proj.weight = torch.nn.Parameter(mlp.down_proj.weight[:, idx].clone(), requires_grad=False)
    try:
        yield model
    finally:
        for layer, (g, u, d) in zip(layers, saved):
            layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight = g, u, d


def sparse_continuation_logits(model, prompt_ids, continuation_ids, kept: np.ndarray) -> np.ndarray:
    """Dense prefill of the prompt, then the continuation teacher-forced through the sliced FFNs: [n, vocab]."""
    import torch

    prompt = torch.as_tensor([list(prompt_ids)])
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=True)
        with sliced_ffns(model, kept):
            cont = torch.as_tensor([list(continuation_ids)])
            logits = model(input_ids=cont, cache=out.cache, use_cache=True).logits
    return logits[0].numpy()


def dequantised_torch_model(model):
    """A copy of ``model`` whose every Linear weight (and the tied embedding) is its int4 round trip."""
    import copy

    import torch

    from glass_onnx.passes.quantize_weights import Int4Settings, dequantize_int4, quantize_int4

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight.numpy().T  # [K, N] as the ONNX MatMul reads it
                packed, scales = quantize_int4(w, Int4Settings())
                module.weight.copy_(torch.from_numpy(dequantize_int4(packed, scales, w.shape[0]).T))
    return twin


def permuted_dequantised_twin(model, order):
    """The torch model with each layer's FFN neurons put in ``order`` and every Linear weight int4 round-tripped: what
    an int4 GLASS artifact computes (up to MatMulNBits' int8 activations)."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for layer, o in zip(twin.model.layers, order):
            mlp, o = layer.mlp, torch.as_tensor(o)
            mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[o])
            mlp.up_proj.weight.copy_(mlp.up_proj.weight[o])
            mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, o])
    return dequantised_torch_model(twin)
