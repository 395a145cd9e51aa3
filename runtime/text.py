"""Text in and out: the saved ``tokenizer.json`` through the ``tokenizers`` package, and the chat template."""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path

from glass_onnx.runtime.errors import GlassError

OPENINGS_KEPT = 1024


class TextCodec:
    """Encodes prompts (optionally through the chat template) and decodes generated ids."""

    def __init__(self, directory: Path, info: dict):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(directory / info["file"]))
        self.info = info
        template = info.get("chat_template")
        self.chat_template = (directory / template).read_text() if template else None
        # the openings of the latest conversations encoded with a system turn of their own, by their ids
        self._system_openings: dict[tuple[int, ...], int] = {}

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.info.get("eos_token_ids") or [])

    def encode(self, text: str, chat: bool = False) -> list[int]:
        if chat:
            return self.encode_messages([{"role": "user", "content": text}])
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def encode_messages(self, messages: list[dict]) -> list[int]:
        """A conversation in the Hugging Face chat format (``[{"role": "user", "content": "..."}, ...]``, a system
        turn and earlier turns allowed) through the chat template, opened for the assistant's next turn."""
        if self.chat_template is None:
            raise GlassError("this model has no chat template; give it plain text, without --chat or a conversation")
        check_conversation(messages)
        # the template already wrote the special tokens the model expects
        ids = self.tokenizer.encode(self.render_chat(messages), add_special_tokens=False).ids
        system = list(itertools.takewhile(lambda m: m["role"] == "system", messages))
        if system:
            opening = self._opening(ids, self._empty_turn_after(system))
            self._system_openings[tuple(ids)] = opening
            while len(self._system_openings) > OPENINGS_KEPT:
                self._system_openings.pop(next(iter(self._system_openings)))
        return ids

    def template_prefix_length(self, ids: list[int]) -> int:
        """How many leading ``ids`` are the chat template's own opening (system block, user header), shared by every
        chat prompt: the common prefix with the template's rendering of an empty user turn (after the conversation's
        own system turns, for the latest conversations ``encode_messages`` encoded with one); 0 without a template.
        GLASS's prompt statistic leaves them out (Generator.generate)."""
        if self.chat_template is None:
            return 0
        opening = self._system_openings.get(tuple(ids))
        if opening is not None:
            return opening
        if not hasattr(self, "_empty_turn"):
            self._empty_turn = self._empty_turn_after([])
        return self._opening(ids, self._empty_turn)

    def _empty_turn_after(self, system: list[dict]) -> list[int]:
        text = self.render_chat([*system, {"role": "user", "content": ""}])
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    @staticmethod
    def _opening(ids: list[int], empty_turn: list[int]) -> int:
        n = 0
        for a, b in zip(ids, empty_turn):
            if a != b:
                break
            n += 1
        # a whole empty turn is no prefix of a prompt, and an opening needs a rest to count
        return n if n < len(empty_turn) and n < len(ids) else 0

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise GlassError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        try:
            return env.from_string(self.chat_template).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.info.get("bos_token") or "",
                eos_token=self.info.get("eos_token") or "",
            )
        except jinja2.TemplateError as e:
            raise GlassError(f"the saved chat template failed to render ({e}); run without --chat") from None


def conversation_messages(data):
    """The messages of a conversation as users write it down: the bare list, or {"messages": [...]}."""
    return data.get("messages") if isinstance(data, dict) else data


def check_conversation(messages) -> None:
    """A conversation is a non-empty list of {"role", "content"} turns whose last turn is not the assistant's."""
    if not isinstance(messages, list) or not messages:
        raise GlassError("a conversation is a non-empty list of messages; pass [{\"role\": \"user\", "
                         "\"content\": \"...\"}]")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise GlassError(f"message {i + 1} of the conversation is not {{\"role\": str, \"content\": str}}; "
                             "give each turn a role and a text content")
    if messages[-1]["role"] == "assistant":
        raise GlassError("the conversation ends with the assistant's turn; end it with the user's turn, which the "
                         "model then answers")
