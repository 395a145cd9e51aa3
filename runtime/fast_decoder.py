"""The fast session layouts of a compiled artifact.

Both run the prompt through ``decoder.onnx``, whose FFNs run on their constant weights (prepacked once by ONNX
Runtime, as in the dense model) and output their activations, and ``select.onnx`` turns those into the running
neuron statistics and the kept neurons. They differ in how decode reads only the kept neurons' weights:

- ``panels`` (fp32): the same decoder session has a second, compact FFN path on weight inputs. Before the first
  decode step ``compact.onnx`` gathers the kept neurons' weights, layer by layer, from the weights file into panels
  (passes/ffn_inputs.py says why), and every decode step binds those. Which panel widths they take is timed on
  the first decode steps on each host (panel_trial.py).
- ``compact_session`` (int4): MatMulNBits is fast only on weights it prepacked, which ONNX Runtime does for constant
  initializers when it creates a session. So after the prompt the runtime slices the kept blocks of each layer's
  4-bit FFN weights from the weights file and creates a decode session (``decode_compact.onnx``) with those slices as
  its constant initializers (passes/compact_int4.py). Where a core is free (fewer intra-op threads than cores), it
  builds that session on a background thread while the first tokens decode on the prompt's session with each FFN
  masked to the kept neurons: the same sparse model, read at dense cost until the compact session is ready. Both
  decoders end at the final hidden states; one head session (``head.onnx``) makes the logits, so the LM head is
  prepacked once, not per prompt.

The full weights a gather reads are mapped from the file and unmapped after it, so they stay in the operating
system's page cache, not in this process.
"""

from __future__ import annotations

import concurrent.futures
import math
import mmap
import os
import time

import numpy as np

from glass_onnx.runtime.decoder import DecodePlan, Decoder, SequenceState, create_session
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.panel_trial import PanelWidthTrial
from glass_onnx.runtime.protocol import layer_names


