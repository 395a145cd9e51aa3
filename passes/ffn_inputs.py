"""Fast-layout decoder pass: every FFN gets a second, compact path whose weights are graph inputs.

One session serves prefill and decode. Prefill runs the FFNs on their constant weights, which ONNX Runtime
prepacks once when the session loads, exactly as in the dense model, and exposes their activations for the
selection. Decode runs the per-prompt compact weights of the kept neurons, bound as inputs. The rows of each FFN
input go to one path or the other: all to the compact path when the compact weights are bound (their panel count
is not zero), all to the constant path when they are empty. The unused path runs on zero rows: a few nodes that
do no work.

A matmul whose weights are an input loses ONNX Runtime's prepacked layout and re-packs them on every call, so
the compact weights come in layouts it streams well, for one token as for a few (BENCHMARKS.md):
- ``ffn.{layer}.gate_up``: gate then up weights of the kept neurons, in panels [ffn_batch, 2k / w, H, w], each
  panel a contiguous [H, w] block;
- ``ffn.{layer}.down``: the down weights in panels of h hidden units, [ffn_batch, H / h, k, h].
Every layer's compact weights are all bound or all empty; their k is one for all layers unless the pass is told
the budgets differ by layer (then each layer reads its own gate/up width, a few shape nodes more per layer).
"""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import GatedFFN, find_gated_ffns, record_ffn_weights
from glass_onnx.passes.values import constant, tensor_value
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import FFN_DOWN, FFN_GATE_UP, FFN_Z


