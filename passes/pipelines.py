"""The pass pipelines that turn an exported decoder into each graph of an artifact."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, RemoveUnusedFunctionsPass, RemoveUnusedNodesPass

from glass_onnx.passes.compact_int4 import CompactInt4FFNPass
from glass_onnx.passes.dynamic_dims import NameDynamicDimsPass
from glass_onnx.passes.ffn_activations import FFNActivationsPass
from glass_onnx.passes.ffn_inputs import CompactFFNInputsPass
from glass_onnx.passes.genai_handoff import GenaiKeptHandoffPass
from glass_onnx.passes.group_query_attention import GroupQueryAttentionPass
from glass_onnx.passes.indexed_ffn import IndexedFFNPass
from glass_onnx.passes.lm_head import DetachLMHeadPass, LMHeadOnlyPass
from glass_onnx.passes.neuron_selection import SelectNeuronsPass
from glass_onnx.passes.neuron_stats import AccumulateNeuronStatsPass
from glass_onnx.passes.optional_outputs import OmitUnusedOutputsPass
from glass_onnx.passes.packed_attention import PackedAttentionPass
from glass_onnx.passes.padding_bias import PaddingBiasPass
from glass_onnx.passes.permute_neurons import PermuteFFNNeuronsPass
from glass_onnx.passes.quantize_weights import QuantizeWeightsPass
from glass_onnx.passes.skip_norm import SkipNormPass
from glass_onnx.passes.split_gate_up import SplitFusedGateUpPass


def dense_pipeline(attention: str = "ort", max_positions: int = 0) -> ir.passes.PassManager:
    """Exported decoder -> the dense artifact's graph: named dims, a fused gate/up projection (Phi-3) taken apart,
    and (``ort``) one GroupQueryAttention per layer reading one packed QKV projection, rotating it itself and masking
    only padding (checked up to ``max_positions`` positions), and the residual adds fused into their norms (ONNX
    Runtime contrib ops)."""
    passes = [NameDynamicDimsPass(), SplitFusedGateUpPass()]
    if attention == "ort":
        passes += [GroupQueryAttentionPass()]
        if max_positions:
            passes += [PaddingBiasPass(max_positions), PackedAttentionPass(max_positions)]
        passes += [SkipNormPass(), RemoveUnusedNodesPass(), OmitUnusedOutputsPass()]
    return ir.passes.PassManager(passes)


def prefill_pipeline(prior_rank: np.ndarray, lam: float, k, fusion: str, block: int = 1,
                     default_stats: bool = False) -> ir.passes.PassManager:
    """Dense decoder -> prefill: dense outputs + neuron statistics state + kept neurons per layer, k of them (one
    number, or one per layer; chosen by ``block``-neuron blocks when ``block`` > 1)."""
    return ir.passes.PassManager([
        AccumulateNeuronStatsPass(default_zeros=default_stats),
        SelectNeuronsPass(prior_rank, lam, k, fusion, block),
        NameFixPass(),
        OmitUnusedOutputsPass(),
    ])


def decode_pipeline(genai: bool = False) -> ir.passes.PassManager:
    """Dense decoder -> decode: every FFN restricted to the kept neurons handed over by prefill (``genai``: read
    under onnxruntime-genai's value-store names)."""
    return ir.passes.PassManager([
        IndexedFFNPass(),
        RemoveUnusedNodesPass(),
        RemoveUnusedFunctionsPass(),
        NameFixPass(),
        OmitUnusedOutputsPass(),
        *([GenaiKeptHandoffPass()] if genai else []),
    ])


def fast_decoder_pipeline(per_layer_k: bool = False) -> ir.passes.PassManager:
    """Dense decoder -> the fast layout's decoder: a compact FFN path on weight inputs, FFN activations as outputs
    (``per_layer_k``: layers keep different numbers of neurons)."""
    return ir.passes.PassManager([CompactFFNInputsPass(per_layer_k), RemoveUnusedNodesPass(), NameFixPass(),
                                  OmitUnusedOutputsPass()])


def int4_pipeline(order: np.ndarray | None) -> ir.passes.PassManager:
    """fp32 dense decoder -> its int4 form: FFN neurons first put in ``order`` (None: as they are), then 4-bit
    weights."""
    return ir.passes.PassManager([*([PermuteFFNNeuronsPass(order)] if order is not None else []),
                                  QuantizeWeightsPass()])


def int4_fast_decoder_pipeline() -> ir.passes.PassManager:
    """int4 dense decoder -> the int4 fast layout's prompt session: the dense graph, FFN activations as outputs, the
    final hidden states in place of the logits (the head runs apart)."""
    return ir.passes.PassManager([FFNActivationsPass(), DetachLMHeadPass(), RemoveUnusedNodesPass(), NameFixPass(),
                                  OmitUnusedOutputsPass()])


def compact_decoder_pipeline(k) -> ir.passes.PassManager:
    """int4 dense decoder -> the int4 fast layout's per-prompt decoder: FFNs on compact weights of k neurons (one
    number, or one per layer), the final hidden states in place of the logits."""
    return ir.passes.PassManager([CompactInt4FFNPass(k), DetachLMHeadPass(), RemoveUnusedNodesPass(), NameFixPass(),
                                  OmitUnusedOutputsPass()])


def lm_head_pipeline() -> ir.passes.PassManager:
    """Dense decoder -> its LM head alone (hidden_states -> logits)."""
    return ir.passes.PassManager([LMHeadOnlyPass(), RemoveUnusedNodesPass(), RemoveUnusedFunctionsPass(),
                                  NameFixPass()])
