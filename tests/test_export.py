"""Dense export on tiny random models: ORT matches torch, the runtime matches transformers' generate."""

import numpy as np
import pytest
import torch

from glass_onnx.runtime import Decoder, Generator, GlassError


def torch_model(directory):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def check_against_torch(artifact, model, steps=8, prompt=10, tol=1e-4):
    decoder = Decoder(artifact)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 400, (1, prompt))
    state = decoder.new_state()
    logits = decoder.prefill(state, ids)
    with torch.no_grad():
        out = model(torch.tensor(ids), use_cache=True)
    assert np.abs(logits - out.logits.numpy()).max() < tol
    for _ in range(steps):
        token = np.array([[int(np.argmax(logits[0, -1]))]])
        logits = decoder.decode(state, token)
        with torch.no_grad():
            out = model(torch.tensor(token), cache=out.cache, use_cache=True)
        assert np.abs(logits - out.logits.numpy()).max() < tol
    # batch of two, the first left-padded
    mask = np.ones((2, prompt), np.int64)
    mask[0, :3] = 0
    ids2 = rng.integers(3, 400, (2, prompt))
    state = decoder.new_state(batch=2)
    logits = decoder.prefill(state, ids2, mask)
    positions = (np.cumsum(mask, 1) - 1).clip(0)
    with torch.no_grad():
        ref = model(torch.tensor(ids2), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)).logits
    real = mask.astype(bool)
    assert np.abs(logits[real] - ref.numpy()[real]).max() < tol
    # and decode on: the padded row's positions keep counting real tokens only (torch) or cache slots (the
    # packed GroupQueryAttention), which rotary attention cannot tell apart
    with torch.no_grad():
        out = model(torch.tensor(ids2), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions),
                    use_cache=True)
    for _ in range(3):
        token = np.argmax(logits[:, -1], axis=-1)[:, None]
        logits = decoder.decode(state, token)
        mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
        with torch.no_grad():
            out = model(torch.tensor(token), attention_mask=torch.tensor(mask), cache=out.cache, use_cache=True,
                        position_ids=torch.tensor(mask.sum(1, keepdims=True) - 1))
        assert np.abs(logits - out.logits.numpy()).max() < tol


def test_llama_export_matches_torch(tiny_dense, tiny_model):
    check_against_torch(tiny_dense, tiny_model)


def _attention_biases(directory):
    import onnx

    graph = onnx.load(directory / "model.onnx", load_external_data=False).graph
    return [n.input[10] for n in graph.node if n.op_type == "GroupQueryAttention"]


def _op_counts(directory):
    import collections

    import onnx

    graph = onnx.load(directory / "model.onnx", load_external_data=False).graph
    return collections.Counter(n.op_type for n in graph.node)


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "mistral", "gemma3_text"])
def test_other_architectures_export_and_match(model_type, tmp_path):
    from tiny_models import save_tiny_model

    from glass_onnx.compiler.export import export_dense

    src = save_tiny_model(tmp_path / model_type, model_type)
    out = export_dense(str(src), tmp_path / "onnx")
    # 10 + 8 tokens run past the tiny Gemma's sliding window of 4
    check_against_torch(out, torch_model(src))
    layers = torch_model(src).config.num_hidden_layers
    assert _op_counts(out)["GroupQueryAttention"] == layers and _op_counts(out)["Attention"] == 0
    # Qwen2's biased projections pack too; Gemma-3 and Qwen3 rotate after a per-head norm and keep their
    # RotaryEmbedding
    assert _op_counts(out)["RotaryEmbedding"] == (2 * layers if model_type in ("gemma3_text", "qwen3") else 0)
    # causal-and-padding masks become the padding-only bias; the tiny Gemma's sliding-window layers keep theirs
    kinds = torch_model(src).config.layer_types if model_type == "gemma3_text" else ["full_attention"] * layers
    assert [b == "glass.padding_bias" for b in _attention_biases(out)] == [k == "full_attention" for k in kinds]
    # every residual Add that a norm reads (two per layer: before the FFN and before the next layer or the head)
    assert _op_counts(out)["SkipSimplifiedLayerNormalization"] == 2 * layers


@pytest.mark.parametrize("model_type", ["phi3", "gemma2", "stablelm"])
def test_fused_projections_soft_caps_and_layer_norms_export_and_match(model_type, tmp_path):
    """Phi-3 (fused qkv and gate_up projections, a sliding window), Gemma-2 (soft-capped attention scores and logits,
    glass_onnx/compiler/softcapped_attention.py) and StableLM (LayerNorm with biases, half of each head rotated):
    the export matches torch, in both attention forms; every FFN comes out as two projections, every residual Add a
    norm reads is fused into it, the rotary (partial too) runs inside GroupQueryAttention."""
    import onnx_ir as ir
    from tiny_models import save_tiny_model

    from glass_onnx.compiler.export import export_dense
    from glass_onnx.passes import find_gated_ffns

    src = save_tiny_model(tmp_path / model_type, model_type)
    out = export_dense(str(src), tmp_path / "onnx")
    check_against_torch(out, torch_model(src))
    layers = torch_model(src).config.num_hidden_layers
    counts = _op_counts(out)
    assert counts["Split"] == 0
    graph = ir.load(out / "model.onnx").graph
    assert len(find_gated_ffns(graph, layers)) == layers
    # Gemma-2's soft-capped scores too: the cap moves into GroupQueryAttention, the logits' cap stays a Tanh
    assert counts["GroupQueryAttention"] == layers and counts["Attention"] == 0
    assert counts["Tanh"] == (1 if model_type == "gemma2" else 0)
    # every residual Add a norm reads (two per layer), LayerNorm's (StableLM) too
    assert counts["SkipSimplifiedLayerNormalization"] + counts["SkipLayerNormalization"] == 2 * layers
    # one q/k/v MatMul (Phi-3's fused one too), the rotary inside GroupQueryAttention (StableLM's partial one too),
    # no head split or merge left around it (a tied head's weight is still transposed)
    assert counts["RotaryEmbedding"] == 0 and counts["MatMul"] == 5 * layers + 1
    assert not [n for n in graph if n.op_type == "Transpose" and n.inputs[0].const_value is None]
    check_against_torch(export_dense(str(src), tmp_path / "standard", attention="onnx"), torch_model(src), steps=3)


