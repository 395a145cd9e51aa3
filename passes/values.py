"""Making and finding values in an ONNX IR graph: the helpers every pass needs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def tensor_value(name: str, dtype: ir.DataType, dims: list) -> ir.Value:
    """A graph input/output value with its element type and (partly symbolic) shape."""
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(dims))


def constant(array, name: str | None = None) -> ir.Node:
    """A Constant node holding ``array``: a numpy array as it is, a list of ints as int64."""
    array = array if isinstance(array, np.ndarray) else np.array(array, np.int64)
    return ir.node("Constant", [], attributes={"value": ir.tensor(array)}, name=name)


def graph_input(graph: ir.Graph, name: str) -> ir.Value | None:
    """The graph input called ``name``, or None."""
    return next((v for v in graph.inputs if v.name == name), None)


def initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """A new initializer holding ``array``, called ``name`` (with ``_`` appended while that name is taken: one
    weight read by two layers, identical tensors deduplicated)."""
    while name in graph.initializers:
        name += "_"
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def constant_ints(value: ir.Value | None) -> list[int] | None:
    """The integers a constant value (an initializer or a Constant node's output) holds, flattened; or None."""
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else [int(i) for i in tensor.numpy().reshape(-1)]
