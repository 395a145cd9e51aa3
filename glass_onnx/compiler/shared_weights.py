"""Save several ONNX graphs that reference one external weights file, each tensor written once."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from glass_onnx.progress import progress
from glass_onnx.runtime.protocol import PER_PROMPT

INLINE_BYTES = 1024  # smaller tensors (scalars, indices) stay inside the graph, readable in Netron


def save_sharing_weights(models: dict[str, ir.Model], directory: Path, weights: str,
                         extra: dict[str, ir.TensorProtocol] | None = None,
                         located: frozenset[str] = frozenset()) -> dict[str, ir.ExternalTensor]:
    """Write ``directory/<name>`` for each model; tensors with the same initializer name are stored once.
    ``extra`` tensors, which no graph holds (a runtime binds them as inputs), and the initializers named in
    ``located`` (a runtime reads them from the file), however small, go to the weights file too; returns where each
    stored tensor lies in it. Initializers a runtime supplies per prompt (location ``per-prompt``) stay as they are."""
    tensors: dict[str, ir.TensorProtocol] = {}
    for model in models.values():
        for name, value in model.graph.initializers.items():
            tensor = value.const_value
            if tensor is None or isinstance(tensor, ir.ExternalTensor) and tensor.location == PER_PROMPT:
                continue
            if tensor.nbytes > INLINE_BYTES or name in located:
                tensors.setdefault(name, value.const_value)
            elif isinstance(value.const_value, ir.ExternalTensor):
                # a small tensor from the source's data file moves inline: that file is not copied
                value.const_value = ir.tensor(value.const_value.numpy(), name=name)
    tensors.update(extra or {})
    with progress(total=len(tensors), desc="writing weights", unit="tensor") as bar:
        external = ir.external_data.convert_tensors_to_external(
            list(tensors.values()), base_dir=directory, relative_path=weights, alignment=65536,
            callback=lambda *_: bar.update())
    by_name = dict(zip(tensors, external))
    for file, model in models.items():
        for name, value in model.graph.initializers.items():
            if name in by_name:
                value.const_value = by_name[name]
        ir.save(model, directory / file)
    return by_name
