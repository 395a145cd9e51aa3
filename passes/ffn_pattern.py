"""Find every gated FFN of a decoder graph by its shape, not by node names.

A gated FFN is  down( act(x @ W_gate) * (x @ W_up) )  with constant W_gate, W_up [H, I] and W_down [I, H]:
MatMul(gate) -> activation -> Mul(., MatMul(up)) -> MatMul(down). The activation is any chain of elementwise
nodes from the gate MatMul's output whose other inputs are constants: Sigmoid+Mul (SiLU), Gelu, or Gelu's
tanh/erf decomposition. A projection is a MatMul on a constant fp32 weight, or (int4 graphs) ONNX Runtime's
MatMulNBits on constant 4-bit weights and scales.
"""

from __future__ import annotations

import dataclasses
import json
import re

import onnx_ir as ir

from glass_onnx.runtime.errors import GlassError

ELEMENTWISE = {"Sigmoid", "Mul", "Gelu", "Tanh", "Erf", "Add", "Div", "Pow", "Sub", "Sqrt", "Cast", "Relu", "Neg"}


@dataclasses.dataclass
class Projection:
    """x @ W with a constant W: fp32 [K, N] (``scales`` None), or MatMulNBits' 4-bit B [N, K / block, block / 2]
    with its scales [N, K / block]."""

    weight: ir.Value
    scales: ir.Value | None
    k: int
    n: int


@dataclasses.dataclass
class GatedFFN:
    layer: int
    x: ir.Value  # FFN input [batch, seq, H]
    gate: Projection
    up: Projection
    down: Projection
    z: ir.Value  # act(gate) * up, the input of the down projection [batch, seq, I]
    output: ir.Value  # down projection output [batch, seq, H]
    activation: str  # "silu", "gelu_tanh" or "gelu"
    nodes: list[ir.Node]  # every node from the gate/up projections to the down projection

    @property
    def intermediate_size(self) -> int:
        return self.down.k

    @property
    def int4(self) -> bool:
        return self.down.scales is not None


FFN_WEIGHTS = "glass.ffn_weights"  # model metadata: per layer, the names of its FFN weight initializers


def record_ffn_weights(model: ir.Model, ffns: list[GatedFFN]) -> None:
    """Write into the model's metadata which initializers hold each layer's FFN weights (``ffn_weights`` reads them
    back): {gate, up, down} for fp32; {gate_q, gate_scales, up_q, ...} (4-bit B and scales) for int4."""
    def names(ffn: GatedFFN) -> dict[str, str]:
        parts = {"gate": ffn.gate, "up": ffn.up, "down": ffn.down}
        if not ffn.int4:
            return {part: p.weight.name for part, p in parts.items()}
        return {f"{part}_{what}": getattr(p, attribute).name for part, p in parts.items()
                for what, attribute in (("q", "weight"), ("scales", "scales"))}

    model.metadata_props[FFN_WEIGHTS] = json.dumps([names(ffn) for ffn in ffns])


def ffn_weights(model: ir.Model) -> list[dict[str, ir.Value]]:
    """Per layer, the FFN weight initializers ``record_ffn_weights`` wrote down."""
    initializers = model.graph.initializers
    return [{part: initializers[name] for part, name in layer.items()}
            for layer in json.loads(model.metadata_props[FFN_WEIGHTS])]


def is_constant(value: ir.Value | None) -> bool:
    if value is None:
        return True
    if value.const_value is not None or value.is_initializer():
        return True
    return value.producer() is not None and value.producer().op_type == "Constant"


def _projection(node: ir.Node | None) -> Projection | None:
    """The projection ``node`` computes: a MatMul on a constant 2-D weight, or a 4-bit MatMulNBits on constants."""
    if node is None:
        return None
    if node.op_type == "MatMul" and node.domain == "":
        w = node.inputs[1]
        if w is not None and is_constant(w) and w.shape is not None and len(w.shape) == 2:
            return Projection(w, None, w.shape[0], w.shape[1])
    if node.op_type == "MatMulNBits" and node.domain == "com.microsoft" and len(node.inputs) == 3 and \
            node.attributes.get_int("bits", 4) == 4 and all(is_constant(v) for v in node.inputs[1:]):
        return Projection(node.inputs[1], node.inputs[2], node.attributes.get_int("K"), node.attributes.get_int("N"))
    return None


