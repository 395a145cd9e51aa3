"""The LM head as a graph of its own, for the layout that creates a decode session per prompt (int4
``compact_session``): ONNX Runtime prepacks a session's MatMulNBits weights when it creates the session and shares
no prepacked weights between sessions, so a head left inside the per-prompt session would be prepacked again for
every prompt (Gemma-3-270M: a 262k x 640 head, most of the model). Cut off, it is prepacked once, in a session the
prompt's and every prompt's decode sessions hand their final hidden states to.

The head is the projection that makes the logits and whatever elementwise work follows it (a soft-cap), found from
the ``logits`` output back, by shape: each node on the way has one non-constant input.
"""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.passes.ffn_pattern import is_constant
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import HIDDEN, LOGITS


def lm_head(graph: ir.Graph) -> tuple[ir.Value, list[ir.Node]]:
    """(the head's input, the final hidden states; the head's nodes, projection first)."""
    logits = next((v for v in graph.outputs if v.name == LOGITS), None)
    nodes, node = [], logits.producer() if logits is not None else None
    while node is not None:
        nodes.append(node)
        dynamic = [v for v in node.inputs if not is_constant(v)]
        if node.op_type in ("MatMul", "MatMulNBits") and len(dynamic) == 1 and dynamic[0] is node.inputs[0]:
            return node.inputs[0], nodes[::-1]
        node = dynamic[0].producer() if len(dynamic) == 1 else None
    raise GlassError("the graph's logits do not come from one projection of the hidden states; "
                     "this model cannot use the int4 fast layout: compile it with --block 1 (reference layout)")


def hidden_shape(hidden: ir.Value) -> ir.Shape:
    return ir.Shape(["batch", "sequence", hidden.shape[-1]])


class DetachLMHeadPass(ir.passes.InPlacePass):
    """Replaces output ``logits`` by the head's input, renamed ``hidden_states`` [batch, sequence, H].

    Guarantees: the head graph (``LMHeadOnlyPass``) applied to the new output gives the old logits; every other output
    is unchanged. The head's nodes are left unused (``RemoveUnusedNodesPass`` removes them)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        hidden, _ = lm_head(graph)
        at = next(i for i, v in enumerate(graph.outputs) if v.name == LOGITS)
        hidden.name, hidden.shape = HIDDEN, hidden_shape(hidden)
        graph.outputs[at] = hidden
        return ir.passes.PassResult(model, modified=True)


class LMHeadOnlyPass(ir.passes.InPlacePass):
    """Makes the graph the LM head alone: input ``hidden_states``, output ``logits``.

    Guarantees: for the hidden states the full graph computes, the logits are the full graph's. Everything else is
    left unused (``RemoveUnusedNodesPass`` removes it with its initializers)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        hidden, nodes = lm_head(graph)
        head_input = ir.Value(name=HIDDEN, shape=hidden_shape(hidden), type=hidden.type)
        for node in nodes:
            for i, value in enumerate(node.inputs):
                if value is hidden:
                    node.replace_input_with(i, head_input)
        logits = next(v for v in graph.outputs if v.name == LOGITS)
        graph.inputs.clear()
        graph.inputs.append(head_input)
        graph.outputs.clear()
        graph.outputs.append(logits)
        return ir.passes.PassResult(model, modified=True)
