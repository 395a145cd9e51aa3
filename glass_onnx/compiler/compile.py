"""`glass-onnx compile`: dense export -> global prior -> graph passes -> prefill.onnx + decode.onnx sharing weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from glass_onnx.compiler.artifact import atomic_directory, cache_dir, versions
from glass_onnx.compiler.settings import get_method, check_settings
from glass_onnx.compiler.priors import (PriorSettings, compute_prior, load_prior_file, prior_path, random_prior, ranks,
                               samples_path, save_prior)
from glass_onnx.runtime import protocol
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.manifest import load_manifest, write_manifest
from glass_onnx.runtime.protocol import (COMPACT_GRAPH, DECODE_GRAPH, FAST_DECODER_GRAPH, FULL_GATE_UP_T,
                                         GENAI_CONFIG, GENAI_DECODE_GRAPH, GENAI_PREFILL_GRAPH, PREFILL_GRAPH,
                                         PRIOR_FILE, SELECT_GRAPH, TOKENIZER_FILES, WEIGHTS, panel_width)


@dataclasses.dataclass
class CompileOptions:
    method: str = "a-glass"
    sparsity: float = 0.5
    lam: float | None = None
    fusion: str = "rank"
    prior_samples: int = 64
    prior_tokens: int = 256
    prior_seed: int = 0
    prior_text: str | None = None
    prior_file: str | None = None
    genai: bool = False  # also write decode_genai.onnx + genai_config.json for onnxruntime-genai
    attention: str = "ort"  # the export's attention form when compiling from a model (export.py)


class _ModelLoader:
    """Loads the torch model at most once, and only if an export or a prior needs it."""

    def __init__(self, source, log):
        self.source, self.log, self._loaded = source, log, None

    def get(self):
        if self._loaded is None:
            from glass_onnx.compiler.sources import load_model

            self.log(f"loading {self.source.spec} in torch ...")
            self._loaded = load_model(self.source)
        return self._loaded


def _source_key(source) -> str:
    """A cache key for a model source: where its weights are and when they changed (not how it was named)."""
    path = Path(source.path)
    stamp = [path.stat().st_size, int(path.stat().st_mtime)] if path.is_file() else (
        [int((path / "config.json").stat().st_mtime)] if path.is_dir() else [])
    key = json.dumps([source.kind, str(source.path), stamp, versions().get("glass-onnx"), versions().get("transformers")])
    name = source.recipe.name if source.recipe else Path(source.path).stem
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def dense_artifact(spec: str, log=print, attention: str = "ort") -> tuple[Path, object | None]:
    """A dense artifact for ``spec``: the directory itself if it is one, else a cached export (``attention``: the
    export's attention form, see export.py)."""
    from glass_onnx.compiler.export import export_dense
    from glass_onnx.compiler.sources import resolve

    if Path(spec).is_dir() and (Path(spec) / "manifest.json").exists():
        manifest = load_manifest(spec)
        if manifest["kind"] != "dense":
            raise GlassError(f"'{spec}' is already compiled; compile from the model or its dense export")
        if attention == "onnx" and manifest.get("attention") == "GroupQueryAttention":
            raise GlassError(f"'{spec}' is a GroupQueryAttention export (which takes multi-token steps on batch 1 "
                             "only); pass the model itself, or a dense export made with --attention onnx")
        return Path(spec), None
    source = resolve(spec)
    from glass_onnx.compiler.export import REVISION

    form = "-onnx-attention" if attention == "onnx" else ""
    directory = cache_dir() / "exports" / f"{_source_key(source)}-r{REVISION}{form}"
    if not (directory / "manifest.json").exists():
        export_dense(spec, directory, force=True, attention=attention, log=log)
    else:
        log(f"using the cached dense export {directory}")
    return directory, source


def _recorded_source(manifest: dict):
    """The model source a dense export was made from, as its manifest recorded it."""
    from glass_onnx.compiler.sources import ModelSource, resolve

    recorded = manifest["model"]["source"]
    if not Path(recorded["path"]).exists() and recorded["kind"] != "hub":
        raise GlassError(f"the weights this export was made from ('{recorded['path']}') are gone; the global prior "
                         "needs them: compile from the model itself, or pass --prior-file")
    if recorded.get("recipe"):
        return resolve(recorded["recipe"])
    return ModelSource(recorded["spec"], recorded["kind"], recorded["path"])


def global_prior(dense: Path, manifest: dict, source, method, options: CompileOptions, log) -> tuple[np.ndarray, dict]:
    """The prior values [layers, I] for the method, computed or read from the cache, and their provenance."""
    layers, size = manifest["model"]["num_layers"], manifest["model"]["intermediate_size"]
    if method.prior is None:
        return np.zeros((layers, size)), {"kind": "none"}
    if method.prior == "random":
        return random_prior(layers, size, options.prior_seed), {"kind": "random", "seed": options.prior_seed}
    if options.prior_file:
        values, meta = load_prior_file(options.prior_file, layers, size)
        if meta["settings"].get("kind") != method.prior:
            raise GlassError(f"'{options.prior_file}' is a {meta['settings'].get('kind')} prior, method "
                             f"{method.name} needs a {method.prior} prior")
        return values, {"kind": method.prior, "file": str(options.prior_file), **meta}
    settings = PriorSettings(method.prior, options.prior_samples, options.prior_tokens, 1.0, options.prior_seed,
                             options.prior_text)
    if source is None:
        source = _recorded_source(manifest)
    path = prior_path(_source_key(source), settings)
    if path.exists():
        log(f"using the cached {method.prior} prior {path}")
        values = np.load(path)["values"]
    else:
        from glass_onnx.compiler.sources import load_model

        log(f"computing the {method.prior} prior (N={settings.samples}, T={settings.tokens}) ...")
        start = time.perf_counter()
        model, tokenizer = load_model(source)
        instruct = bool(manifest["tokenizer"].get("instruct"))
        values = compute_prior(model, tokenizer, settings, instruct, samples_path(_source_key(source), settings))
        save_prior(path, values, manifest["model"]["id"], settings)
        log(f"prior computed in {time.perf_counter() - start:.0f} s, cached at {path}")
    provenance = {"kind": method.prior, "source": "text file" if settings.text else "model samples",
                  **dataclasses.asdict(settings), "cache": str(path)}
    return values, provenance


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

    from glass_onnx.passes import (build_compact_model, build_select_model, decode_pipeline, fast_decoder_pipeline,
                                   prefill_pipeline)
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


def compile_model(spec: str, output: str | Path, options: CompileOptions, force: bool = False, log=print) -> Path:
    import onnx

    from glass_onnx.compiler.shared_weights import save_sharing_weights

    method = get_method(options.method)
    if options.fusion not in ("rank", "plackett-luce"):
        raise GlassError(f"unknown fusion '{options.fusion}'; choose rank or plackett-luce")
    if Path(output).exists() and not force:
        raise GlassError(f"'{output}' already exists; choose another -o or pass --force to replace it")
    dense, source = dense_artifact(spec, log, attention=options.attention)
    manifest = load_manifest(dense)
    model_info = manifest["model"]
    k, lam = check_settings(method, options.sparsity, options.lam, model_info["intermediate_size"])
    if lam is None:
        from glass_onnx.models import CATALOG

        recipe = CATALOG.get(model_info["id"])
        lam = recipe.default_lam if recipe else 0.5
    prior_values, provenance = global_prior(dense, manifest, source, method, options, log)
    prior_rank = ranks(prior_values) if method.prior else np.zeros(prior_values.shape, np.float32)

    log(f"compiling {method.name}: keep {k}/{model_info['intermediate_size']} neurons per layer, lam={lam}, "
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
            **{key: manifest[key] for key in ("model", "tokenizer", "io", "attention", "kv_buffers") if key in manifest},
            "kind": "glass",
            "sessions": {"prefill": PREFILL_GRAPH, "decode": DECODE_GRAPH},
            "glass": {
                "method": method.name,
                "sparsity": 1.0 - k / model_info["intermediate_size"],
                "requested_sparsity": options.sparsity,
                "k": k,
                "intermediate_size": model_info["intermediate_size"],
                "lam": lam,
                "fusion": options.fusion,
                "prior": provenance,
                **protocol.glass_io_sections(model_info["intermediate_size"], k),
            },
            "fast": fast,
            "dense_export": str(dense),
            "created_by": {**versions(), "command": " ".join(shlex.quote(a) for a in sys.argv)},
        })
    log(f"wrote {output}")
    return Path(output)