class PromptSessions(Decoder):
    """The fast layouts' prompt path (module docstring); subclasses build decode's plan."""

    prefill_ffn: dict  # extra inputs of every prefill call
    takes_turns = False  # whether the decoder session takes turns with another multi-threaded session every step

    def _open_prompt_sessions(self, threads: int | None) -> dict:
        fast = self.manifest["fast"]
        n = self.model["num_layers"]
        self.decoder_session = create_session(self.directory / fast["decoder"], self.provider, threads,
                                              stop_spinning=self.takes_turns)
        # the small sessions run on one thread: a session's idle pool threads spin for a while after each run,
        # and on a small machine they took the cores from the decoder's next run (a 2-thread prefill ran 2x
        # slower, BENCHMARKS.md); the gathers are memory copies, which two threads made slower anyway
        self.select_session = create_session(self.directory / fast["select"], self.provider, 1)
        self.prefill_session = self.decode_session = self.decoder_session
        self.ffn_z = layer_names(fast["io"]["ffn_z"], n)
        self.token_mask = fast["io"]["token_mask"]
        with open(self.directory / fast["weights"], "rb") as f:
            self._weights = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for layer in fast["ffn_weights"]:
            for tensor in layer.values():
                if tensor["offset"] + np.dtype(tensor["dtype"]).itemsize * math.prod(tensor["shape"]) > \
                        len(self._weights):
                    raise GlassError(f"'{self.directory / fast['weights']}' is shorter than the manifest says; the "
                                     "artifact is corrupted, compile it again")
        return fast

    def _check(self, needs) -> None:
        """Refuse graphs that do not fit together (e.g. copied from two artifacts): ``needs`` lists (names of a
        session's inputs or outputs, the names it must have, what they are)."""
        needs = [(self.decoder_session.get_inputs, self.past_names, "decoder inputs"),
                 (self.decoder_session.get_outputs, self.ffn_z + self.present_names, "decoder outputs"),
                 (self.select_session.get_outputs, self.state_out + self.handoff_out, "select outputs"), *needs]
        for listing, names, what in needs:
            if missing := sorted(set(names) - {v.name for v in listing()})[:3]:
                raise GlassError(f"the fast layout's {what} lack {missing}; "
                                 "the artifact's sessions are mismatched, compile again")

    def _view(self, tensor: dict) -> np.ndarray:
        """A tensor of the weights file, in place (mapped, not read)."""
        dtype = np.dtype(tensor["dtype"])
        return np.frombuffer(self._weights, dtype, math.prod(tensor["shape"]), tensor["offset"]).reshape(
            tensor["shape"])

    def _release(self, tensors: list[dict]) -> None:
        """Unmap tensors of the weights file from this process (they stay in the page cache for the next prompt)."""
        if hasattr(self._weights, "madvise"):
            for t in tensors:
                start = t["offset"] - t["offset"] % mmap.PAGESIZE
                end = t["offset"] + np.dtype(t["dtype"]).itemsize * math.prod(t["shape"])
                self._weights.madvise(mmap.MADV_DONTNEED, start, end - start)

    def prefill(self, state: SequenceState, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                overrides: dict | None = None) -> np.ndarray:
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        return self._prefill_chunks(state, input_ids, mask, overrides, 0, input_ids.shape[1])

    def _prefill_chunks(self, state: SequenceState, input_ids: np.ndarray, mask: np.ndarray, overrides: dict | None,
                        uncounted: int, step: int) -> np.ndarray:
        """Chunks from the first token on: select's token mask, not a chunk boundary, leaves the uncounted tokens out
        of the statistic (the same sums), so a chat prompt takes one decoder and one select call, not two of each
        (SmolLM2's chat prompts: prefill and selection 14-30% faster, BENCHMARKS.md)."""
        if uncounted:
            self._restart_statistic(state)  # as after the reference's opening chunks: nothing before counts
        counted = mask.copy()
        counted[:, :uncounted] = 0
        for start in range(0, input_ids.shape[1], step):
            chunk = slice(start, start + step)
            logits, z = self._prompt_step(state, input_ids[:, chunk], mask[:, chunk])
            self._select(state, z, counted[:, chunk], overrides)
        return logits

    def _prompt_step(self, state: SequenceState, input_ids: np.ndarray, mask: np.ndarray) -> tuple:
        """The decoder on prompt tokens, every FFN on its constant weights: (logits, each layer's FFN activations)."""
        return self._step(self.decoder_session, state, input_ids, mask, self.prefill_ffn, self.ffn_z)

    def _warmup(self, state: SequenceState, input_ids: np.ndarray, last: bool) -> np.ndarray:
        """The decoder step alone; select runs once, after the last warm-up token, over all their activations as
        one chunk (the same statistic: chunks add up), not once per token (~8 ms each on SmolLM2, 1 thread)."""
        logits, z = self._prompt_step(state, input_ids, np.ones_like(input_ids))
        state.pending.append(z)
        if last:
            chunks, state.pending = state.pending, []
            z = [self._value(np.concatenate([c[layer].numpy() for c in chunks], axis=1)) for layer in range(len(z))]
            self._select(state, z, np.ones((input_ids.shape[0], z[0].shape()[1]), np.int64), state.overrides)
        return logits

    def _select(self, state: SequenceState, z: list, mask: np.ndarray, overrides: dict | None) -> None:
        """The select session on a chunk's FFN activations: the carried statistic and the kept neurons."""
        binding = self.select_session.io_binding()
        for name, value in [*zip(self.ffn_z, z), *zip(self.state_in, state.neuron_stats),
                            *self._overrides(overrides).items()]:
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_input(self.token_mask, self._value(mask.astype(np.int64)))
        for name in self.state_out + self.handoff_out:
            binding.bind_output(name, self.device)
        self.select_session.run_with_iobinding(binding)
        values = binding.get_outputs()
        state.neuron_stats, state.kept = values[: len(self.state_out)], values[len(self.state_out) :]
        state.plan = None  # the kept sets may have changed


