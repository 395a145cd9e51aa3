"""Dense export: a Hugging Face decoder with KV cache to one ONNX graph plus one external-weights file.

Front end choice (see README): torch.onnx.export(dynamo=True) at opset 23. It follows the model's own
transformers code, so any supported architecture exports the same way, and opset 23 keeps attention, RMSNorm
and rotary embeddings as single standard ops (Attention, RMSNormalization, RotaryEmbedding) that every EP runs.
By default each layer's attention and KV-cache update then become one ONNX Runtime GroupQueryAttention node
(``attention="ort"``, passes/group_query_attention.py): it takes SmolLM2's decode step from 1333 nodes to 531 and
makes it ~10 % faster; ``attention="onnx"`` keeps the standard ops only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import time
import warnings
from pathlib import Path

from glass_onnx.compiler.artifact import atomic_directory, cache_dir, created_by
from glass_onnx.runtime import protocol
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.manifest import load_manifest, write_manifest
from glass_onnx.runtime.protocol import (
    ATTENTION_MASK,
    CHAT_TEMPLATE,
    DENSE_GRAPH,
    DENSE_WEIGHTS,
    INPUT_IDS,
    LOGITS,
    MANIFEST,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
    PRESENT_VALUE,
    TOKENIZER_FILES,
    TOKENIZER_JSON,
)

log = logging.getLogger(__name__)

OPSET = 23
ATTENTION = ("ort", "onnx")
WEIGHTS = ("fp32", "int4")
REVISION = 11  # bumped when the exported graph or its manifest changes; part of the export cache key


def architecture(model) -> dict:
    """The facts a runtime needs about the model, read from its config."""
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    return {
        "architecture": type(model).__name__,
        "model_type": config.model_type,
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_attention_heads": heads,
        "num_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "vocab_size": config.vocab_size,
        "max_context": config.max_position_embeddings,
        "activation": getattr(config, "hidden_act", None) or getattr(config, "hidden_activation", None),
        "sliding_window": getattr(config, "sliding_window", None),
    }


def _decoder_with_cache(model):
    """Wrap the model so its KV cache is a flat list of tensors, as ONNX graph inputs and outputs must be."""
    import torch
    from transformers import DynamicCache

    class DecoderWithCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, past_key_values):
            # No config: every layer keeps its whole past (sliding-window layers are limited by the mask
            # instead), so all present tensors have the same length and the runtime treats them alike.
            cache = DynamicCache(ddp_cache_data=[(past_key_values[i], past_key_values[i + 1])
                                                 for i in range(0, len(past_key_values), 2)])
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             cache=cache, use_cache=True)
            presents = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
            return (out.logits, *presents)

    return DecoderWithCache().eval()


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's notes that every export prints and no user can act on: torchvision's missing ops (not
    needed for a text decoder) and a FutureWarning from torch's own pytree code."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_onnx(model, attention: str = "ort"):
    """``model`` as an ONNX IR model, dynamic in batch, sequence and past, through the dense passes; and the manifest
    facts about its inputs and outputs and its attention."""
    import torch

    arch = architecture(model)
    n, kvh, hd = arch["num_layers"], arch["num_kv_heads"], arch["head_dim"]
    # example sizes >= 2 in every dynamic dim: torch.export specialises 0 and 1
    batch, seq, past = 2, 3, 4
    input_ids = torch.randint(0, arch["vocab_size"], (batch, seq))
    attention_mask = torch.ones(batch, past + seq, dtype=torch.int64)
    position_ids = torch.arange(past, past + seq).unsqueeze(0).expand(batch, -1).contiguous()
    past_kv = [torch.randn(batch, kvh, past, hd) for _ in range(2 * n)]

    B, S, P, T = (torch.export.Dim.DYNAMIC,) * 4
    dynamic_shapes = {
        "input_ids": {0: B, 1: S},
        "attention_mask": {0: B, 1: T},
        "position_ids": {0: B, 1: S},
        "past_key_values": [{0: B, 2: P} for _ in range(2 * n)],
    }
    io_past = [t.format(layer=i) for i in range(n) for t in (PAST_KEY, PAST_VALUE)]
    io_present = [t.format(layer=i) for i in range(n) for t in (PRESENT_KEY, PRESENT_VALUE)]
    start = time.perf_counter()
    log.info(f"exporting {arch['architecture']} ({n} layers) to ONNX opset {OPSET} ...")
    from glass_onnx.compiler.softcapped_attention import exported_as_attention_op

    with torch.no_grad(), _quiet_exporter(), exported_as_attention_op(model):
        program = torch.onnx.export(
            _decoder_with_cache(model),
            (input_ids, attention_mask, position_ids, past_kv),
            dynamic_shapes=dynamic_shapes,
            input_names=[INPUT_IDS, ATTENTION_MASK, POSITION_IDS, *io_past],
            output_names=[LOGITS, *io_present],
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    from glass_onnx.passes import dense_pipeline
    from glass_onnx.passes.group_query_attention import ATTENTION as ATTENTION_FACT
    from glass_onnx.passes.group_query_attention import KV_BUFFERS

    model_ir = program.model
    dense_pipeline(attention, max_positions=arch["max_context"])(model_ir)
    # GroupQueryAttention with its own rotary reads no positions: then position_ids is not an input
    # (packed_attention.py)
    positions = any(v.name == POSITION_IDS for v in model_ir.graph.inputs)
    log.info(f"exported in {time.perf_counter() - start:.0f} s")
    # kv_buffers: a runtime may bind fixed-capacity cache buffers, extended in place (group_query_attention.py)
    return model_ir, {"io": protocol.io_section(positions),
                      "attention": model_ir.metadata_props.get(ATTENTION_FACT, "Attention"),
                      "kv_buffers": model_ir.metadata_props.get(KV_BUFFERS) == "true"}


def save_dense_graph(model_ir, directory: Path, weights: str) -> dict:
    """Write the dense graph (``int4``: its MatMuls quantised first, passes/quantize_weights.py) into ``directory``;
    returns the manifest's ``weights`` facts."""
    import onnx_ir as ir

    facts = {"weights": weights}
    if weights == "int4":
        from glass_onnx.passes.quantize_weights import Int4Settings, QuantizeWeightsPass

        settings = Int4Settings()
        QuantizeWeightsPass(settings)(model_ir)
        facts["quantization"] = settings.describe()
    ir.save(model_ir, directory / DENSE_GRAPH, external_data=DENSE_WEIGHTS)
    return facts


