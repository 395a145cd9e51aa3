"""Making and finding values in an ONNX IR graph: the three helpers every pass needs."""

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
