"""The fast session layout of a compiled artifact: one decoder session serves prefill and decode.

Prefill runs every FFN on its constant weights, which ONNX Runtime prepacks once, as in the dense model, and
``select.onnx`` turns the FFN activations into the running neuron statistics and the kept neurons. Before the
first decode step ``compact.onnx`` gathers the kept neurons' weights, layer by layer, from the weights file into
panels (passes/ffn_inputs.py says why), and every decode step binds those. The process holds the FFN weights once,
prepacked, plus the compact copy: the full weights the gather reads are mapped from the file one layer at a time
and unmapped after it, so they stay in the operating system's page cache, not in this process.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

from glass_onnx.runtime.decoder import Decoder, SequenceState, create_session
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.protocol import layer_names, panel_width


class FastDecoder(Decoder):
    """Decoder over the artifact's ``fast`` layout; same calls and results as the reference layout."""

    def _open_sessions(self, threads: int | None) -> None:
        fast = self.manifest["fast"]
        io, n = fast["io"], self.model["num_layers"]
        if "compact" not in io:
            raise GlassError(f"'{self.directory}' has a fast layout from an older glass-onnx; compile it again")
        self.decoder_session = create_session(self.directory / fast["decoder"], self.provider, threads)
        # the small sessions run on one thread: a session's idle pool threads spin for a while after each run,
        # and on a small machine they took the cores from the decoder's next run (a 2-thread prefill ran 2x
        # slower, BENCHMARKS.md); the gathers are memory copies, which two threads made slower anyway
        self.select_session = create_session(self.directory / fast["select"], self.provider, 1)
        self.compact_session = create_session(self.directory / fast["compact"], self.provider, 1)
        self.prefill_session = self.decode_session = self.decoder_session
        self.ffn_inputs = [layer_names(io[part], n) for part in ("ffn_gate_up", "ffn_down")]
        self.ffn_z = layer_names(io["ffn_z"], n)
        self.token_mask = io["token_mask"]
        self.compact_io = io["compact"]
        self._check_fast_sessions()
        with open(self.directory / fast["weights"], "rb") as f:
            self._weights = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._full = [[(entry[p]["offset"], entry[p]["shape"]) for p in ("gate_up", "down")]
                      for entry in fast["ffn_weights"]]
        if any(offset + 4 * math.prod(shape) > len(self._weights) for layer in self._full for offset, shape in layer):
            raise GlassError(f"'{self.directory / fast['weights']}' is shorter than the manifest says; the artifact "
                             "is corrupted, compile it again")
        # prefill binds empty compact weights: every row goes to the FFNs' constant path
        hidden, h = self.model["hidden_size"], fast["hidden_panel_width"]
        empty = [self._value(np.zeros([1, 0, hidden, 1], np.float32)),
                 self._value(np.zeros([1, hidden // h, 0, h], np.float32))]
        self.prefill_ffn = self._by_name(self.ffn_inputs, [empty] * n)

    @staticmethod
    def _by_name(names_by_part: list[list[str]], values_by_layer: list[list]) -> dict:
        """{input name: value} from names [part][layer] and values [layer][part]."""
        return {name: value for names, values in zip(names_by_part, zip(*values_by_layer))
                for name, value in zip(names, values)}

    def _check_fast_sessions(self) -> None:
        """Refuse graphs that do not fit together (e.g. copied from two artifacts)."""
        c = self.compact_io
        needs = (
            (self.decoder_session.get_inputs, [n for names in self.ffn_inputs for n in names] + self.past_names,
             "decoder inputs"),
            (self.decoder_session.get_outputs, self.ffn_z + self.present_names, "decoder outputs"),
            (self.select_session.get_outputs, self.state_out + self.handoff_out, "select outputs"),
            (self.compact_session.get_inputs, [c["full_gate_up"], c["full_down"], c["kept"], c["panel_width"]],
             "compact inputs"),
            (self.compact_session.get_outputs, [c["gate_up"], c["down"]], "compact outputs"),
        )
        for listing, names, what in needs:
            if missing := sorted(set(names) - {v.name for v in listing()})[:3]:
                raise GlassError(f"the fast layout's {what} lack {missing}; "
                                 "the artifact's sessions are mismatched, compile again")

    def prefill(self, state: SequenceState, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                overrides: dict | None = None) -> np.ndarray:
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        logits, z = self._step(self.decoder_session, state, input_ids, mask, self.prefill_ffn, self.ffn_z)
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
        state.compact = None  # the kept sets may have changed
        return logits

    def _decode_inputs(self, state: SequenceState) -> dict:
        """The kept neurons' weights, gathered once per prompt in panels, layer by layer from the weights file."""
        c = self.compact_io
        width = self._value(np.array([panel_width(state.kept[0].shape()[-1])], np.int64))
        compact = []
        for full, kept in zip(self._full, state.kept):
            binding = self.compact_session.io_binding()
            for name, (offset, shape) in zip((c["full_gate_up"], c["full_down"]), full):
                view = np.frombuffer(self._weights, np.float32, math.prod(shape), offset).reshape(shape)
                binding.bind_ortvalue_input(name, self._value(view))
            binding.bind_ortvalue_input(c["kept"], kept)
            binding.bind_ortvalue_input(c["panel_width"], width)
            binding.bind_output(c["gate_up"], self.device)
            binding.bind_output(c["down"], self.device)
            self.compact_session.run_with_iobinding(binding)
            compact.append(binding.get_outputs())
            self._release(full)
        return self._by_name(self.ffn_inputs, compact)

    def _release(self, full: list[tuple[int, list[int]]]) -> None:
        """Unmap a layer's full weights from this process (they stay in the page cache for the next prompt)."""
        if hasattr(self._weights, "madvise"):
            for offset, shape in full:
                start = offset - offset % mmap.PAGESIZE
                self._weights.madvise(mmap.MADV_DONTNEED, start, offset + 4 * math.prod(shape) - start)
