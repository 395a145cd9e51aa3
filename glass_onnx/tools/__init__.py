"""Commands around the compiler: ``bench`` (speed and memory, BENCHMARKS.md), ``demo`` (README command 1),
``inspect_artifact`` (`glass-onnx inspect`, the portability gate), ``ep_parity`` (CPU vs another EP) and
``hf_copy`` (a safetensors copy of a model source, for onnxruntime-genai's builder)."""
