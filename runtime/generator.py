"""Text generation over a Decoder: prefill the prompt, then decode token by token with streaming and stops."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glass_onnx.runtime.decoder import open_decoder
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.sampling import Sampler, SamplingConfig
from glass_onnx.runtime.text import TextCodec

GREEDY = SamplingConfig()


@dataclasses.dataclass
class GenerationResult:
    prompt_ids: list[int]
    tokens: list[int]
    text: str
    prefill_ms: float  # prompt in, first token's logits out (includes GLASS selection)
    decode_s: float  # first token to last token
    stop_reason: str  # "eos", "stop_string" or "length"

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def decode_tokens_per_s(self) -> float:
        # tokens after the first, over the wall time from the first token to the last
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "prompt_ids": self.prompt_ids,
            "tokens": self.tokens,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "prefill_ms": round(self.prefill_ms, 3),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 3),
            "stop_reason": self.stop_reason,
        }


class Generator:
    """Generates text from an exported (dense) or compiled (GLASS) artifact directory."""

    def __init__(self, directory: str | Path, provider: str = "cpu", threads: int | None = None, layout: str = "auto"):
        self.decoder = open_decoder(directory, provider=provider, threads=threads, layout=layout)
        self.codec = TextCodec(self.decoder.directory, self.decoder.manifest["tokenizer"])
        self.manifest = self.decoder.manifest

    @property
    def warmup(self) -> int:
        """Generated tokens run densely before the kept neurons are chosen, by default (0: the paper's GLASS)."""
        return int((self.manifest.get("glass") or {}).get("warmup_tokens", 0))

    @property
    def max_context(self) -> int:
        return int(self.manifest["model"]["max_context"])

    def encode(self, prompt: str | list[dict], chat: bool | None = None) -> list[int]:
        """Token ids of a text prompt (through the chat template by default for an instruct model) or of a
        conversation, a list of {"role", "content"} messages (always through the template)."""
        if isinstance(prompt, list):
            return self.codec.encode_messages(prompt)
        if not prompt.strip():
            raise GlassError("the prompt is empty; pass some text to continue")
        if chat is None:
            chat = bool(self.manifest["tokenizer"].get("instruct")) and self.codec.chat_template is not None
        return self.codec.encode(prompt, chat=chat)

    def _text(self, tokens: list[int], stop_strings: tuple[str, ...]) -> tuple[str, str | None]:
        """The text of ``tokens``, cut before the first stop string, and that stop string (or None)."""
        text = self.codec.decode(tokens)
        hit = min(((text.index(s), s) for s in stop_strings if s in text), default=None)
        return (text[: hit[0]], hit[1]) if hit else (text, None)

    def generate(
        self,
        prompt_ids: list[int],
        max_new_tokens: int = 128,
        sampling: SamplingConfig = GREEDY,
        stop_strings: tuple[str, ...] = (),
        on_text: Callable[[str], None] | None = None,
        prefill_chunk: int | None = None,
        ignore_eos: bool = False,
        count_template: bool = False,
        warmup: int | None = None,
    ) -> GenerationResult:
        """Generate up to ``max_new_tokens`` after ``prompt_ids``. A GLASS artifact's prompt statistic leaves out
        the chat template's shared opening (system block, user header) unless ``count_template``, and reads the
        first ``warmup`` generated tokens too, run densely (None: the artifact's ``glass.warmup_tokens``)."""
        if not prompt_ids:
            raise GlassError("the prompt is empty; pass some text to continue")
        if max_new_tokens < 1:
            raise GlassError(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")
        if prefill_chunk is not None and prefill_chunk < 1:
            raise GlassError(f"--prefill-chunk must be at least 1 (got {prefill_chunk})")
        if len(prompt_ids) + max_new_tokens > self.max_context:
            raise GlassError(
                f"prompt ({len(prompt_ids)} tokens) + max-new-tokens ({max_new_tokens}) exceeds the model's context "
                f"of {self.max_context}; shorten the prompt or lower --max-new-tokens"
            )
        sampler = Sampler(sampling)
        eos = set() if ignore_eos else set(self.codec.eos_token_ids)
        decoder = self.decoder
        state = decoder.new_state(batch=1, capacity=len(prompt_ids) + max_new_tokens)
        ids = np.asarray([prompt_ids], dtype=np.int64)
        opening = self.codec.template_prefix_length(prompt_ids) if decoder.glass and not count_template else 0
        t0 = time.perf_counter()
        logits = decoder.prefill_prompt(state, ids, uncounted=opening, chunk=prefill_chunk,
                                        warmup=self.warmup if warmup is None else warmup)
        token = sampler(logits[0, -1])
        t_first = time.perf_counter()

        tokens, emitted, stop_reason = [token], "", "length"
        while True:
            if token in eos:
                tokens.pop()  # the EOS id is a stop marker, not text
                stop_reason = "eos"
                break
            if on_text or stop_strings:  # otherwise the loop never detokenizes: decode speed is measured here
                text, hit = self._text(tokens, stop_strings)
                # hold back an incomplete UTF-8 sequence and anything that may still become a stop string
                safe = text if hit else _stable_prefix(text, stop_strings)
                if on_text and len(safe) > len(emitted):
                    on_text(safe[len(emitted):])
                    emitted = safe
                if hit:
                    stop_reason = "stop_string"
                    break
            if len(tokens) >= max_new_tokens:
                break
            logits = decoder.decode(state, np.asarray([[token]], dtype=np.int64))
            token = sampler(logits[0, -1])
            tokens.append(token)
        t_last = time.perf_counter()

        text, _ = self._text(tokens, stop_strings)
        if on_text and len(text) > len(emitted):
            on_text(text[len(emitted):])
        return GenerationResult(
            prompt_ids=list(prompt_ids),
            tokens=tokens,
            text=text,
            prefill_ms=(t_first - t0) * 1e3,
            decode_s=t_last - t_first,
            stop_reason=stop_reason,
        )


def _stable_prefix(text: str, stop_strings: tuple[str, ...]) -> str:
    text = text.rstrip("\ufffd")
    for s in stop_strings:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                return text[: len(text) - n]
    return text
