"""Soft-capped attention (Gemma-2) exported as one standard ONNX Attention op.

transformers runs Gemma-2's attention eagerly (its scaled-dot-product path has no soft cap), which exports as
MatMul, tanh and Softmax nodes that no pass turns into ONNX Runtime's GroupQueryAttention. Opset 23's Attention has
a ``softcap`` attribute with Gemma-2's meaning: scores capped as cap * tanh(s / cap) after scaling and before the
mask is added (the ONNX reference implementation, and ONNX Runtime's Attention and GroupQueryAttention kernels).
For the export only, the model's attention is switched to a function that calls ``torch.onnx.ops.attention``, which
the exporter writes as that op; the model runs eagerly everywhere else.
"""

from __future__ import annotations

import contextlib

NAME = "glass_softcapped_attention"


def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
               softcap: float | None = None, **kwargs):
    """transformers' attention interface: [batch, heads, seq, dim] in, [batch, seq, heads, dim] out; key and value
    keep their kv heads (Attention shares them across the query heads itself)."""
    import torch

    out = torch.onnx.ops.attention(query, key, value, attention_mask, is_causal=attention_mask is None,
                                   scale=scaling, softcap=float(softcap or 0.0))[0]
    return out.transpose(1, 2).contiguous(), None


def needs_it(model) -> bool:
    """Whether the model soft-caps its attention scores."""
    return bool(getattr(model.config.get_text_config(), "attn_logit_softcapping", None))


@contextlib.contextmanager
def exported_as_attention_op(model):
    """Within the block, ``model``'s soft-capped attention (if it has one) runs through the exportable function."""
    if not needs_it(model):
        yield
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # boolean masks, as the sdpa path gets
    before = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
