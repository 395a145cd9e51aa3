"""The Node.js client (runtime/node/generate.mjs) generates the same greedy ids as `glass-onnx generate`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from glass_onnx.cli import main as cli_main
from glass_onnx.runtime.protocol import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "runtime" / "node"
CLIENT = NODE_DIR / "generate.mjs"
NODE = shutil.which("node")
INSTALLED = all((NODE_DIR / "node_modules" / p / "package.json").exists()
                for p in ("onnxruntime-node", "@huggingface/tokenizers", "@huggingface/jinja"))

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the Node.js client needs Node >= 18)"),
    pytest.mark.skipif(not INSTALLED, reason="runtime/node/node_modules is not installed: run "
                       "'(cd runtime/node && npm ci)' or scripts/setup.sh"),
]

PROMPT = "The lighthouse keeper climbed the stairs"


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, str(CLIENT), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def run_python(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert cli_main(["generate", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def artifacts(tiny_dense, tiny_compiled):
    return {"dense": tiny_dense, "a-glass": tiny_compiled(method="a-glass", sparsity=0.5)}


@pytest.mark.parametrize("kind,chat", [("dense", []), ("a-glass", []), ("dense", ["--no-chat"]),
                                       ("a-glass", ["--no-chat"])])
def test_node_matches_python_cli(artifacts, capsys, kind, chat):
    directory = artifacts[kind]
    args = [directory, PROMPT, "--max-new-tokens", "12", *chat]
    proc = run_node(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one JSON object
    node = json.loads(lines[0])
    python = run_python(capsys, *args)

    assert list(node) == list(python)  # same keys, same order
    for key in ("prompt_ids", "tokens", "text", "prompt_tokens", "stop_reason", "method"):
        assert node[key] == python[key], key
    assert node["tokens"], "nothing generated"
    if kind == "a-glass":
        assert ((node["kept_neurons"], node["intermediate_size"])
                == (python["kept_neurons"], python["intermediate_size"]))
    if not chat:  # the tiny model is an instruct model with a chat template: the default path renders it
        assert (node["prompt_ids"][0]
                == json.loads((directory / "manifest.json").read_text())["tokenizer"]["bos_token_id"])


def test_node_answers_a_conversation_as_python_does(artifacts, capsys, tmp_path):
    from test_conversations import CONVERSATION

    (tmp_path / "chat.json").write_text(json.dumps({"messages": CONVERSATION}))
    args = [artifacts["a-glass"], "--messages", tmp_path / "chat.json", "--max-new-tokens", "8"]
    proc = run_node(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    node, python = json.loads(proc.stdout), run_python(capsys, *args)
    assert (node["prompt_ids"], node["tokens"]) == (python["prompt_ids"], python["tokens"])
    (tmp_path / "ends.json").write_text(json.dumps(CONVERSATION[:3]))
    proc = run_node(artifacts["a-glass"], "--messages", tmp_path / "ends.json")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: the conversation ends with the assistant's turn; end it with the user's turn, which the model then "
        "answers")


def test_node_runs_the_warmup_as_python_does(tiny_compiled, capsys):
    artifact = tiny_compiled(method="a-glass", sparsity=0.75)
    args = [artifact, "hello world", "--no-chat", "--max-new-tokens", "12"]
    cold, warm = (run_python(capsys, *args, "--warmup", w)["tokens"] for w in ("0", "4"))
    assert cold != warm  # the warm-up changes this prompt's tokens, so the comparison below can fail
    for w, python in (("0", cold), ("4", warm)):
        proc = run_node(*args, "--warmup", w, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["tokens"] == python


def test_node_text_mode_prints_text_and_figures(artifacts):
    proc = run_node(artifacts["a-glass"], PROMPT, "--max-new-tokens", "4", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    figures = proc.stdout.rstrip("\n").splitlines()[-1]
    assert figures.startswith("[") and "4 new tokens" in figures and "a-glass keeps" in figures


def test_node_errors_are_one_line(artifacts, tmp_path):
    dense = artifacts["dense"]
    bad = tmp_path / "next-version"
    bad.mkdir()
    manifest = json.loads((dense / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    max_context = manifest["model"]["max_context"]
    cases = {
        "no manifest": ([tmp_path, PROMPT], "has no manifest.json"),
        "format": ([bad, PROMPT], f"artifact format {FORMAT_VERSION + 1}"),
        "empty prompt": ([dense, "   "], "the prompt is empty"),
        "context": ([dense, PROMPT, "--max-new-tokens", max_context], "exceeds the model's context"),
    }
    for name, (args, message) in cases.items():
        proc = run_node(*args)
        assert proc.returncode == 2, name
        assert (proc.stderr.startswith("error: ") and message in proc.stderr
                and proc.stderr.count("\n") == 1), proc.stderr


@pytest.mark.parametrize("path,value", [(("glass", "k"), None), (("model", "num_layers"), "30"), (("kind",), "sparse")])
def test_node_refuses_a_broken_manifest_with_pythons_line(artifacts, capsys, tmp_path, path, value):
    """Both clients check runtime/manifest.schema.json, each with its own checker, and say the same thing."""
    art = shutil.copytree(artifacts["a-glass"], tmp_path / "a")
    manifest = json.loads((art / "manifest.json").read_text())
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    (art / "manifest.json").write_text(json.dumps(manifest))
    proc = run_node(art, PROMPT)
    capsys.readouterr()
    assert cli_main(["generate", str(art), PROMPT]) == 2
    python = capsys.readouterr().err
    assert proc.returncode == 2 and proc.stderr == python and "is not a complete glass-onnx manifest" in python


def test_node_runs_an_int4_artifact_like_python(tiny_compiled, capsys):
    """The Node client drives the reference layout: int4 artifacts too (MatMulNBits, GatherBlockQuantized and the
    ai.glass int4 functions in onnxruntime-node)."""
    artifact = tiny_compiled(method="a-glass", sparsity=0.5, weights="int4")
    args = [artifact, PROMPT, "--max-new-tokens", "8", "--no-chat"]
    proc = run_node(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    node = json.loads(proc.stdout)
    capsys.readouterr()
    assert cli_main(["generate", *map(str, args), "--layout", "reference", "--json"]) == 0
    python = json.loads(capsys.readouterr().out)
    assert node["tokens"] == python["tokens"] and node["tokens"]
