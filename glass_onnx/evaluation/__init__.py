"""Quality evaluation of GLASS against dense through the compiled sessions (`glass-onnx eval`, EVAL.md).

Modules: ``evaluate`` (the grid runner), ``prompts`` (prose and chat prompts from the shipped texts), ``metrics``
(perplexity, KL, top-1 agreement, Jaccard; numpy only), ``report`` (results.md and plots).
"""
