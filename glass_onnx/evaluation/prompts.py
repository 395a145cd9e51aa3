"""Short evaluation prompts cut at sentence boundaries from the public-domain prose in ``glass_onnx/data``.

A prompt is a run of whole sentences from one paragraph whose token count (with the model's tokenizer) falls in a
bucket: 8, 16, 32 or 64 tokens, within +-25%. Paragraphs are assigned to the dev split (1 in 5, by hash) or the
test split, so no paragraph feeds both. Instruct models also get a "chat" bucket of instructions through their
chat template. The order within a bucket is a fixed hash order, so the first n prompts are always the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from importlib import resources

from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.text import conversation_messages

BUCKETS = (8, 16, 32, 64)
PROSE = ("botchan.txt", "alice_in_wonderland.txt", "britannica1911_shakespeare.txt")
CHAT = "chat_instructions.txt"
SENTENCE_END = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")


@dataclasses.dataclass(frozen=True)
class Prompt:
    bucket: str  # "8", "16", "32", "64" or "chat"
    text: str
    ids: tuple[int, ...]
    source: str


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _split_of(text: str) -> str:
    return "dev" if _hash(text) % 5 == 0 else "test"


def data_lines(name: str) -> list[str]:
    return [line for line in resources.files("glass_onnx").joinpath("data", name).read_text("utf-8").splitlines()
            if line.strip()]


def sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(paragraph) if s.strip()]


def prose_prompts(encode: Callable[[str], list[int]], split: str) -> dict[str, list[Prompt]]:
    found: dict[str, dict[str, dict[str, Prompt]]] = {sp: {str(b): {} for b in BUCKETS} for sp in ("dev", "test")}
    for name in PROSE:
        for paragraph in data_lines(name):
            bucket_of = found[_split_of(paragraph)]
            parts = sentences(paragraph)
            for start in range(len(parts)):
                text = ""
                for end in range(start, len(parts)):
                    text = f"{text} {parts[end]}".strip()
                    ids = encode(text)
                    for b in BUCKETS:
                        if 0.75 * b <= len(ids) <= 1.25 * b:
                            bucket_of[str(b)].setdefault(text, Prompt(str(b), text, tuple(ids), name))
                    if len(ids) > 1.25 * BUCKETS[-1]:
                        break
    other = found["test" if split == "dev" else "dev"]
    # a sentence that recurs in both splits' paragraphs ("Really?") is dropped from both
    return {b: sorted((p for t, p in prompts.items() if t not in other[b]), key=lambda p: _hash(p.text))
            for b, prompts in found[split].items()}


def chat_prompts(encode_chat: Callable[[str], list[int]], split: str) -> list[Prompt]:
    lines = [line for line in data_lines(CHAT) if _split_of(line) == split]
    return sorted((Prompt("chat", line, tuple(encode_chat(line)), CHAT) for line in lines), key=lambda p: _hash(p.text))


def load_prompts(codec, split: str, per_bucket: int, chat: bool) -> list[Prompt]:
    """The first ``per_bucket`` prompts of each bucket of the split (``codec`` is the runtime's TextCodec)."""
    buckets = prose_prompts(lambda t: codec.encode(t, chat=False), split)
    if chat:
        buckets["chat"] = chat_prompts(lambda t: codec.encode(t, chat=True), split)
    return [p for prompts in buckets.values() for p in prompts[:per_bucket]]


def file_prompts(codec, path: str, chat: bool) -> list[Prompt]:
    """One prompt per non-empty line of a user's file. A .txt line is text; a .jsonl line is a JSON string (text)
    or a conversation in the Hugging Face chat format ({"messages": [...]} or the bare list of messages, earlier
    turns and a system turn allowed). Text goes through the chat template when ``chat`` (bucket "file-chat") or
    not ("file"); a conversation always does."""
    import json
    from pathlib import Path

    lines = [(n, line.strip()) for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1)
             if line.strip()]
    prompts = []
    for n, line in lines:
        item = _json_line(line, n, path) if Path(path).suffix == ".jsonl" else line
        if isinstance(item, str):
            prompts.append(Prompt("file-chat" if chat else "file", item, tuple(codec.encode(item, chat=chat)),
                                  str(path)))
            continue
        messages = conversation_messages(item)
        if not chat:
            raise GlassError(f"line {n} of {path} is a conversation, which needs the chat template: use an "
                             "instruct model and leave out --no-chat")
        try:
            ids = codec.encode_messages(messages)
        except GlassError as e:
            raise GlassError(f"line {n} of {path}: {e}") from None
        prompts.append(Prompt("file-chat", json.dumps(messages, ensure_ascii=False), tuple(ids), str(path)))
    return prompts


def _json_line(line: str, n: int, path: str):
    import json

    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise GlassError(f"line {n} of {path} is not JSON ({e.msg}); write one JSON string or conversation "
                         "per line") from None
