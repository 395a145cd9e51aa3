"""Running the part of a graph that computes some values, on chosen inputs, with ONNX Runtime.

Passes use it to learn what a subgraph means instead of guessing from its shape: the exporter's rotary tables
(packed_attention.py) and attention masks (padding_bias.py) are small functions of a few inputs.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def ancestors(values: list[ir.Value]) -> tuple[list[ir.Node], set[str], list[ir.Value]]:
    """Nodes computing ``values`` (topological order), the graph inputs they read, the initializers they read."""
    seen, order, inputs, constants = set(), [], set(), {}
    stack = [(v, False) for v in reversed(values)]  # iterative: a value may sit deep in a large graph
    while stack:
        value, expanded = stack.pop()
        node = value.producer() if value is not None else None
        if node is None:
            if value is not None and value.const_value is not None:
                constants[value.name] = value
            elif value is not None and value.is_graph_input():
                inputs.add(value.name)
        elif expanded:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((value, True))  # after its inputs
            stack.extend((i, False) for i in reversed(node.inputs))
    return order, inputs, list(constants.values())


class Subgraph:
    """An ONNX Runtime session over the nodes that compute ``values``; ``inputs`` names the graph inputs it reads."""

    def __init__(self, model: ir.Model, values: list[ir.Value]):
        import onnx
        import onnxruntime as ort

        nodes, self.inputs, constants = ancestors(values)
        graph_inputs = [v for v in model.graph.inputs if v.name in self.inputs]
        graph = onnx.helper.make_graph(
            [ir.serde.serialize_node(n) for n in nodes], "subgraph",
            [ir.serde.serialize_value(v) for v in graph_inputs],
            [onnx.helper.make_tensor_value_info(v.name, int(v.dtype or ir.DataType.FLOAT), None) for v in values],
            [ir.serde.serialize_tensor(c.const_value) for c in constants])
        for proto, c in zip(graph.initializer, constants):
            proto.name = c.name
        opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
        proto = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {name: feeds[name] for name in self.inputs})
