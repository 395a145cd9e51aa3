"""The compiler core: model sources, dense export, global priors, GLASS settings and the compile pipeline.

Modules: ``sources`` (catalog names, HF directories, GGUF files, hub ids -> a loaded model), ``export`` (dense
ONNX export with KV cache), ``priors`` (the A/I-GLASS global priors), ``budgets`` (per-layer neuron budgets),
``budget_calibration`` (what the calibrated budget measures on the model's samples), ``settings`` (methods,
fusions, defaults and their checks), ``compile`` (dense graph -> GLASS artifact), ``shared_weights`` (several
graphs over one weights file), ``genai_config`` (onnxruntime-genai's pipeline config), ``artifact`` (atomic output
directories, the cache).
"""
