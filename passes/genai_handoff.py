"""Decode variant for onnxruntime-genai's decoder-pipeline: the kept-neuron sets ride in its value store.

genai's pipeline hands a stage's outputs to later stages, but drops the outputs of prompt-only stages after the
first generated token. The decode graph therefore reads the sets under a store key of its own and re-emits them
(Identity) each step under that same key, so they survive for the whole generation.
"""

from __future__ import annotations

import onnx_ir as ir

from glass_onnx.runtime.protocol import GENAI_KEPT_NEXT, GENAI_KEPT_STATE, KEPT_NEURONS


class GenaiKeptHandoffPass(ir.passes.InPlacePass):
    """Renames decode inputs ``kept_neurons.l`` to ``kept_neurons_state.l`` and adds outputs
    ``kept_neurons_next.l`` = Identity(input). Guarantees: every other output is unchanged."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        layer = 0
        by_name = {v.name: v for v in graph.inputs}
        while (value := by_name.get(KEPT_NEURONS.format(layer=layer))) is not None:
            value.name = GENAI_KEPT_STATE.format(layer=layer)
            node = ir.node("Identity", [value], name=f"glass/layers.{layer}/carry_kept")
            node.outputs[0].name = GENAI_KEPT_NEXT.format(layer=layer)
            node.outputs[0].shape, node.outputs[0].type = value.shape, value.type
            graph.append(node)
            graph.outputs.append(node.outputs[0])
            layer += 1
        return ir.passes.PassResult(model, modified=layer > 0)
