"""`glass-onnx compile`: dense export -> global prior -> graph passes -> prefill.onnx + decode.onnx sharing weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from glass_onnx.compiler.artifact import atomic_directory, created_by, refuse_existing
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import global_prior
from glass_onnx.compiler.settings import (
    DEFAULT_FUSION,
    DEFAULT_METHOD,
    DEFAULT_SPARSITY,
    PRIOR_SAMPLES,
    PRIOR_TOKENS,
    check_fusion,
    check_settings,
    get_method,
)
from glass_onnx.compiler.sources import recipe_of
from glass_onnx.passes.glass_math import ranks
from glass_onnx.runtime import protocol
from glass_onnx.runtime.manifest import load_manifest, write_manifest
from glass_onnx.runtime.protocol import (
    COMPACT_GRAPH,
    DECODE_GRAPH,
    FAST_DECODER_GRAPH,
    FULL_GATE_UP_T,
    GENAI_CONFIG,
    GENAI_DECODE_GRAPH,
    GENAI_PREFILL_GRAPH,
    PREFILL_GRAPH,
    PRIOR_FILE,
    SELECT_GRAPH,
    TOKENIZER_FILES,
    WEIGHTS,
    panel_width,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CompileOptions:
    method: str = DEFAULT_METHOD
    sparsity: float = DEFAULT_SPARSITY
    lam: float | None = None  # None: the model's default (settings.default_lam)
    fusion: str = DEFAULT_FUSION
    prior_samples: int = PRIOR_SAMPLES
    prior_tokens: int = PRIOR_TOKENS
    prior_seed: int = 0
    prior_text: str | None = None
    prior_file: str | None = None
    genai: bool = False  # also write decode_genai.onnx + genai_config.json for onnxruntime-genai
    attention: str = "ort"  # the export's attention form when compiling from a model (export.py)


def _fast_ffn_weights(ffn_weights: list[dict]) -> dict:
    """The tensors compact.onnx gathers from, by name in the weights file: per layer, gate and up transposed and
    stacked [2I, H] (a copy: the decoder's own are [H, I]), and the decoder's own down initializer [I, H]."""
    import onnx_ir as ir

    out = {}
    for layer, weights in enumerate(ffn_weights):
        gate, up = (weights[part].const_value.numpy() for part in ("gate", "up"))
        name = FULL_GATE_UP_T.format(layer=layer)
        out[name] = ir.tensor(np.ascontiguousarray(np.concatenate([gate.T, up.T])), name=name)
        out[weights["down"].name] = weights["down"].const_value
    return out


def _fast_layout(stored: dict, ffn_weights: list[dict], hidden_panel: int) -> dict:
    """The manifest's ``fast`` section: its graphs, I/O names, and where each layer's full FFN weights, as
    compact.onnx reads them, lie in the weights file."""
    entries = []
    for layer, weights in enumerate(ffn_weights):
        entry = {}
        for part, name in (("gate_up", FULL_GATE_UP_T.format(layer=layer)), ("down", weights["down"].name)):
            tensor = stored[name]
            entry[part] = {"offset": tensor.offset, "shape": list(tensor.shape), "dtype": "float32"}
        entries.append(entry)
    return {
        "decoder": FAST_DECODER_GRAPH, "select": SELECT_GRAPH, "compact": COMPACT_GRAPH, "weights": WEIGHTS,
        "io": protocol.fast_io_section(),
        "hidden_panel_width": hidden_panel,
        "ffn_weights": entries,
    }


def build_graphs(dense_graph: Path, model_info: dict, prior_rank: np.ndarray, lam: float, k: int, fusion: str,
                 genai: bool) -> tuple[dict, list[dict]]:
    """Every graph of a compiled artifact, by file name, from the dense graph; and the FFN weights per layer, of
    which the caller stores the copies the fast layout's compact.onnx gathers from."""
    import onnx_ir as ir

    from glass_onnx.passes import (
        build_compact_model,
        build_select_model,
        decode_pipeline,
        fast_decoder_pipeline,
        prefill_pipeline,
    )
    from glass_onnx.passes.ffn_inputs import ffn_weights

    graphs = {name: ir.load(dense_graph) for name in (PREFILL_GRAPH, DECODE_GRAPH, FAST_DECODER_GRAPH)}
    prefill_pipeline(prior_rank, lam, k, fusion)(graphs[PREFILL_GRAPH])
    decode_pipeline()(graphs[DECODE_GRAPH])
    fast_decoder_pipeline()(graphs[FAST_DECODER_GRAPH])
    graphs[SELECT_GRAPH] = build_select_model(prior_rank, lam, k, fusion)
    graphs[COMPACT_GRAPH] = build_compact_model(model_info["hidden_size"], model_info["intermediate_size"],
                                                panel_width(model_info["hidden_size"]))
    if genai:
        graphs[GENAI_PREFILL_GRAPH], graphs[GENAI_DECODE_GRAPH] = ir.load(dense_graph), ir.load(dense_graph)
        prefill_pipeline(prior_rank, lam, k, fusion, default_stats=True)(graphs[GENAI_PREFILL_GRAPH])
        decode_pipeline(genai=True)(graphs[GENAI_DECODE_GRAPH])
    return graphs, ffn_weights(graphs[FAST_DECODER_GRAPH])


def compile_model(spec: str, output: str | Path, options: CompileOptions, force: bool = False) -> Path:
    """`glass-onnx compile`: the artifact directory ``output`` for the model or dense export ``spec``."""
    import onnx

    from glass_onnx.compiler.shared_weights import save_sharing_weights

    method = get_method(options.method)
    check_fusion(options.fusion)
    refuse_existing(output, force)
    dense, source = dense_artifact(spec, attention=options.attention)
    manifest = load_manifest(dense)
    model_info = manifest["model"]
    k, lam = check_settings(method, options.sparsity, options.lam, model_info["intermediate_size"], recipe_of(manifest))
    prior_values, provenance = global_prior(manifest, source, method, options)
    prior_rank = ranks(prior_values) if method.prior else np.zeros(prior_values.shape, np.float32)

    log.info(f"compiling {method.name}: keep {k}/{model_info['intermediate_size']} neurons per layer, lam={lam}, "
             f"fusion={options.fusion}")
    graphs, ffn_weights = build_graphs(dense / manifest["sessions"]["decode"], model_info, prior_rank, lam, k,
                                       options.fusion, options.genai)
    with atomic_directory(output, force=force) as tmp:
        stored = save_sharing_weights(graphs, tmp, WEIGHTS, extra=_fast_ffn_weights(ffn_weights))
        if options.genai:
            from glass_onnx.compiler.genai_config import genai_config

            config = genai_config(manifest, GENAI_PREFILL_GRAPH, GENAI_DECODE_GRAPH)
            (tmp / GENAI_CONFIG).write_text(json.dumps(config, indent=2))
        for name in graphs:
            onnx.checker.check_model(str(tmp / name), full_check=True)
        for name in TOKENIZER_FILES:
            if (dense / name).exists():
                shutil.copy2(dense / name, tmp / name)
        np.savez(tmp / PRIOR_FILE, values=prior_values, rank=prior_rank)
        fast = _fast_layout(stored, ffn_weights, panel_width(model_info["hidden_size"]))
        write_manifest(tmp, {
            **{key: manifest[key] for key in ("model", "tokenizer", "io", "attention", "kv_buffers", "weights")},
            "kind": "glass",
            "sessions": {"prefill": PREFILL_GRAPH, "decode": DECODE_GRAPH},
            "glass": {
                "method": method.name,
                "sparsity": 1.0 - k / model_info["intermediate_size"],
                "k": k,
                "intermediate_size": model_info["intermediate_size"],
                "lam": lam,
                "fusion": options.fusion,
                **protocol.glass_io_sections(model_info["intermediate_size"], k),
            },
            "fast": fast,
            "build": {
                "source": manifest.get("build", {}).get("source"),
                "dense_export": str(dense),
                "requested_sparsity": options.sparsity,
                "prior": provenance,
                "created_by": created_by(),
            },
        })
    log.info(f"wrote {output}")
    return Path(output)
