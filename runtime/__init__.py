"""The generation runtime over ONNX Runtime: what ships to devices (no torch, no transformers).

Exports ``Generator`` / ``GenerationResult`` (text generation), ``open_decoder`` / ``Decoder`` /
``SequenceState`` / ``create_session`` (raw session calls with the KV cache and GLASS state, in the fast or the
reference layout), ``Sampler`` / ``SamplingConfig``, ``TextCodec``, ``load_manifest``, ``GlassError`` and
``protocol`` (every file and I/O name of an artifact). Attributes load on first use (``lazy_exports``).
"""

from glass_onnx.runtime.lazy_exports import lazy_exports

_EXPORTS = {
    "Decoder": "decoder", "SequenceState": "decoder", "create_session": "decoder", "open_decoder": "decoder",
    "GlassError": "errors", "GenerationResult": "generator", "Generator": "generator", "load_manifest": "manifest",
    "Sampler": "sampling", "SamplingConfig": "sampling", "TextCodec": "text", "protocol": "protocol",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
