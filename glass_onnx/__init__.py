"""glass-onnx: compile Hugging Face decoders into ONNX Runtime sessions that decode faster with GLASS.

The package holds the front end: ``compiler`` (sources, export, priors, settings, compile), ``evaluation`` (eval),
``tools`` (bench, demo, inspect, EP parity, hf copy) and ``cli`` (the ``glass-onnx`` command); the graph passes
install as ``glass_onnx.passes``, the device runtime as ``glass_onnx.runtime`` and the model catalog as
``glass_onnx.models``. Importing it loads nothing heavy.
"""