class CompactFFNInputsPass(ir.passes.InPlacePass):
    """Adds each gated FFN's compact path (module docstring) and exposes its constant path's activations.

    Guarantees: with the compact inputs empty (``ffn.{layer}.gate_up`` [1, 0, H, 1], ``ffn.{layer}.down``
    [1, H / h, 0, h]) every original output is unchanged and ``ffn.{layer}.z`` is the FFN's activation; bound to
    the panels of a subset of neurons (as compact.onnx builds them), every FFN is the dense FFN restricted to them.
    The FFN weights stay initializers; the model's metadata ``glass.ffn_weights`` names them per layer (read it with
    ``ffn_pattern.ffn_weights``), so the caller can store the copies compact.onnx gathers from.
    """

    def __init__(self, per_layer_k: bool = False):
        super().__init__()
        self.per_layer_k = per_layer_k

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        ffns = find_gated_ffns(graph)
        if any(ffn.int4 for ffn in ffns):
            raise GlassError("the panel fast layout takes fp32 FFN weights; an int4 graph has its own fast layout")
        order = {node: i for i, node in enumerate(graph)}
        entries = [min(ffn.nodes[:2], key=order.__getitem__) for ffn in ffns]  # gate or up, whichever runs first
        inputs = [self._inputs(graph, ffn) for ffn in ffns]
        route = self._route(graph, ffns[0], entries[0], inputs[0][0])
        for ffn, entry, (gate_up, down) in zip(ffns, entries, inputs):
            full_rows, gate_up_shape, down_shape = route
            if self.per_layer_k and ffn is not ffns[0]:
                gate_up_shape = self._gate_up_shape(graph, entry, gate_up, down_shape, ffn.layer)
            self._split_rows(graph, ffn, entry, gate_up, down, full_rows, gate_up_shape, down_shape)
        record_ffn_weights(model, ffns)
        return ir.passes.PassResult(model, modified=True)

    @staticmethod
    def _inputs(graph: ir.Graph, ffn: GatedFFN) -> tuple[ir.Value, ir.Value]:
        hidden, dtype = ffn.gate.k, ffn.gate.weight.dtype
        gate_up = tensor_value(FFN_GATE_UP.format(layer=ffn.layer), dtype,
                               ["ffn_batch", "gate_up_panels", hidden, "panel_width"])
        down = tensor_value(FFN_DOWN.format(layer=ffn.layer), dtype,
                            ["ffn_batch", "hidden_panels", "kept", "hidden_panel_width"])
        graph.inputs.extend([gate_up, down])
        return gate_up, down

    @staticmethod
    def _route(graph: ir.Graph, first: GatedFFN, entry: ir.Node, gate_up: ir.Value):
        """(rows of the constant path, [batch, compact rows, 2k], [batch, compact rows, H]) from the first layer's
        shapes, shared by all layers: every row goes to the compact path when its panels are bound."""
        p = "glass/ffn_route"
        rows = ir.node("Shape", [first.x], attributes={"start": 1, "end": 2}, name=f"{p}/rows")
        panels = ir.node("Shape", [gate_up], attributes={"start": 1, "end": 2}, name=f"{p}/panels")
        width = ir.node("Shape", [gate_up], attributes={"start": 3, "end": 4}, name=f"{p}/panel_width")
        spread = ir.node("Mul", [rows.outputs[0], panels.outputs[0]], name=f"{p}/spread")
        compact = ir.node("Min", [rows.outputs[0], spread.outputs[0]], name=f"{p}/compact_rows")  # S or 0
        full = ir.node("Sub", [rows.outputs[0], compact.outputs[0]], name=f"{p}/full_rows")
        batch = ir.node("Shape", [first.x], attributes={"start": 0, "end": 1}, name=f"{p}/batch")
        gate_up_width = ir.node("Mul", [panels.outputs[0], width.outputs[0]], name=f"{p}/gate_up_width")
        hidden = constant([first.gate.k], f"{p}/hidden")
        # explicit shapes (no -1): the unused path has zero rows, from which Reshape cannot infer a dimension
        shapes = [ir.node("Concat", [batch.outputs[0], compact.outputs[0], last.outputs[0]], attributes={"axis": 0},
                          name=f"{p}/{what}_shape") for what, last in (("gate_up", gate_up_width), ("down", hidden))]
        graph.insert_before(entry, [rows, panels, width, spread, compact, full, batch, gate_up_width, hidden, *shapes])
        full.outputs[0].name = "glass.constant_ffn_rows"
        return full.outputs[0], shapes[0].outputs[0], shapes[1].outputs[0]

    @staticmethod
    def _gate_up_shape(graph: ir.Graph, entry: ir.Node, gate_up: ir.Value, down_shape: ir.Value,
                       layer: int) -> ir.Value:
        """[batch, compact rows, 2k] for this layer's own k: down's shape with its last entry replaced."""
        p = f"glass/layers.{layer}/ffn_route"
        panels = ir.node("Shape", [gate_up], attributes={"start": 1, "end": 2}, name=f"{p}/panels")
        width = ir.node("Shape", [gate_up], attributes={"start": 3, "end": 4}, name=f"{p}/panel_width")
        both = ir.node("Mul", [panels.outputs[0], width.outputs[0]], name=f"{p}/gate_up_width")
        start, end = constant([0], f"{p}/start"), constant([2], f"{p}/end")
        rows = ir.node("Slice", [down_shape, start.outputs[0], end.outputs[0]], name=f"{p}/rows")
        shape = ir.node("Concat", [rows.outputs[0], both.outputs[0]], attributes={"axis": 0}, name=f"{p}/gate_up_shape")
        graph.insert_before(entry, [panels, width, both, start, end, rows, shape])
        return shape.outputs[0]

    def _split_rows(self, graph: ir.Graph, ffn: GatedFFN, entry: ir.Node, gate_up: ir.Value, down: ir.Value,
                    full_rows: ir.Value, gate_up_shape: ir.Value, down_shape: ir.Value) -> None:
        p = f"glass/layers.{ffn.layer}/compact_ffn"
        start, end, axis = constant([0], f"{p}/start"), constant([2**62], f"{p}/end"), constant([1], f"{p}/axis")
        to_constant = ir.node("Slice", [ffn.x, start.outputs[0], full_rows, axis.outputs[0]], name=f"{p}/constant_rows")
        to_compact = ir.node("Slice", [ffn.x, full_rows, end.outputs[0], axis.outputs[0]], name=f"{p}/compact_rows")
        graph.insert_before(entry, [start, end, axis, to_constant, to_compact])
        for sliced in (to_constant, to_compact):
            sliced.outputs[0].dtype = ffn.x.dtype
        for matmul in ffn.nodes[:2]:
            matmul.replace_input_with(0, to_constant.outputs[0])
        flat = self._panel_matmul(graph, ffn.nodes[-1], to_compact.outputs[0], gate_up, gate_up_shape, f"{p}/gate_up")
        split = ir.node("Split", [flat], attributes={"axis": -1, "num_outputs": 2}, num_outputs=2, name=f"{p}/Split")
        graph.insert_before(ffn.nodes[-1], split)
        # the FFN's own activation and gating, cloned onto the compact path
        renamed = {ffn.nodes[0].outputs[0]: split.outputs[0], ffn.nodes[1].outputs[0]: split.outputs[1]}
        inner = set(ffn.nodes[2:-1])
        for node in [n for n in graph if n in inner]:
            copy = ir.node(node.op_type, [renamed.get(v, v) for v in node.inputs], attributes=dict(node.attributes),
                           domain=node.domain, num_outputs=len(node.outputs), name=f"{p}/{node.name or node.op_type}")
            renamed.update(zip(node.outputs, copy.outputs))
            graph.insert_before(ffn.nodes[-1], copy)
        compact = self._panel_matmul(graph, ffn.nodes[-1], renamed[ffn.z], down, down_shape, f"{p}/down")
        uses = list(ffn.output.uses())
        joined = ir.node("Concat", [ffn.output, compact], attributes={"axis": 1}, name=f"{p}/rows")
        graph.insert_after(ffn.nodes[-1], joined)
        joined.outputs[0].dtype, joined.outputs[0].shape = ffn.output.dtype, ffn.output.shape
        for use in uses:
            use.node.replace_input_with(use.idx, joined.outputs[0])
        for value in (out for node in ffn.nodes for out in node.outputs):
            if value.shape is not None and len(value.shape) == 3:  # the constant path sees S rows or none
                value.shape = ir.Shape([value.shape[0], "constant_rows", value.shape[2]])
        ffn.z.name = FFN_Z.format(layer=ffn.layer)
        ffn.z.shape = ir.Shape(["batch", "constant_rows", ffn.intermediate_size])
        graph.outputs.append(ffn.z)

    @staticmethod
    def _panel_matmul(graph: ir.Graph, before: ir.Node, x: ir.Value, panels: ir.Value, rows_shape: ir.Value,
                      name: str) -> ir.Value:
        """MatMul(x [B, S, K], W [K, N]) as Reshape(Transpose(MatMul(x[:, None], panels [fb, N/w, K, w]))): the
        rows share each panel, read once, as one [S, K] x [K, w] product."""
        axis = constant([1], f"{name}/axis")
        rows = ir.node("Unsqueeze", [x, axis.outputs[0]], name=f"{name}/Unsqueeze")  # [B, 1, S, K]
        product = ir.node("MatMul", [rows.outputs[0], panels], name=f"{name}/MatMul")  # [B, N/w, S, w]
        by_row = ir.node("Transpose", [product.outputs[0]], attributes={"perm": [0, 2, 1, 3]}, name=f"{name}/Transpose")
        out = ir.node("Reshape", [by_row.outputs[0], rows_shape], attributes={"allowzero": 1}, name=f"{name}/Reshape")
        graph.insert_before(before, [axis, rows, product, by_row, out])
        out.outputs[0].dtype = panels.dtype
        return out.outputs[0]