def test_attention_forms_both_match_torch(tiny_dense, tiny_model, tiny_dir, tmp_path):
    """The default graph runs one GroupQueryAttention per layer; attention="onnx" keeps the standard ops."""
    from glass_onnx.compiler.export import export_dense
    from glass_onnx.runtime import load_manifest

    layers = tiny_model.config.num_hidden_layers
    fused = _op_counts(tiny_dense)
    assert fused["GroupQueryAttention"] == layers and fused["Attention"] == 0
    assert fused["SkipSimplifiedLayerNormalization"] == 2 * layers and fused["RMSNormalization"] == 1
    # one QKV MatMul per layer (+ o, gate, up, down, and the head), the rotary inside GroupQueryAttention
    assert fused["MatMul"] == 5 * layers + 1 and fused["RotaryEmbedding"] == 0 and fused["Cos"] == 0
    assert load_manifest(tiny_dense)["io"]["position_ids"] is None
    standard = export_dense(str(tiny_dir), tmp_path / "onnx", attention="onnx")
    assert _op_counts(standard)["Attention"] == layers and _op_counts(standard)["GroupQueryAttention"] == 0
    assert _op_counts(standard)["SkipSimplifiedLayerNormalization"] == 0
    assert load_manifest(standard)["io"]["position_ids"] == "position_ids"
    assert sum(fused.values()) < sum(_op_counts(standard).values()) - 10 * layers
    check_against_torch(standard, tiny_model)


def test_greedy_generation_equals_transformers_generate(tiny_dense, tiny_model):
    generator = Generator(tiny_dense)
    prompt = generator.encode("The lighthouse keeper climbed", chat=False)
    result = generator.generate(prompt, max_new_tokens=24, ignore_eos=True)
    with torch.no_grad():
        ref = tiny_model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                                  eos_token_id=None)
    assert len(result.tokens) == 24 and result.tokens == ref[0, len(prompt):].tolist()


def test_artifact_layout_and_manifest(tiny_dense):
    from glass_onnx.runtime import load_manifest

    manifest = load_manifest(tiny_dense)
    names = {p.name for p in tiny_dense.iterdir()}
    assert {"model.onnx", "model.onnx.data", "tokenizer.json", "manifest.json"} <= names
    assert manifest["kind"] == "dense" and manifest["io"]["past_key"] == "past_key_values.{layer}.key"
    assert {"torch", "transformers", "onnx", "onnxruntime", "command"} <= set(manifest["build"]["created_by"])
    import onnx

    graph = onnx.load(tiny_dense / "model.onnx", load_external_data=False).graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


@pytest.mark.parametrize("batch", [1, 2])
def test_kv_buffers_extended_in_place_give_the_same_logits(tiny_dense, batch):
    """A state with capacity binds one fixed cache buffer per layer as both past and present."""
    from glass_onnx.runtime import load_manifest
    from glass_onnx.runtime.decoder import open_decoder

    assert load_manifest(tiny_dense)["kv_buffers"]
    decoder = open_decoder(tiny_dense)
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 400, (batch, 9))
    mask = np.ones_like(ids)
    mask[0, :2] = 0  # left padding in the first row
    growing, buffered = decoder.new_state(batch), decoder.new_state(batch, capacity=20)
    assert buffered.capacity == 20 and buffered.past[0].shape()[2] == 20
    chunks = [5] if batch == 1 else []  # GroupQueryAttention takes multi-token steps after the first on batch 1 only
    for part, part_mask in zip(np.array_split(ids, chunks, axis=1), np.array_split(mask, chunks, axis=1)):
        a, b = decoder.prefill(growing, part, part_mask), decoder.prefill(buffered, part, part_mask)
        assert np.abs(a - b)[part_mask.astype(bool)].max() < 1e-5
    for _ in range(6):
        token = a[:, -1:].argmax(-1)
        a, b = decoder.decode(growing, token), decoder.decode(buffered, token)
        assert np.abs(a - b).max() < 1e-5
    if batch == 1:
        with pytest.raises(GlassError, match="room for 20 tokens"):
            decoder.decode(buffered, np.ones((1, 6), np.int64))


def test_a_new_export_revision_removes_the_older_ones_from_the_cache(tiny_dir, tmp_path, monkeypatch):
    from glass_onnx.compiler.export import REVISION, dense_artifact
    from glass_onnx.compiler.sources import resolve

    monkeypatch.setenv("GLASS_ONNX_CACHE", str(tmp_path))
    key = resolve(str(tiny_dir)).cache_key()
    stale = [f"{key}-r{REVISION - 1}", f"{key}-r{REVISION - 1}-int4", f"{key}-r{REVISION - 1}-onnx-attention"]
    kept = [f"{key}-r{REVISION}-onnx-attention", f"other-{key}-r{REVISION - 1}"]
    for name in stale + kept:
        (tmp_path / "exports" / name).mkdir(parents=True)
    directory, _ = dense_artifact(str(tiny_dir))
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == sorted(kept + [directory.name])
