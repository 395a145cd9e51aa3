"""Every bad input gets one clear line on stderr, exit status 2, and leaves no half-written artifact."""

import json
import shutil

import numpy as np
import pytest

from glass_onnx.cli import main


def fails(capsys, *argv, expect):
    rc = main(list(map(str, argv)))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) >= 1 and err[-1].startswith("error: ") and expect in err[-1], err
    return err[-1]


def no_partial(directory):
    return not any(p.name.startswith(".") and ".partial-" in p.name for p in directory.iterdir())


def test_unknown_model(capsys, tmp_path):
    fails(capsys, "export", "no-such-model", "-o", tmp_path / "o", expect="unknown model 'no-such-model'")
    assert not (tmp_path / "o").exists()


def test_path_that_is_not_a_model(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    fails(capsys, "export", tmp_path / "empty", "-o", tmp_path / "o", expect="neither a Hugging Face model directory")
    (tmp_path / "weights.bin").write_bytes(b"x")
    fails(capsys, "export", tmp_path / "weights.bin", "-o", tmp_path / "o", expect="neither")


def test_unsupported_architecture(capsys, tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    line = fails(capsys, "export", tmp_path / "gpt2", "-o", tmp_path / "o", expect="unsupported architecture 'gpt2'")
    assert "LlamaForCausalLM" in line and "Gemma3ForCausalLM" in line


def test_an_error_raised_inside_a_pass_stays_one_line(capsys, tiny_dense, tmp_path, monkeypatch):
    """onnx_ir's PassManager wraps what a pass raises in PassError; the CLI still prints the pass's own line."""
    from glass_onnx.passes.neuron_stats import AccumulateNeuronStatsPass
    from glass_onnx.runtime import GlassError

    def refuse(self, model):
        raise GlassError("no gated FFN in this graph; GLASS supports SwiGLU and GeGLU decoders")

    monkeypatch.setattr(AccumulateNeuronStatsPass, "call", refuse)
    fails(capsys, "compile", tiny_dense, "--method", "griffin", "--sparsity", "0.5", "-o", tmp_path / "o",
          expect="no gated FFN in this graph")
    assert not (tmp_path / "o").exists() and no_partial(tmp_path)


def test_hub_id_not_cached(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fails(capsys, "export", "nobody/no-such-model", "-o", tmp_path / "o", expect="not in the local Hugging Face cache")


def test_existing_output_needs_force(capsys, tiny_dense, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    fails(capsys, "compile", tiny_dense, "--method", "griffin", "-o", out, expect="already exists")
    assert (out / "keep.txt").read_text() == "mine"


def test_empty_prompt_and_too_long_generation(capsys, tiny_dense):
    fails(capsys, "generate", tiny_dense, "   ", expect="prompt is empty")
    fails(capsys, "generate", tiny_dense, "The sea", "--max-new-tokens", 1000,
          expect="exceeds the model's context of 256")


def test_decoder_refuses_steps_past_the_context(tiny_dense):
    """Calling the runtime directly: GroupQueryAttention's rotary tables end at the model's context."""
    from glass_onnx.runtime.decoder import open_decoder
    from glass_onnx.runtime.errors import GlassError

    decoder = open_decoder(tiny_dense)
    state = decoder.new_state()
    decoder.prefill(state, np.ones((1, 256), np.int64))
    with pytest.raises(GlassError, match="past the model's context of 256"):
        decoder.decode(state, np.ones((1, 1), np.int64))


def copy_artifact(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights(capsys, tiny_dense, tmp_path):
    art = copy_artifact(tiny_dense, tmp_path / "a")
    data = art / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    fails(capsys, "generate", art, "The sea", expect="truncated or corrupted")


def test_corrupted_graph(capsys, tiny_dense, tmp_path):
    art = copy_artifact(tiny_dense, tmp_path / "a")
    graph = art / "model.onnx"
    raw = bytearray(graph.read_bytes())
    raw[100:400] = b"\xff" * 300
    graph.write_bytes(bytes(raw))
    fails(capsys, "generate", art, "The sea", expect="not the file this manifest was written with")
    # even with a manifest that agrees, ORT's refusal becomes one line
    manifest = json.loads((art / "manifest.json").read_text())
    del manifest["files"]["model.onnx"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    fails(capsys, "generate", art, "The sea", expect="could not load")


def test_incompatible_artifact_version(capsys, tiny_dense, tmp_path):
    art = copy_artifact(tiny_dense, tmp_path / "a")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["format_version"] = 99
    (art / "manifest.json").write_text(json.dumps(manifest))
    fails(capsys, "generate", art, "The sea", expect="artifact format 99")
    fails(capsys, "generate", tmp_path, "The sea", expect="not a glass-onnx artifact")


@pytest.mark.parametrize("args,expect", [
    (["--sparsity", "1.0"], "--sparsity must be in [0, 1)"),
    (["--sparsity", "-0.1"], "--sparsity must be in [0, 1)"),
    (["--sparsity", "0.999"], "keeps no neuron"),
    (["--lam", "1.5"], "--lam must be in [0, 1]"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--fusion", "borda"], "unknown fusion 'borda'"),
    (["--method", "griffin", "--lam", "0.3"], "fixes lam"),
])
def test_bad_compile_settings(capsys, tiny_dense, tmp_path, args, expect):
    fails(capsys, "compile", tiny_dense, "-o", tmp_path / "o", *args, expect=expect)
    assert not (tmp_path / "o").exists() and no_partial(tmp_path)


def test_prior_file_for_another_model(capsys, tiny_dense, tmp_path):
    np.savez(tmp_path / "prior.npz", values=np.ones((30, 1536)), model_id="smollm2-135m",
             settings=json.dumps({"kind": "activation"}))
    fails(capsys, "compile", tiny_dense, "-o", tmp_path / "o", "--prior-file", tmp_path / "prior.npz",
          expect="this model has 3 x 96")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    fails(capsys, "compile", tiny_dense, "-o", tmp_path / "o", "--prior-file", tmp_path / "junk.npz",
          expect="not a glass-onnx prior file")
    assert not (tmp_path / "o").exists() and no_partial(tmp_path)


def test_graph_without_gated_ffn():
    import onnx_ir as ir

    from glass_onnx.passes import find_gated_ffns
    from glass_onnx.runtime import GlassError

    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([1, 4]))
    w1 = ir.Value(name="w1", const_value=ir.tensor(np.ones((4, 8), np.float32), name="w1"))
    w2 = ir.Value(name="w2", const_value=ir.tensor(np.ones((8, 4), np.float32), name="w2"))
    h = ir.node("MatMul", [x, w1])
    r = ir.node("Relu", [h.outputs[0]])
    y = ir.node("MatMul", [r.outputs[0], w2])
    graph = ir.Graph([x], [y.outputs[0]], nodes=[h, r, y], initializers=[w1, w2], opset_imports={"": 23})
    with pytest.raises(GlassError, match="no gated FFN"):
        find_gated_ffns(graph)
    with pytest.raises(GlassError, match="found 0 gated FFNs .* 2-layer"):
        find_gated_ffns(graph, num_layers=2)


def test_mismatched_sessions(capsys, tiny_compiled, tmp_path):
    art = copy_artifact(tiny_compiled(method="griffin", sparsity=0.5), tmp_path / "a")
    other = tiny_compiled(method="random", sparsity=0.5)
    shutil.copy2(other / "prefill.onnx", art / "prefill.onnx")
    fails(capsys, "generate", art, "The sea", expect="copied from another artifact")
    art2 = copy_artifact(tiny_compiled(method="griffin", sparsity=0.5), tmp_path / "b")
    manifest = json.loads((art2 / "manifest.json").read_text())
    manifest["sessions"]["decode"] = "prefill.onnx"
    manifest["fast"]["select"] = "compact.onnx"
    (art2 / "manifest.json").write_text(json.dumps(manifest))
    fails(capsys, "generate", art2, "The sea", "--layout", "reference", expect="sessions are mismatched")
    fails(capsys, "generate", art2, "The sea", expect="sessions are mismatched")


@pytest.mark.parametrize("args,expect", [
    (["--prefill-chunk", "-1"], "--prefill-chunk must be at least 1 (got -1)"),
    (["--prefill-chunk", "0"], "--prefill-chunk must be at least 1 (got 0)"),
    (["--threads", "0"], "--threads must be at least 1 (got 0)"),
])
def test_bad_generate_settings(capsys, tiny_dense, args, expect):
    fails(capsys, "generate", tiny_dense, "The sea", *args, expect=expect)


def test_bad_bench_and_eval_settings(capsys, tiny_dense, tmp_path):
    """Refused before any compile or export starts."""
    fails(capsys, "bench", tiny_dense, "--threads", "2,0", expect="--threads takes whole numbers of at least 1")
    fails(capsys, "bench", tiny_dense, "--repeats", "0", expect="--repeats takes whole numbers of at least 1")
    fails(capsys, "eval", tiny_dense, "-o", tmp_path / "e", "--threads", "0", expect="--threads must be at least 1")
    fails(capsys, "eval", tiny_dense, "-o", tmp_path / "e", "--fusions", "borda", expect="unknown fusion 'borda'")
    fails(capsys, "eval", tiny_dense, "-o", tmp_path / "e", "--methods", "griffin,magic",
          expect="unknown method 'magic'")
    assert not (tmp_path / "e").exists() and no_partial(tmp_path)


@pytest.mark.parametrize("content,expect", [
    (b"junk that is not a model", "not a GGUF"),
    # the magic, version 3, 0 tensors, 5 metadata pairs, then the file ends
    (b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + (5).to_bytes(8, "little"), "truncated"),
])
def test_damaged_gguf(capsys, tmp_path, content, expect):
    (tmp_path / "model.gguf").write_bytes(content)
    line = fails(capsys, "export", tmp_path / "model.gguf", "-o", tmp_path / "o", expect="could not read")
    assert expect in line and "download or assemble it again" in line
    assert not (tmp_path / "o").exists() and no_partial(tmp_path)


def test_selection_refuses_an_unknown_fusion():
    from glass_onnx.passes import glass_math
    from glass_onnx.runtime import GlassError

    stats, prior = np.ones((2, 8), np.float32), np.zeros((2, 8), np.float32)
    assert glass_math.select(stats, prior, 0.5, 3, "plackett-luce").shape == (2, 3)
    with pytest.raises(GlassError, match="unknown fusion 'borda'"):
        glass_math.select(stats, prior, 0.5, 3, "borda")
