"""`glass-onnx inspect`: what an artifact holds, without running it; `--netron` opens its graphs in Netron."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.manifest import keep_summary, load_manifest

log = logging.getLogger(__name__)

# Contrib (com.microsoft) ops a compiled graph may contain: every full ONNX Runtime build carries their CPU kernels
# (and CUDA ones; GroupQueryAttention, the two skip norms and MatMulNBits also DirectML/WebGPU ones), so every binding
# (Python, C#, C++, Java, JS/Node) runs them. The export's attention="onnx" form avoids the first three for other
# runtimes (SkipLayerNormalization only in LayerNorm models: StableLM); the 4-bit ones come only with --weights int4
# (onnxruntime-genai's int4 builds use the same).
PORTABLE_CONTRIB_OPS: frozenset[str] = frozenset({"GroupQueryAttention", "SkipSimplifiedLayerNormalization",
                                                  "SkipLayerNormalization", "MatMulNBits", "GatherBlockQuantized"})


def _shape(value_info) -> str:
    dims = value_info.type.tensor_type.shape.dim
    return "[" + ", ".join(d.dim_param or str(d.dim_value) for d in dims) + "]"


def graph_summary(path: Path) -> dict:
    import onnx

    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    functions = {(f.domain, f.name): f for f in model.functions}
    glass_nodes = [n for n in graph.node if n.domain == "ai.glass"]
    return {
        "inputs": [(i.name, _shape(i)) for i in graph.input],
        "outputs": [(o.name, _shape(o)) for o in graph.output],
        "nodes": len(graph.node),
        "ops": Counter(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in graph.node),
        "glass_nodes": Counter(n.op_type for n in glass_nodes),
        "functions": {name: f.doc_string.strip().splitlines()[0] for (_, name), f in functions.items()},
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
    }


def non_portable_ops(path: Path) -> list[str]:
    """Ops outside the standard domain, the ai.glass functions and the documented contrib list."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    local = {(f.domain, f.name) for f in model.functions}
    bad = set()
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    for n in nodes:
        if n.domain in ("", "ai.onnx") or (n.domain, n.op_type) in local:
            continue
        if n.domain == "com.microsoft" and n.op_type in PORTABLE_CONTRIB_OPS:
            continue
        bad.add(f"{n.domain}.{n.op_type}")
    return sorted(bad)


def describe(directory: Path) -> str:
    m = load_manifest(directory)
    build = m.get("build", {})
    lines = [f"{directory}: {m['kind']} {m['weights']} artifact of {m['model']['name']} ({m['model']['architecture']}, "
             f"{m['model']['num_layers']} layers, hidden {m['model']['hidden_size']}, "
             f"FFN {m['model']['intermediate_size']})"]
    glass = m.get("glass")
    if glass:
        lines.append(f"GLASS: {glass['method']}, keeps {keep_summary(glass)} (sparsity {glass['sparsity']:.3f}, "
                     f"{glass['budget']['kind']} budget), lam {glass['lam']}, fusion {glass['fusion']}, "
                     f"warm-up {glass.get('warmup_tokens', 0)} tokens")
        if len(set(glass["k_per_layer"])) > 1:
            lines.append("kept per layer: " + ", ".join(map(str, glass["k_per_layer"])))
        if "prior" in build:
            lines.append("prior: " + ", ".join(f"{k}={v}" for k, v in build["prior"].items() if k != "cache"))
    size = sum(info["bytes"] for info in m["files"].values())
    lines.append("files: " + ", ".join(f"{n} ({info['bytes'] / 2**20:.1f} MiB)" for n, info in m["files"].items())
                 + f"; total {size / 2**20:.1f} MiB")
    if "created_by" in build:
        lines.append("made by: " + ", ".join(f"{k} {v}" for k, v in build["created_by"].items() if k != "command"))
    roles = {f"reference {role}": file for role, file in m["sessions"].items()} if glass else dict(m["sessions"])
    if "fast" in m:
        fast_roles = ("decoder", "select", "compact", "compact_decoder", "head")
        roles.update({f"fast {role}": m["fast"][role] for role in fast_roles if role in m["fast"]})
    for role, file in roles.items():
        if role == "decode" and file == m["sessions"]["prefill"]:
            lines.append(f"\n[decode] same graph as prefill ({file})")
            continue
        s = graph_summary(directory / file)
        lines.append(f"\n[{role}] {file}: {s['nodes']} nodes, opsets {s['opsets']}")
        lines.append("  inputs:  " + "; ".join(f"{n} {sh}" for n, sh in _compact(s["inputs"])))
        lines.append("  outputs: " + "; ".join(f"{n} {sh}" for n, sh in _compact(s["outputs"])))
        if s["glass_nodes"]:
            layers = m["model"]["num_layers"]
            scope = {layers: " (one per layer)", 1: " (all layers)"}
            counts = ", ".join(f"{op} x{c}{scope.get(c, '')}" for op, c in s["glass_nodes"].items())
            lines.append(f"  ai.glass nodes: {counts}")
            for name, doc in s["functions"].items():
                lines.append(f"    {name}: {doc}")
        top = ", ".join(f"{op} {c}" for op, c in s["ops"].most_common(8))
        lines.append(f"  most used ops: {top}")
        if bad := non_portable_ops(directory / file):
            lines.append(f"  NOT PORTABLE: {', '.join(bad)}")
    return "\n".join(lines)


def _compact(items):
    """Collapse per-layer names (past_key_values.0.key ... .29.key) into one entry with the first layer's shape."""
    import re

    groups: dict[str, list[str]] = {}
    for name, shape in items:
        groups.setdefault(re.sub(r"\.\d+(\.|$)", r".{layer}\1", name, count=1), []).append(shape)
    return [(f"{k} x{len(v)}" if len(v) > 1 else k, v[0]) for k, v in groups.items()]


def open_in_netron(directory: Path, file: str | None, port: int) -> None:
    try:
        import netron
    except ImportError:
        raise GlassError("Netron is not installed; run: pip install netron") from None
    m = load_manifest(directory)
    path = directory / (file or m["sessions"]["prefill"])
    netron.start(str(path), address=("localhost", port), browse=False)
    log.info(f"Netron serves {path} at http://localhost:{port} (Ctrl-C to stop)")
    netron.wait()