def _activation_chain(value: ir.Value, gate_out: ir.Value) -> list[ir.Node] | None:
    """Nodes between the gate MatMul output and ``value`` if they form an elementwise function of it alone."""
    chain, stack, seen = [], [value], set()
    while stack:
        v = stack.pop()
        if v is gate_out:
            continue
        node = v.producer()
        if node is None or node.op_type not in ELEMENTWISE or node.domain != "" or id(node) in seen:
            return None
        seen.add(id(node))
        chain.append(node)
        dynamic = [i for i in node.inputs if not is_constant(i)]
        if not dynamic:
            return None
        stack.extend(dynamic)
    return chain if chain else None


def _classify(chain: list[ir.Node]) -> str | None:
    ops = {n.op_type for n in chain}
    gelu = [n for n in chain if n.op_type == "Gelu"]
    if gelu:
        return "gelu_tanh" if gelu[0].attributes.get_string("approximate", "none") == "tanh" else "gelu"
    if "Tanh" in ops:
        return "gelu_tanh"
    if "Erf" in ops:
        return "gelu"
    if ops <= {"Sigmoid", "Mul"} and "Sigmoid" in ops:
        return "silu"
    return None


def _layer_of(node: ir.Node) -> int | None:
    scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes", "")
    found = re.findall(r"layers\.(\d+)", scopes)
    return int(found[-1]) if found else None


def match_gated_ffn(down: ir.Node) -> GatedFFN | None:
    """The gated FFN whose down projection is ``down``, or None."""
    w_down = _projection(down)
    z = down.inputs[0]
    mul = z.producer() if z is not None else None
    if w_down is None or mul is None or mul.op_type != "Mul" or mul.domain != "":
        return None
    for gated, linear in (mul.inputs, mul.inputs[::-1]):
        up = linear.producer() if linear is not None else None
        w_up = _projection(up)
        if w_up is None or (w_up.scales is None) != (w_down.scales is None):
            continue
        x = up.inputs[0]
        # the gate projection: same input x, constant weight of the up's form and size, feeding the activation chain
        for gate in (c.node for c in x.uses() if c.node is not up):
            w_gate = _projection(gate)
            if w_gate is None or (w_gate.scales is None) != (w_up.scales is None) or \
                    (w_gate.k, w_gate.n) != (w_up.k, w_up.n) or (w_down.k, w_down.n) != (w_up.n, w_up.k):
                continue
            chain = _activation_chain(gated, gate.outputs[0])
            activation = _classify(chain) if chain else None
            if activation:
                return GatedFFN(-1, x, w_gate, w_up, w_down, z, down.outputs[0], activation,
                                [gate, up, *chain, mul, down])
    return None


def find_gated_ffns(graph: ir.Graph, num_layers: int | None = None) -> list[GatedFFN]:
    """All gated FFNs in graph order, numbered as layers; a clear error when a layer's FFN is not found."""
    found = [f for f in (match_gated_ffn(n) for n in graph if n.op_type in ("MatMul", "MatMulNBits"))
             if f is not None]
    for i, ffn in enumerate(found):
        ffn.layer = i
    if num_layers is not None and len(found) != num_layers:
        seen = {_layer_of(f.nodes[-1]) for f in found}
        missing = [i for i in range(num_layers) if i not in seen]
        where = f"layer(s) {', '.join(map(str, missing[:8]))}" if missing and None not in seen else "some layers"
        raise GlassError(
            f"found {len(found)} gated FFNs (MatMul gate -> activation -> Mul with MatMul up -> MatMul down) in "
            f"a {num_layers}-layer graph; no FFN recognised in {where}. Supported FFNs: SwiGLU and GeGLU"
        )
    if not found:
        raise GlassError("no gated FFN (MatMul gate -> activation -> Mul with MatMul up -> MatMul down) in this graph; "
                         "GLASS supports SwiGLU and GeGLU decoders")
    return found