def save_tokenizer(tokenizer, directory: Path, instruct: bool, eos_ids: list[int]) -> dict:
    """Save tokenizer.json (and the chat template) for the runtime; return the manifest's tokenizer section."""
    tokenizer.save_pretrained(str(directory))
    for extra in ("special_tokens_map.json",):
        (directory / extra).unlink(missing_ok=True)
    template = getattr(tokenizer, "chat_template", None)
    if template and not (directory / CHAT_TEMPLATE).exists():
        (directory / CHAT_TEMPLATE).write_text(template)
    return {
        "file": TOKENIZER_JSON,
        "chat_template": CHAT_TEMPLATE if template else None,
        "instruct": bool(instruct and template),
        "bos_token": tokenizer.bos_token,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token": tokenizer.eos_token,
        "eos_token_ids": eos_ids,
        "pad_token_id": tokenizer.pad_token_id,
    }


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends generation: the tokenizer's EOS plus the generation config's (Gemma has two)."""
    ids = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return sorted(ids)


def check_forms(attention: str, weights: str) -> None:
    if attention not in ATTENTION:
        raise GlassError(f"unknown attention form '{attention}'; choose {' or '.join(ATTENTION)}")
    if weights not in WEIGHTS:
        raise GlassError(f"unknown weights '{weights}'; choose {' or '.join(WEIGHTS)}")


def export_dense(spec: str, output: str | Path, force: bool = False, attention: str = "ort",
                 weights: str = "fp32") -> Path:
    """`glass-onnx export`: load the model, export it, and write a complete dense artifact directory."""
    from glass_onnx.compiler.sources import load_model, resolve

    check_forms(attention, weights)
    source = resolve(spec)
    log.info(f"loading {source.spec} from {source.path} ...")
    model, tokenizer = load_model(source)
    model_ir, graph_facts = export_onnx(model, attention=attention)
    with atomic_directory(output, force=force) as tmp:
        weights_facts = save_dense_graph(model_ir, tmp, weights)
        instruct = source.recipe.instruct if source.recipe else bool(getattr(tokenizer, "chat_template", None))
        write_manifest(tmp, {
            "kind": "dense",
            "model": {"name": source.name, **architecture(model)},
            "tokenizer": save_tokenizer(tokenizer, tmp, instruct, eos_token_ids(model, tokenizer)),
            "sessions": {"prefill": DENSE_GRAPH, "decode": DENSE_GRAPH},
            **graph_facts,
            **weights_facts,
            "build": {"source": source.describe(), "created_by": created_by()},
        })
    return Path(output)


def quantized_copy(fp32: Path, output: Path) -> Path:
    """An int4 dense artifact made from an fp32 one, without exporting again (the same graph, quantised)."""
    import onnx_ir as ir

    manifest = load_manifest(fp32)
    log.info(f"quantising {fp32} to int4 ...")
    with atomic_directory(output, force=True) as tmp:
        weights_facts = save_dense_graph(ir.load(fp32 / DENSE_GRAPH), tmp, "int4")
        for name in TOKENIZER_FILES:
            if (fp32 / name).exists():
                shutil.copy2(fp32 / name, tmp / name)
        write_manifest(tmp, {
            **{key: manifest[key]
               for key in ("kind", "model", "tokenizer", "sessions", "attention", "kv_buffers", "io")},
            **weights_facts,
            "build": {**manifest.get("build", {}), "quantized_from": str(fp32), "created_by": created_by()},
        })
    return output


def _remove_older_revisions(exports: Path, key: str) -> None:
    """Drop this model's exports (any attention form, int4 copies too) from earlier export revisions: they are
    never read again, and a Gemma-3 export is over 1 GB."""
    for old in exports.glob(f"{key}-r*"):
        revision = old.name[len(key) + 2:].split("-")[0]
        if revision.isdigit() and int(revision) < REVISION:
            log.info(f"removing {old}, an export from an earlier glass-onnx")
            shutil.rmtree(old, ignore_errors=True)


def dense_artifact(spec: str, attention: str = "ort", weights: str = "fp32"):
    """(directory, source) of a dense artifact for ``spec``: the directory itself if it is one (source None), else
    an export of the model, cached by its weights (``attention``: the export's attention form; ``weights``: fp32, or
    int4 quantised from the fp32 export)."""
    from glass_onnx.compiler.sources import resolve

    check_forms(attention, weights)
    if Path(spec).is_dir() and (Path(spec) / MANIFEST).exists():
        directory, source = Path(spec), None
        manifest = load_manifest(directory)
        if manifest["kind"] != "dense":
            raise GlassError(f"'{spec}' is already compiled; compile from the model or its dense export")
        if attention == "onnx" and manifest["attention"] == "GroupQueryAttention":
            raise GlassError(f"'{spec}' is a GroupQueryAttention export (which takes multi-token steps on batch 1 "
                             "only); pass the model itself, or a dense export made with --attention onnx")
        if manifest["weights"] == weights:
            return directory, None
        if manifest["weights"] == "int4":
            raise GlassError(f"'{spec}' has int4 weights and this needs the fp32 export; pass the model itself or "
                             "its fp32 export")
        key = hashlib.sha256(f"{directory.resolve()}:{(directory / MANIFEST).stat().st_mtime}".encode()).hexdigest()
        int4 = cache_dir() / "exports" / f"{directory.name[:40]}-{key[:12]}-int4"
    else:
        source = resolve(spec)
        form = "-onnx-attention" if attention == "onnx" else ""
        directory = cache_dir() / "exports" / f"{source.cache_key()}-r{REVISION}{form}"
        if not (directory / MANIFEST).exists():
            export_dense(spec, directory, force=True, attention=attention)
            _remove_older_revisions(directory.parent, source.cache_key())
        else:
            log.info(f"using the cached dense export {directory}")
        if weights == "fp32":
            return directory, source
        int4 = directory.with_name(f"{directory.name}-int4")
    if not (int4 / MANIFEST).exists():
        quantized_copy(directory, int4)
    else:
        log.info(f"using the cached int4 export {int4}")
    return int4, source
