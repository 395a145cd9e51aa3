"""`glass-onnx compile`: dense export -> global prior -> graph passes -> prefill.onnx + decode.onnx sharing weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from glass_onnx.compiler.artifact import atomic_directory, created_by, refuse_existing
from glass_onnx.compiler.budgets import STEP, layer_budgets_for
from glass_onnx.compiler.export import dense_artifact
from glass_onnx.compiler.priors import global_prior
from glass_onnx.compiler.settings import (
    DEFAULT_FUSION,
    DEFAULT_METHOD,
    DEFAULT_SPARSITY,
    DEFAULT_WARMUP,
    INT4_BLOCK,
    METHODS,
    PRIOR_SAMPLES,
    PRIOR_TOKENS,
    check_fusion,
    check_settings,
    default_lam,
    get_method,
)
from glass_onnx.compiler.sources import recipe_of
from glass_onnx.passes.glass_math import block_prior_rank, ranks
from glass_onnx.passes.quantize_weights import Int4Settings
from glass_onnx.runtime import protocol
from glass_onnx.runtime.decoder import check_warmup
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.manifest import load_manifest, write_manifest
from glass_onnx.runtime.protocol import (
    COMPACT_DECODER_GRAPH,
    COMPACT_GRAPH,
    DECODE_GRAPH,
    FAST_DECODER_GRAPH,
    FULL_GATE_UP_T,
    GENAI_CONFIG,
    GENAI_DECODE_GRAPH,
    GENAI_PREFILL_GRAPH,
    HEAD_GRAPH,
    PER_PROMPT,
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
    weights: str = "fp32"  # or "int4" (export.py, passes/quantize_weights.py)
    block: int | None = None  # neurons per selection candidate; None: 32 for int4 (its fast layout), else 1
    budget: str | None = None  # neurons per layer (compiler/budgets.py): a budget's name or one count per layer;
    # None: calibrated for a sparse method (uniform wherever the model's samples say so), uniform for dense
    warmup: int = DEFAULT_WARMUP  # generated tokens run densely, joining the statistic, before decode goes sparse
    # (the runtime's default, glass.warmup_tokens; 0: the paper's GLASS)

    def __post_init__(self):
        from glass_onnx.compiler.export import check_forms

        check_forms(self.attention, self.weights)
        if self.block is None:
            self.block = INT4_BLOCK if self.weights == "int4" else 1
        check_warmup(self.warmup)
        if self.block < 1 or (self.weights == "fp32" and self.block != 1) or \
                (self.weights == "int4" and self.block > 1 and self.block % INT4_BLOCK):
            raise GlassError(f"--block {self.block} does not fit {self.weights} weights: use 1 (neuron by neuron) or, "
                             f"for int4, a multiple of {INT4_BLOCK}")


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


def _compact_session_layout(stored: dict, ffn_weights: list[dict]) -> dict:
    """The manifest's ``fast`` section of an int4 artifact: a decode session per prompt (passes/compact_int4.py)."""
    def where(name: str) -> dict:
        tensor = stored[name]
        return {"offset": tensor.offset, "shape": list(tensor.shape), "dtype": str(tensor.dtype.numpy())}

    return {
        "kind": "compact_session",
        "decoder": FAST_DECODER_GRAPH, "select": SELECT_GRAPH, "compact_decoder": COMPACT_DECODER_GRAPH,
        "head": HEAD_GRAPH,
        "weights": WEIGHTS, "io": protocol.compact_session_io_section(), "block": INT4_BLOCK,
        "ffn_weights": [{part: where(value.name) for part, value in layer.items()} for layer in ffn_weights],
    }


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
        "kind": "panels",
        "decoder": FAST_DECODER_GRAPH, "select": SELECT_GRAPH, "compact": COMPACT_GRAPH, "weights": WEIGHTS,
        "io": protocol.fast_io_section(),
        "hidden_panel_width": hidden_panel,
        "ffn_weights": entries,
    }


@dataclasses.dataclass(frozen=True)
class Selection:
    """How an artifact's prefill chooses neurons (passes/neuron_selection.py)."""

    prior_rank: np.ndarray  # [layers, I] neuron ranks, or [layers, I / block] block ranks, in the artifact's order
    lam: float
    k: tuple[int, ...]  # neurons kept in each layer
    fusion: str
    block: int = 1  # neurons per candidate


