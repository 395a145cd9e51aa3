"""Conversations (the Hugging Face chat format, earlier turns and a system turn included) as prompts: the runtime
renders them as transformers does, `generate --messages` answers one, and `eval --prompts FILE.jsonl` reads them
beside plain strings."""

import json

import pytest
from test_bad_input import fails

from glass_onnx.cli import main
from glass_onnx.evaluation.prompts import file_prompts
from glass_onnx.runtime import Generator, GlassError, TextCodec, load_manifest

CONVERSATION = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "Name a river."},
                {"role": "assistant", "content": "The Nile."},
                {"role": "user", "content": "And a mountain?"}]


@pytest.fixture(scope="module")
def codec(tiny_dense):
    return TextCodec(tiny_dense, load_manifest(tiny_dense)["tokenizer"])


def test_a_conversation_renders_as_transformers_does(codec, tiny_dir, tiny_compiled):
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(tiny_dir).apply_chat_template(CONVERSATION, add_generation_prompt=True,
                                                                           tokenize=True, return_dict=False)
    assert codec.encode_messages(CONVERSATION) == list(expected)
    generator = Generator(tiny_compiled(method="a-glass", sparsity=0.5))
    ids = generator.encode(CONVERSATION)
    assert ids == list(expected) and 0 < generator.codec.template_prefix_length(ids) < len(ids)
    assert len(generator.generate(ids, max_new_tokens=4, ignore_eos=True).tokens) == 4


def test_a_system_turn_of_its_own_joins_the_template_opening(codec):
    """The statistic leaves out the system block and the user header (the default system prompt's, or the
    conversation's own), not the turns after them."""
    ids = codec.encode_messages(CONVERSATION)
    opening = codec.template_prefix_length(ids)
    assert codec.tokenizer.decode(ids[:opening], skip_special_tokens=False) == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n<|im_start|>user\n")
    plain = codec.encode_messages(CONVERSATION[1:])  # no system turn: the template's default opening
    assert codec.template_prefix_length(plain) == codec.template_prefix_length(codec.encode("Name a river.", True))


GEMMA_STYLE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}
{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}
{%- for m in turns -%}
{{ '<|im_start|>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' + (prefix if loop.first else '')
   + m['content'] + '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>model\n' }}{%- endif -%}"""


def test_a_template_that_folds_the_system_turn_into_the_first_user_turn(tiny_dense, tmp_path):
    """Gemma's templates have no system role: the system text opens the first user turn, and is left out there."""
    import shutil

    shutil.copy(tiny_dense / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "template.jinja").write_text(GEMMA_STYLE)
    codec = TextCodec(tmp_path, {"file": "tokenizer.json", "chat_template": "template.jinja"})
    ids = codec.encode_messages(CONVERSATION)
    opening = codec.template_prefix_length(ids)
    text = lambda part: codec.tokenizer.decode(part, skip_special_tokens=False)  # noqa: E731
    assert text(ids[:opening]) == "<|im_start|>user\nYou answer briefly.\n\n"
    assert text(ids[opening:]).startswith("Name a river.<|im_end|>")


def test_eval_batches_conversations_by_their_opening(tiny_dir, tmp_path):
    from glass_onnx.evaluation.evaluate import EvalOptions, run_eval

    systems = ["Be brief.", "You are a patient teacher of geography.", "Be brief."]
    lines = [json.dumps([{"role": "system", "content": s}, {"role": "user", "content": f"Name a river, {i}."}])
             for i, s in enumerate(systems)] + [json.dumps("Name a mountain.")]
    (tmp_path / "chat.jsonl").write_text("\n".join(lines))
    run_eval(str(tiny_dir), tmp_path / "eval", EvalOptions(methods=("a-glass",), sparsities=(0.5,), gen_len=4,
                                                          prior_samples=2, prompts_file=str(tmp_path / "chat.jsonl")))
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    texts = [p["text"] for p in result["prompts"]]
    assert sorted(texts) == sorted(json.loads(line) if line.startswith('"') else json.dumps(json.loads(line))
                                   for line in lines)
    assert texts.index(json.dumps(json.loads(lines[2]))) == 1  # grouped with the first, which has its opening
    assert result["results"][0]["prompts"] == 4 and len(result["results"][0]["prompt_kl"]) == 4


@pytest.mark.parametrize("conversation, expect", [
    ([], "non-empty list"),
    ([{"role": "user"}], "message 1"),
    (CONVERSATION[:3], "ends with the assistant's turn"),
])
def test_a_malformed_conversation_is_refused(codec, conversation, expect):
    with pytest.raises(GlassError, match=expect):
        codec.encode_messages(conversation)


def test_generate_answers_a_conversation_file(capsys, tiny_dense, tmp_path):
    (tmp_path / "chat.json").write_text(json.dumps({"messages": CONVERSATION}))
    assert main(["generate", str(tiny_dense), "--messages", str(tmp_path / "chat.json"), "--max-new-tokens", "3",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompt_tokens"] == len(TextCodec(tiny_dense, load_manifest(tiny_dense)["tokenizer"])
                                          .encode_messages(CONVERSATION))
    fails(capsys, "generate", tiny_dense, "hello", "--messages", tmp_path / "chat.json", expect="not both")
    fails(capsys, "generate", tiny_dense, "--messages", tmp_path / "missing.json", expect="could not read")


def test_a_jsonl_prompt_file_holds_strings_and_conversations(codec, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in ["Why is the sky blue?", {"messages": CONVERSATION},
                                                      CONVERSATION[1:]]) + "\n")
    prompts = file_prompts(codec, str(path), chat=True)
    assert [p.bucket for p in prompts] == ["file-chat"] * 3
    assert prompts[0].ids == tuple(codec.encode("Why is the sky blue?", chat=True))
    assert prompts[1].ids == tuple(codec.encode_messages(CONVERSATION)) and json.loads(prompts[1].text) == CONVERSATION
    assert prompts[2].ids == tuple(codec.encode_messages(CONVERSATION[1:]))
    (tmp_path / "prompts.txt").write_text('{"messages": "a .txt line is text, whatever it looks like"}\n')
    assert file_prompts(codec, str(tmp_path / "prompts.txt"), chat=False)[0].bucket == "file"
    with pytest.raises(GlassError, match="line 2 .* needs the chat template"):
        file_prompts(codec, str(path), chat=False)
    path.write_text('"fine"\n{"messages": [{"role": "assistant", "content": "x"}]}\n')
    with pytest.raises(GlassError, match="line 2 .*assistant's turn"):
        file_prompts(codec, str(path), chat=True)
    path.write_text('"fine"\nnot json\n')
    with pytest.raises(GlassError, match="line 2 .* is not JSON"):
        file_prompts(codec, str(path), chat=True)
