"""Names of the graph inputs and outputs the GLASS passes add (templates over ``{layer}``), and their values."""

import onnx_ir as ir

PAST_NEURON_STATS = "past_neuron_stats.{layer}"
PRESENT_NEURON_STATS = "present_neuron_stats.{layer}"
KEPT_NEURONS = "kept_neurons.{layer}"
PRIOR_RANK = "glass.prior_rank"  # [layers, I] ranks of the global prior, 0 = most important
LAM = "glass.lam"  # weight of the local ranking
KEEP = "glass.k"  # neurons kept per layer, [1] int64


def tensor_value(name: str, dtype: ir.DataType, dims: list) -> ir.Value:
    """A graph input/output value with its element type and (partly symbolic) shape."""
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(dims))
