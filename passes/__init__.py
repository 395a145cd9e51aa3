"""Graph passes over the ONNX IR that turn a dense decoder into GLASS prefill and decode graphs (no torch).

Exports the passes (``NameDynamicDimsPass``, ``SplitFusedGateUpPass``, ``GroupQueryAttentionPass``,
``PaddingBiasPass``, ``PackedAttentionPass``, ``SkipNormPass``, ``OmitUnusedOutputsPass``,
``AccumulateNeuronStatsPass``, ``SelectNeuronsPass``, ``IndexedFFNPass``, ``CompactFFNInputsPass``,
``GenaiKeptHandoffPass``, ``PermuteFFNNeuronsPass``, ``QuantizeWeightsPass``, ``FFNActivationsPass``,
``CompactInt4FFNPass``, ``DetachLMHeadPass``, ``LMHeadOnlyPass``), the FFN finder (``find_gated_ffns``,
``GatedFFN``), the pipelines that compose them (``dense_pipeline``, ``prefill_pipeline``, ``decode_pipeline``,
``fast_decoder_pipeline``, ``int4_pipeline``, ``int4_fast_decoder_pipeline``, ``compact_decoder_pipeline``,
``lm_head_pipeline``), the builders of the fast layout's small graphs (``build_select_model``,
``build_compact_model``), the ai.glass op definitions (``glass_ops``) and the GLASS math they implement
(``glass_math``, numpy). Attributes load on first use, so ``glass_math`` alone needs only numpy.
"""

from glass_onnx.runtime.lazy_exports import lazy_exports

_EXPORTS = {
    "NameDynamicDimsPass": "dynamic_dims", "GroupQueryAttentionPass": "group_query_attention",
    "PaddingBiasPass": "padding_bias", "PackedAttentionPass": "packed_attention", "SkipNormPass": "skip_norm",
    "SplitFusedGateUpPass": "split_gate_up",
    "OmitUnusedOutputsPass": "optional_outputs", "AccumulateNeuronStatsPass": "neuron_stats",
    "SelectNeuronsPass": "neuron_selection", "IndexedFFNPass": "indexed_ffn", "CompactFFNInputsPass": "ffn_inputs",
    "GenaiKeptHandoffPass": "genai_handoff", "find_gated_ffns": "ffn_pattern", "GatedFFN": "ffn_pattern",
    "dense_pipeline": "pipelines", "prefill_pipeline": "pipelines", "decode_pipeline": "pipelines",
    "fast_decoder_pipeline": "pipelines", "int4_pipeline": "pipelines", "int4_fast_decoder_pipeline": "pipelines",
    "compact_decoder_pipeline": "pipelines", "FFNActivationsPass": "ffn_activations",
    "CompactInt4FFNPass": "compact_int4", "build_select_model": "glass_graphs",
    "build_compact_model": "glass_graphs", "QuantizeWeightsPass": "quantize_weights",
    "PermuteFFNNeuronsPass": "permute_neurons", "DetachLMHeadPass": "lm_head", "LMHeadOnlyPass": "lm_head",
    "lm_head_pipeline": "pipelines",
    "glass_ops": "glass_ops", "glass_math": "glass_math",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