def build_graphs(dense_graph: Path, model_info: dict, selection: Selection, weights: str, order: np.ndarray | None,
                 genai: bool) -> dict:
    """Every graph of a compiled artifact, by file name, from the fp32 dense graph (int4: its neurons put in ``order``
    and its weights quantised). The fast layout: fp32, the panel layout; int4, a decode session per prompt over
    compact weights, when the selection keeps whole 4-bit blocks."""
    import onnx_ir as ir

    from glass_onnx.passes import (
        build_compact_model,
        build_select_model,
        compact_decoder_pipeline,
        decode_pipeline,
        fast_decoder_pipeline,
        int4_fast_decoder_pipeline,
        int4_pipeline,
        lm_head_pipeline,
        prefill_pipeline,
    )

    def dense() -> ir.Model:
        model = ir.load(dense_graph)
        if weights == "int4":
            int4_pipeline(order)(model)
        return model

    s = selection
    graphs = {PREFILL_GRAPH: dense(), DECODE_GRAPH: dense()}
    prefill_pipeline(s.prior_rank, s.lam, s.k, s.fusion, s.block)(graphs[PREFILL_GRAPH])
    decode_pipeline()(graphs[DECODE_GRAPH])
    if weights == "fp32":
        graphs[FAST_DECODER_GRAPH] = dense()
        fast_decoder_pipeline(per_layer_k=len(set(s.k)) > 1)(graphs[FAST_DECODER_GRAPH])
        graphs[COMPACT_GRAPH] = build_compact_model(model_info["hidden_size"], model_info["intermediate_size"],
                                                    panel_width(model_info["hidden_size"]))
    elif s.block % INT4_BLOCK == 0:
        graphs[FAST_DECODER_GRAPH] = dense()
        int4_fast_decoder_pipeline()(graphs[FAST_DECODER_GRAPH])
        graphs[COMPACT_DECODER_GRAPH] = dense()
        compact_decoder_pipeline(s.k)(graphs[COMPACT_DECODER_GRAPH])
        graphs[HEAD_GRAPH] = dense()
        lm_head_pipeline()(graphs[HEAD_GRAPH])
    if FAST_DECODER_GRAPH in graphs:
        graphs[SELECT_GRAPH] = build_select_model(s.prior_rank, s.lam, s.k, s.fusion, s.block)
    if genai:
        graphs[GENAI_PREFILL_GRAPH], graphs[GENAI_DECODE_GRAPH] = dense(), dense()
        prefill_pipeline(s.prior_rank, s.lam, s.k, s.fusion, s.block, default_stats=True)(graphs[GENAI_PREFILL_GRAPH])
        decode_pipeline(genai=True)(graphs[GENAI_DECODE_GRAPH])
    return graphs


def neuron_order(method, prior_values: np.ndarray, manifest: dict, source,
                 options: CompileOptions) -> np.ndarray | None:
    """The FFN neurons' order in an int4 artifact that selects blocks: by the global prior, most important first, so a
    4-bit block holds neurons of alike importance (the method's own prior; for a method without one, the activation
    prior: then only the grouping uses it). None keeps the model's order."""
    if options.weights != "int4" or options.block == 1 or method.name == "dense":
        return None
    if not method.prior:
        prior_values, _ = global_prior(manifest, source, METHODS["a-glass"], options)
    return np.argsort(ranks(prior_values), axis=-1, kind="stable")


def calibrated_layer_budgets(manifest: dict, source, options: CompileOptions, k: int) -> tuple[list[int], dict]:
    """The calibrated budget (compiler/budgets.py): measured with A-GLASS at the model's default lam and the uniform
    k, on the activation prior's samples, whatever the method (so methods compare on one budget)."""
    from glass_onnx.compiler.budget_calibration import calibrated_budgets

    values, _ = global_prior(manifest, source, METHODS["a-glass"], options)
    step = options.block if options.block > 1 else STEP
    return calibrated_budgets(manifest, source, options, ranks(values), default_lam(recipe_of(manifest)), k, step)


