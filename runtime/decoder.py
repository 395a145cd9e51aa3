"""ONNX Runtime sessions of an artifact and the per-sequence state they thread through each call.

The KV cache, the neuron statistics and the kept-neuron sets live in OrtValues bound through IOBinding, so on
the CUDA EP they never leave the device; only the logits come back to the host.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.manifest import load_manifest
from glass_onnx.runtime.protocol import layer_names

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def check_threads(threads: int | None) -> int | None:
    """``threads`` (None: all cores), or a one-line error for a count below one."""
    if threads is not None and threads < 1:
        raise GlassError(f"--threads must be at least 1 (got {threads})")
    return threads


def create_session(path: Path, provider: str = "cpu", threads: int | None = None,
                   initializers: dict[str, ort.OrtValue] | None = None, optimize: bool = True,
                   stop_spinning: bool = False) -> ort.InferenceSession:
    """An InferenceSession on the chosen EP, with a one-line error for a corrupted graph or a missing EP.
    ``initializers`` supplies external initializers from memory (the int4 fast layout's per-prompt weights);
    ``optimize=False`` skips ONNX Runtime's graph optimisations, for a graph already in its final form whose session
    is created often (they took ~60 of ~140 ms for SmolLM2's per-prompt int4 decoder, with no faster step);
    ``stop_spinning`` sends the session's pool threads to sleep as soon as a run ends, for sessions that take turns
    with another multi-threaded one every step (a still-spinning pool took a core from the next session's run)."""
    if provider not in PROVIDERS:
        raise GlassError(f"unknown provider '{provider}'; choose one of: {', '.join(PROVIDERS)}")
    check_threads(threads)
    if PROVIDERS[provider] not in ort.get_available_providers():
        raise GlassError(
            f"ONNX Runtime here has no {PROVIDERS[provider]}; install onnxruntime-gpu (instead of onnxruntime) "
            "for --provider cuda"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if initializers:
        options.add_external_initializers(list(initializers), list(initializers.values()))
    providers = [PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # ORT raises several types (Fail, InvalidGraph, InvalidProtobuf, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GlassError(f"could not load '{path}' ({first[:300]}); the artifact is corrupted, "
                         "export or compile it again") from None


def check_warmup(warmup: int) -> int:
    """``warmup`` if it is a count of generated tokens (0 or more), else a one-line error."""
    if warmup < 0:
        raise GlassError(f"--warmup must be 0 or more generated tokens (got {warmup})")
    return warmup


@dataclasses.dataclass
class DecodePlan:
    """What a sequence's decode steps run, built once per prompt: a session and its extra inputs (the kept neurons,
    or their compact FFN weights), and whatever those reference that must stay alive. ``successor``: a faster plan
    for the same prompt being built in the background; decode switches to it once it is ready."""

    session: ort.InferenceSession
    inputs: dict[str, ort.OrtValue]
    keep_alive: list = dataclasses.field(default_factory=list)
    successor: concurrent.futures.Future | None = None
    variant: str = ""  # which of its layout's forms the inputs take (fast_decoder.py: the panel width)


@dataclasses.dataclass
class SequenceState:
    """Everything one batch of sequences carries from call to call."""

    attention_mask: np.ndarray  # [batch, tokens so far], int64
    past: list[ort.OrtValue]  # key, value per layer, in manifest order
    neuron_stats: list[ort.OrtValue]  # GLASS prefill state (empty for dense artifacts)
    kept: list[ort.OrtValue]  # GLASS handoff from the last prefill call to decode
    plan: DecodePlan | None = None  # built by prepare_decode once per prompt
    capacity: int | None = None  # set when ``past`` are fixed-size buffers the graph appends to in place
    binding: tuple | None = None  # (session, extra inputs, IOBinding) of the last decode step, for reuse
    warmup_left: int = 0  # generated tokens still to run densely through prefill (Decoder.prefill_prompt)
    overrides: dict | None = None  # the prompt's prefill overrides, for those tokens
    pending: list = dataclasses.field(default_factory=list)  # warm-up activations a layout selects on at the end


def open_decoder(directory: str | Path, provider: str = "cpu", threads: int | None = None,
                 layout: str = "auto") -> Decoder:
    """The decoder for an artifact: the fast layout of a compiled artifact unless ``layout="reference"``."""
    if layout not in ("auto", "fast", "reference"):
        raise GlassError(f"unknown layout '{layout}'; choose auto, fast or reference")
    manifest = load_manifest(directory)
    if layout == "fast" and "fast" not in manifest:
        raise GlassError(f"'{directory}' has no fast layout (a dense export, or compiled by an older glass-onnx)")
    if layout != "reference" and "fast" in manifest:
        from glass_onnx.runtime.fast_decoder import CompactSessionDecoder, FastDecoder

        kind = CompactSessionDecoder if manifest["fast"]["kind"] == "compact_session" else FastDecoder
        return kind(directory, provider, threads, manifest)
    return Decoder(directory, provider, threads, manifest)


class Decoder:
    """Loads an artifact directory and runs its prefill and decode sessions over a SequenceState
    (the reference layout: prefill.onnx with the GLASS selection inside, decode.onnx with indexed FFNs)."""

    def __init__(self, directory: str | Path, provider: str = "cpu", threads: int | None = None,
                 manifest: dict | None = None):
        self.directory = Path(directory)
        self.manifest = manifest or load_manifest(self.directory)  # checking hashes the graphs: do it once
        self.provider, self.threads = provider, threads
        self.device = "cuda" if provider == "cuda" else "cpu"
        m = self.manifest
        self.model = m["model"]
        io = m["io"]
        n = self.model["num_layers"]
        self.past_names = [
            x for pair in zip(layer_names(io["past_key"], n), layer_names(io["past_value"], n)) for x in pair
        ]
        self.present_names = [
            x for pair in zip(layer_names(io["present_key"], n), layer_names(io["present_value"], n)) for x in pair
        ]
        self.io = io
        glass = m.get("glass")
        self.glass = glass
        self.state_in = layer_names(glass["state"]["input"], n) if glass else []
        self.state_out = layer_names(glass["state"]["output"], n) if glass else []
        self.handoff_out = layer_names(glass["handoff"]["output"], n) if glass else []
        self.handoff_in = layer_names(glass["handoff"]["input"], n) if glass else []

        # where a layout runs the LM head in a session of its own, the decoders output the hidden states instead
        self.head_session, self.decoder_output = None, io["logits"]
        self._open_sessions(threads)
        logits = next((o for o in (self.head_session or self.decode_session).get_outputs() if o.name == io["logits"]),
                      None)
        self.logits_dtype = np.float16 if logits is not None and logits.type == "tensor(float16)" else np.float32
        self.vocab = logits.shape[-1] if logits is not None and isinstance(logits.shape[-1], int) else \
            self.model["vocab_size"]
        self.output_width = self.model["hidden_size"] if self.head_session else self.vocab

    @property
    def steps_to_settle(self) -> int:
        """One-token decode steps this decoder still spends finding its fastest form on this host (a layout may time
        its candidates on the first steps, fast_decoder.py); timings taken before then include that search."""
        return 0

    def _open_sessions(self, threads: int | None) -> None:
        sessions = self.manifest["sessions"]
        self.prefill_session = create_session(self.directory / sessions["prefill"], self.provider, threads)
        if sessions["decode"] == sessions["prefill"]:
            self.decode_session = self.prefill_session  # one session, one copy of the weights
        else:
            self.decode_session = create_session(self.directory / sessions["decode"], self.provider, threads)
        self._check_sessions()

    def _check_sessions(self) -> None:
        """Refuse a prefill/decode pair that does not fit together (e.g. graphs copied from two artifacts)."""
        prefill_out = {o.name for o in self.prefill_session.get_outputs()}
        decode_in = {i.name for i in self.decode_session.get_inputs()}
        needed_out = set(self.present_names) | set(self.state_out) | set(self.handoff_out) | {self.io["logits"]}
        needed_in = set(self.past_names) | set(self.handoff_in) | {self.io["input_ids"]}
        if missing := sorted(needed_out - prefill_out)[:3]:
            raise GlassError(f"the prefill graph lacks outputs {missing} that the manifest names; "
                             "the artifact's sessions are mismatched, compile again")
        if missing := sorted(needed_in - decode_in)[:3]:
            raise GlassError(f"the decode graph lacks inputs {missing} that the manifest names; "
                             "the artifact's sessions are mismatched, compile again")

    # -- state -------------------------------------------------------------------------------------------
    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def new_state(self, batch: int = 1, capacity: int | None = None) -> SequenceState:
        """A fresh batch. With ``capacity`` (the most tokens it will hold) and a graph that allows it (manifest
        ``kv_buffers``: GroupQueryAttention), the KV cache is allocated once and extended in place, not copied into
        a new tensor every step."""
        kv_heads, head_dim = self.model["num_kv_heads"], self.model["head_dim"]
        stats = [self._value(np.zeros((batch, self.model["intermediate_size"]), np.float32)) for _ in self.state_in]
        if capacity and self.manifest.get("kv_buffers"):
            shape = [batch, kv_heads, capacity, head_dim]
            past = [ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device, 0)
                    for _ in self.past_names]
        else:
            capacity = None
            past = [self._value(np.zeros((batch, kv_heads, 0, head_dim), dtype=np.float32)) for _ in self.past_names]
        return SequenceState(attention_mask=np.zeros((batch, 0), np.int64), past=past, neuron_stats=stats, kept=[],
                             capacity=capacity)

    # -- calls -------------------------------------------------------------------------------------------
    def _step(self, session, state: SequenceState, input_ids: np.ndarray, new_mask: np.ndarray,
              inputs: dict | None = None, outputs: list[str] = ()) -> tuple[np.ndarray, list[ort.OrtValue]]:
        """One decoder call: binds ids, mask, positions and the past (plus ``inputs``); advances the state's mask
        and KV cache; returns the logits and the values of the extra ``outputs``."""
        if input_ids.shape[0] > 1 and input_ids.shape[1] > 1 and state.attention_mask.shape[1] and \
                self.manifest.get("attention") == "GroupQueryAttention":
            raise GlassError("this artifact's GroupQueryAttention takes multi-token steps after the prompt on batch 1 "
                             "only; step the batch one token at a time, or export with --attention onnx")
        mask = np.concatenate([state.attention_mask, new_mask.astype(np.int64)], axis=1)
        if mask.shape[1] > self.model["max_context"]:  # also the end of GroupQueryAttention's rotary tables
            raise GlassError(f"this sequence would reach {mask.shape[1]} tokens, past the model's context of "
                             f"{self.model['max_context']}; shorten the prompt or generate fewer tokens")
        if state.capacity and mask.shape[1] > state.capacity:
            raise GlassError(f"this sequence was given room for {state.capacity} tokens and would reach "
                             f"{mask.shape[1]}; create its state with a larger capacity")
        io = self.io
        # decode steps with fixed cache buffers and the same extra inputs reuse one binding: only ids, mask (and
        # positions) change, the presents stay bound to the buffers
        reused = state.capacity and state.binding is not None and state.binding[0] is session and \
            state.binding[1] is inputs
        binding = state.binding[2] if reused else session.io_binding()
        binding.bind_ortvalue_input(io["input_ids"], self._value(input_ids.astype(np.int64)))
        binding.bind_ortvalue_input(io["attention_mask"], self._value(mask))
        if io.get("position_ids"):  # left padding: positions count only real tokens
            positions = (np.cumsum(mask, axis=1) - 1).clip(min=0)[:, -input_ids.shape[1]:]
            binding.bind_ortvalue_input(io["position_ids"], self._value(positions.astype(np.int64)))
        if reused and not outputs:
            # a fresh logits buffer each step (callers keep the arrays), and no wrapping of 2 x layers presents
            out = ort.OrtValue.ortvalue_from_shape_and_type([*input_ids.shape, self.output_width],
                                                            self.logits_dtype, self.device, 0)
            binding.bind_ortvalue_output(self.decoder_output, out)
            session.run_with_iobinding(binding)
            state.attention_mask = mask
            return self._logits(out), []
        if not reused:
            for name, value in [*zip(self.past_names, state.past), *(inputs or {}).items()]:
                binding.bind_ortvalue_input(name, value)
            state.binding = (session, inputs, binding) if state.capacity and inputs is not None else None
        binding.clear_binding_outputs()
        binding.bind_output(self.decoder_output, self.device)
        for name, value in zip(self.present_names, state.past):
            if state.capacity:  # GroupQueryAttention appends to the buffer it reads: past and present are one
                binding.bind_ortvalue_output(name, value)
            else:
                binding.bind_output(name, self.device)
        for name in outputs:
            binding.bind_output(name, self.device)
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        n = len(self.present_names)
        state.attention_mask = mask
        if not state.capacity:
            state.past = list(values[1 : 1 + n])
        return self._logits(values[0]), list(values[1 + n :])

    def _logits(self, output: ort.OrtValue) -> np.ndarray:
        """The logits of a decoder call's output: itself, or the LM head session's logits of its hidden states."""
        if self.head_session is None:
            return output.numpy()
        binding = self.head_session.io_binding()
        binding.bind_ortvalue_input(self.decoder_output, output)
        logits = ort.OrtValue.ortvalue_from_shape_and_type([*output.shape()[:-1], self.vocab], self.logits_dtype,
                                                           self.device, 0)
        binding.bind_ortvalue_output(self.io["logits"], logits)
        self.head_session.run_with_iobinding(binding)
        return logits.numpy()

    def _overrides(self, overrides: dict | None) -> dict:
        overrides = dict(overrides or {})
        keep = self.glass["overridable"]["k"] if self.glass else None
        if keep in overrides and np.size(overrides[keep]) == 1:  # one k for every layer
            overrides[keep] = np.full(self.model["num_layers"], np.ravel(overrides[keep])[0], np.int64)
        return {name: self._value(value) for name, value in overrides.items()}

    def prefill(self, state: SequenceState, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                overrides: dict | None = None) -> np.ndarray:
        """Run prompt tokens [batch, n] densely (call again for the next chunk); returns logits [batch, n, vocab].

        ``overrides`` replaces GLASS defaults for this call (``glass.prior_rank``, ``glass.lam``, ``glass.k``: one k
        per layer, or one for every layer)."""
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        inputs = {**dict(zip(self.state_in, state.neuron_stats)), **self._overrides(overrides)}
        logits, values = self._step(self.prefill_session, state, input_ids, mask, inputs,
                                    self.state_out + self.handoff_out)
        if self.glass:
            state.neuron_stats, state.kept = values[: len(self.state_out)], values[len(self.state_out) :]
        state.plan = None  # the kept sets may have changed
        return logits

    def prefill_prompt(self, state: SequenceState, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                       overrides: dict | None = None, uncounted: int = 0, chunk: int | None = None,
                       warmup: int = 0) -> np.ndarray:
        """Prefill a whole prompt [batch, n] in chunks of ``chunk`` tokens; its first ``uncounted`` tokens (the same in
        every row: the chat template's shared opening, which tells nothing of this prompt; EVAL.md) are prefilled,
        then the GLASS statistic restarts, so the rest alone chooses the kept neurons. The first ``warmup`` tokens
        given to ``decode`` then run densely too and join the statistic: an instruction says little of the neurons
        its answer will use, the answer's opening says more (EVAL.md, "dense warm-up"). Returns the last chunk's
        logits."""
        check_warmup(warmup)
        if input_ids.shape[1] == 0:
            raise GlassError("the prompt is empty; give at least one token")
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        logits = self._prefill_chunks(state, input_ids, mask, overrides, uncounted, chunk or input_ids.shape[1])
        state.warmup_left, state.overrides = (warmup, overrides) if self.glass else (0, None)
        return logits

    def _prefill_chunks(self, state: SequenceState, input_ids: np.ndarray, mask: np.ndarray, overrides: dict | None,
                        uncounted: int, step: int) -> np.ndarray:
        """prefill_prompt's chunks. prefill.onnx counts every token its attention mask admits, so the uncounted
        tokens get chunks of their own, after which the statistic restarts."""
        for begin, end in ((0, uncounted), (uncounted, input_ids.shape[1])):
            for start in range(begin, end, step):
                stop = min(start + step, end)
                logits = self.prefill(state, input_ids[:, start:stop], mask[:, start:stop], overrides)
            if end == uncounted and uncounted:
                self._restart_statistic(state)
        return logits

    def _warmup(self, state: SequenceState, input_ids: np.ndarray, last: bool) -> np.ndarray:
        """Warm-up tokens, the ``last`` of them included: prefill chunks (decode needs the kept neurons after the last
        only, which a layout may use)."""
        return self.prefill(state, input_ids, None, state.overrides)

    def _restart_statistic(self, state: SequenceState) -> None:
        batch = state.attention_mask.shape[0]
        state.neuron_stats = [self._value(np.zeros((batch, self.model["intermediate_size"]), np.float32))
                              for _ in self.state_in]

    def _require_prefill(self, state: SequenceState) -> None:
        if self.glass and not state.kept:
            raise GlassError("decode before prefill: run the prompt through prefill first")

    def prepare_decode(self, state: SequenceState) -> None:
        """Everything decode needs once per prompt (the first decode call does it if not done before)."""
        self._require_prefill(state)
        if state.plan is None:
            state.plan = self._decode_plan(state)

    def _decode_plan(self, state: SequenceState) -> DecodePlan:
        """The decode session, and the kept neurons handed over from prefill as its extra inputs."""
        return DecodePlan(self.decode_session, dict(zip(self.handoff_in, state.kept)))

    def decode(self, state: SequenceState, input_ids: np.ndarray) -> np.ndarray:
        """Run generated tokens [batch, n] (n = 1 while generating, more when teacher forcing) through decode; the
        prompt's warm-up tokens (prefill_prompt) through prefill."""
        if state.warmup_left:
            n = min(state.warmup_left, input_ids.shape[1])
            state.warmup_left -= n
            logits = self._warmup(state, input_ids[:, :n], last=not state.warmup_left)
            if n < input_ids.shape[1]:
                logits = np.concatenate([logits, self.decode(state, input_ids[:, n:])], 1)
            return logits
        self.prepare_decode(state)
        plan = state.plan
        if plan.successor is not None and plan.successor.done():
            state.plan = plan = plan.successor.result()
        logits, _ = self._step(plan.session, state, input_ids, np.ones_like(input_ids), plan.inputs)
        return logits

    def kept_neurons(self, state: SequenceState) -> list[np.ndarray]:
        """The kept-neuron indices per layer, [batch, k] each (empty for dense artifacts)."""
        return [v.numpy() for v in state.kept]