class FastDecoder(PromptSessions):
    """The ``panels`` fast layout (fp32); same calls and results as the reference layout."""

    def _open_sessions(self, threads: int | None) -> None:
        fast = self._open_prompt_sessions(threads)
        n = self.model["num_layers"]
        io = fast["io"]
        self.compact_session = create_session(self.directory / fast["compact"], self.provider, 1)
        self.ffn_inputs = [layer_names(io[part], n) for part in ("ffn_gate_up", "ffn_down")]
        self.compact_io = c = io["compact"]
        self._check([
            (self.decoder_session.get_inputs, [n for names in self.ffn_inputs for n in names], "decoder inputs"),
            (self.compact_session.get_inputs, [c["full_gate_up"], c["full_down"], c["kept"], c["panel_width"]],
             "compact inputs"),
            (self.compact_session.get_outputs, [c["gate_up"], c["down"]], "compact outputs"),
        ])
        self._full = [[entry[p] for p in ("gate_up", "down")] for entry in fast["ffn_weights"]]
        # prefill binds empty compact weights: every row goes to the FFNs' constant path
        hidden, h = self.model["hidden_size"], fast["hidden_panel_width"]
        empty = [self._value(np.zeros([1, 0, hidden, 1], np.float32)),
                 self._value(np.zeros([1, hidden // h, 0, h], np.float32))]
        self.prefill_ffn = self._by_name(self.ffn_inputs, [empty] * n)
        self.panels = PanelWidthTrial()
        # artifacts compiled before h became an input keep their compiled h
        self.hidden_width_input = next((i.name for i in self.compact_session.get_overridable_initializers()
                                        if i.name == c.get("hidden_panel_width")), None)

    @staticmethod
    def _by_name(names_by_part: list[list[str]], values_by_layer: list[list]) -> dict:
        """{input name: value} from names [part][layer] and values [layer][part]."""
        return {name: value for names, values in zip(names_by_part, zip(*values_by_layer))
                for name, value in zip(names, values)}

    def _decode_plan(self, state: SequenceState) -> DecodePlan:
        """The decoder session on the kept neurons' weights, gathered once per prompt in panels, layer by layer from
        the weights file."""
        c = self.compact_io
        if len({k.shape()[-1] for k in state.kept}) > 1 and len(set(self.glass["k_per_layer"])) == 1:
            raise GlassError("this artifact's fast layout was compiled for one k in every layer; open it with "
                             "layout='reference' to override k per layer, or compile with those --budget counts")
        widths = {}  # the panel width of each size: each layer's k (k may differ by layer), the hidden size
        compact = []
        for full, kept in zip(self._full, state.kept):
            binding = self.compact_session.io_binding()
            for name, tensor in zip((c["full_gate_up"], c["full_down"]), full):
                binding.bind_ortvalue_input(name, self._value(self._view(tensor)))
            binding.bind_ortvalue_input(c["kept"], kept)
            for name, size in ((c["panel_width"], kept.shape()[-1]),
                               (self.hidden_width_input, self.model["hidden_size"])):
                if name:
                    if size not in widths:
                        widths[size] = self._value(np.array([self.panels.width(size)], np.int64))
                    binding.bind_ortvalue_input(name, widths[size])
            binding.bind_output(c["gate_up"], self.device)
            binding.bind_output(c["down"], self.device)
            self.compact_session.run_with_iobinding(binding)
            compact.append(binding.get_outputs())
            self._release(full)
        return DecodePlan(self.decoder_session, self._by_name(self.ffn_inputs, compact), variant=self.panels.current)

    def decode(self, state: SequenceState, input_ids: np.ndarray) -> np.ndarray:
        """As the reference layout's; while the panel width trial runs (panel_trial.py), one-token steps are timed
        and the compact weights gathered again when it moves to another width."""
        trial = self.panels
        if trial.choice or state.warmup_left or input_ids.shape[1] != 1:
            return super().decode(state, input_ids)
        self.prepare_decode(state)
        if state.plan.variant != trial.current:  # gathered before the trial moved on
            self._gather_again(state)
        start = time.perf_counter()
        logits = super().decode(state, input_ids)
        if trial.record(time.perf_counter() - start):
            self._gather_again(state)
        return logits

    @property
    def steps_to_settle(self) -> int:
        return self.panels.steps_left

    def _gather_again(self, state: SequenceState) -> None:
        state.plan = state.binding = None  # the old compact weights go before the new ones come
        self.prepare_decode(state)


class CompactSessionDecoder(PromptSessions):
    """The ``compact_session`` fast layout (int4), one sequence at a time; same calls as the reference layout, whose
    decode multiplies the same 4-bit weights in float (MatMulNBits here: int8 activations), so results agree to
    int4 rounding. Every step runs a decoder session, then the head session: each sends its pool threads to sleep
    when its run ends, or they spin on and take a core from the other's run (2 threads, SmolLM2 50%: 106 instead of
    227 tok/s; BENCHMARKS.md)."""

    takes_turns = True

    def _open_sessions(self, threads: int | None) -> None:
        fast = self._open_prompt_sessions(threads)
        n = self.model["num_layers"]
        self.template = self.directory / fast["compact_decoder"]
        # the LM head once, not in every prompt's session (passes/lm_head.py)
        self.head_session = create_session(self.directory / fast["head"], self.provider, threads, stop_spinning=True)
        self.decoder_output = fast["io"]["hidden"]
        self.compact_names = {part: layer_names(name, n) for part, name in fast["io"]["compact"].items()}
        self.ffn_mask = layer_names(fast["io"]["ffn_mask"], n)
        self._full = fast["ffn_weights"]
        ones = self._value(np.ones((1, self.model["intermediate_size"]), np.float32))
        self.prefill_ffn = dict.fromkeys(self.ffn_mask, ones)
        self._check([(self.decoder_session.get_inputs, self.ffn_mask, "decoder inputs"),
                     (self.decoder_session.get_outputs, [self.decoder_output], "decoder outputs"),
                     (self.head_session.get_inputs, [self.decoder_output], "head inputs")])
        cores = os.cpu_count() or 1
        self.build_in_background = (threads or cores) < cores  # a free core builds the decode session
        self._builder = concurrent.futures.ThreadPoolExecutor(1, "glass-decode-session")

    def _decode_plan(self, state: SequenceState) -> DecodePlan:
        """The compact decode session for the prompt; built in the background (module docstring), the prompt's
        session with each FFN masked to the kept neurons decodes meanwhile."""
        if state.kept[0].shape()[0] != 1:
            raise GlassError("the int4 fast layout decodes one sequence at a time; open the artifact with "
                             "layout='reference' to decode a batch")
        kept = [k.numpy()[0] for k in state.kept]
        if [len(k) for k in kept] != self.glass["k_per_layer"]:
            raise GlassError(f"the int4 fast layout's decode session holds {self.glass['k_per_layer']} neurons per "
                             "layer; open the artifact with layout='reference' to override k")
        if not self.build_in_background:
            return self._compact_plan(kept)
        masks = []
        for neurons in kept:
            mask = np.zeros((1, self.model["intermediate_size"]), np.float32)
            mask[0, neurons] = 1.0
            masks.append(self._value(mask))
        return DecodePlan(self.decoder_session, dict(zip(self.ffn_mask, masks)),
                          successor=self._builder.submit(self._compact_plan, kept))

    def _compact_plan(self, kept: list[np.ndarray]) -> DecodePlan:
        """A decode session whose FFNs hold only the kept blocks, sliced from each layer's 4-bit weights (gate and up:
        the kept neurons' rows, stacked; down: the kept blocks along its neuron axis), as constant initializers."""
        arrays, block = {}, self.manifest["quantization"]["block_size"]
        for layer, (full, neurons) in enumerate(zip(self._full, kept)):  # neurons: whole kept blocks, ascending
            quant_blocks = neurons[::block] // block  # the down projection's 4-bit blocks along its neuron axis
            for what in ("q", "scales"):
                arrays[self.compact_names[f"gate_up_{what}"][layer]] = np.concatenate(
                    [self._view(full[f"{part}_{what}"])[neurons] for part in ("gate", "up")])
                arrays[self.compact_names[f"down_{what}"][layer]] = \
                    np.ascontiguousarray(self._view(full[f"down_{what}"])[:, quant_blocks])
            self._release(list(full.values()))
        values = {name: self._value(array) for name, array in arrays.items()}
        session = create_session(self.template, self.provider, self.threads, initializers=values, optimize=False,
                                 stop_spinning=True)
        return DecodePlan(session, {}, keep_alive=[values, arrays])