def compile_model(spec: str, output: str | Path, options: CompileOptions, force: bool = False) -> Path:
    """`glass-onnx compile`: the artifact directory ``output`` for the model or dense export ``spec``."""
    import onnx

    from glass_onnx.compiler.shared_weights import save_sharing_weights
    from glass_onnx.passes.ffn_pattern import ffn_weights as recorded_ffn_weights

    method = get_method(options.method)
    check_fusion(options.fusion)
    refuse_existing(output, force)
    dense, source = dense_artifact(spec, attention=options.attention)
    manifest = load_manifest(dense)
    model_info = manifest["model"]
    size = model_info["intermediate_size"]
    k, lam = check_settings(method, options.sparsity, options.lam, size, recipe_of(manifest), options.block)
    prior_values, provenance = global_prior(manifest, source, method, options)
    order = neuron_order(method, prior_values, manifest, source, options)
    prior_rank = ranks(prior_values) if method.prior else np.zeros(prior_values.shape, np.float32)
    if order is not None:
        prior_rank = np.take_along_axis(prior_rank, order, axis=1)
    if options.block > 1:
        prior_rank = block_prior_rank(prior_rank, options.block)
    if method.name == "dense" and options.budget not in (None, "uniform"):
        raise GlassError("the dense method keeps every neuron; --budget applies to the sparse methods")
    spec = options.budget or ("uniform" if k == size else "calibrated")
    budgets, budget = layer_budgets_for(spec, k, model_info["num_layers"], size, options.block,
                                        calibrate=lambda: calibrated_layer_budgets(manifest, source, options, k))
    budget_kind, budgets = budget["kind"], tuple(budgets)
    selection = Selection(prior_rank, lam, budgets, options.fusion, options.block)

    per_layer = f"{budget_kind} budgets {list(budgets)}" if budget_kind != "uniform" else f"{k}/{size} per layer"
    log.info(f"compiling {method.name} ({options.weights}): keep {per_layer}"
             f"{f' in blocks of {options.block}' if options.block > 1 else ''}, lam={lam}, fusion={options.fusion}")
    graphs = build_graphs(dense / manifest["sessions"]["decode"], model_info, selection, options.weights, order,
                          options.genai)
    panels = options.weights == "fp32"  # the fp32 fast layout's compact.onnx gathers from copies stored beside
    ffn_weights = recorded_ffn_weights(graphs[FAST_DECODER_GRAPH]) if FAST_DECODER_GRAPH in graphs else []
    with atomic_directory(output, force=force) as tmp:
        stored = save_sharing_weights(graphs, tmp, WEIGHTS, extra=_fast_ffn_weights(ffn_weights) if panels else None,
                                      located=frozenset() if panels else frozenset(v.name for w in ffn_weights
                                                                                   for v in w.values()))
        if options.genai:
            from glass_onnx.compiler.genai_config import genai_config

            config = genai_config(manifest, GENAI_PREFILL_GRAPH, GENAI_DECODE_GRAPH)
            (tmp / GENAI_CONFIG).write_text(json.dumps(config, indent=2))
        # the checker wants every external-data location to be a file, the per-prompt one too: an empty stand-in
        (tmp / PER_PROMPT).touch()
        for name in graphs:
            onnx.checker.check_model(str(tmp / name), full_check=True)
        (tmp / PER_PROMPT).unlink()
        for name in TOKENIZER_FILES:
            if (dense / name).exists():
                shutil.copy2(dense / name, tmp / name)
        identity = np.tile(np.arange(size), (model_info["num_layers"], 1))
        np.savez(tmp / PRIOR_FILE, values=prior_values, rank=prior_rank, order=identity if order is None else order)
        if panels:
            fast = {"fast": _fast_layout(stored, ffn_weights, panel_width(model_info["hidden_size"]))}
        else:
            fast = {"fast": _compact_session_layout(stored, ffn_weights)} if ffn_weights else {}
        write_manifest(tmp, {
            **{key: manifest[key] for key in ("model", "tokenizer", "io", "attention", "kv_buffers")},
            "weights": options.weights,
            **({"quantization": Int4Settings().describe()} if options.weights == "int4" else {}),
            "kind": "glass",
            "sessions": {"prefill": PREFILL_GRAPH, "decode": DECODE_GRAPH},
            "glass": {
                "method": method.name,
                "sparsity": 1.0 - sum(budgets) / (len(budgets) * size),
                "k": round(sum(budgets) / len(budgets)),
                "k_per_layer": list(budgets),
                "budget": budget,
                "block": options.block,
                "intermediate_size": size,
                "lam": lam,
                "fusion": options.fusion,
                "warmup_tokens": options.warmup if sum(budgets) < len(budgets) * size else 0,  # nothing to choose
                **protocol.glass_io_sections(size),
            },
            **fast,
            "build": {
                "source": manifest.get("build", {}).get("source"),
                "dense_export": str(dense),
                "requested_sparsity": options.sparsity,
                "prior": provenance,
                "neuron_order": "by the activation prior" if order is not None and not method.prior else
                                "by the method's prior" if order is not None else "the model's",
                "created_by": created_by(),
            },
        })
    log.info(f"wrote {output}")
    return Path(output)
