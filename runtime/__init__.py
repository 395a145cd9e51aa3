"""The generation runtime over ONNX Runtime: what ships to devices (no torch, no transformers).

Exports ``Generator`` / ``GenerationResult`` (text generation), ``open_decoder`` / ``Decoder`` /
``SequenceState`` (raw session calls with the KV cache and GLASS state, in the fast or the reference layout), ``SamplingConfig``, ``TextCodec``, ``load_manifest`` and ``GlassError``.
"""

from glass_onnx.runtime.decoder import Decoder, SequenceState, create_session, open_decoder
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.generator import GenerationResult, Generator
from glass_onnx.runtime.manifest import load_manifest
from glass_onnx.runtime.sampling import Sampler, SamplingConfig
from glass_onnx.runtime.text import TextCodec

__all__ = [
    "Decoder",
    "GenerationResult",
    "Generator",
    "GlassError",
    "Sampler",
    "SamplingConfig",
    "SequenceState",
    "TextCodec",
    "create_session",
    "load_manifest",
    "open_decoder",
]
